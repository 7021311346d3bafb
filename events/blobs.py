"""Content-addressed blobs (whole command outputs) beside the events.

A blob is stored once per sha256, in fixed-size chunks, so neither writing nor
reading it needs the whole content in memory. Events carry only the digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from events.store import store_error

CHUNK = 1 << 20
INLINE_LIMIT = 4096
"""An output of at most this many bytes is whole in its event (its head); a longer
one is stored here, and its event carries only a bounded head and tail."""


def digest_file(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class BlobStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def has(self, sha256: str) -> bool:
        return self.conn.execute("SELECT 1 FROM blobs WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def put_file(self, path: Path, sha256: str | None = None) -> tuple[str, int]:
        """Store a file's bytes (if not already there); return (sha256, size)."""
        if sha256 is None:
            sha256, size = digest_file(path)
        else:
            size = path.stat().st_size
        if self.has(sha256):
            return sha256, size
        with path.open("rb") as f:
            self._insert(sha256, size, f)
        return sha256, size

    def put_stream(self, stream: IO[bytes], sha256: str, size: int) -> None:
        """Store the bytes ``stream`` reads from here on, whose sha256 and size the
        caller already knows (computed as they were written), unless present."""
        if not self.has(sha256):
            self._insert(sha256, size, stream)

    def _insert(self, sha256: str, size: int, stream: IO[bytes]) -> None:
        try:
            self._insert_chunks(sha256, size, stream)
        except sqlite3.OperationalError as exc:
            # A full disk, a lock held too long: the same clear errors as an event append.
            raise store_error(exc, self._path()) from exc

    def _path(self) -> Path:
        rows = self.conn.execute("PRAGMA database_list").fetchall()
        return Path(next((r[2] for r in rows if r[1] == "main"), "") or "(in memory)")

    def _insert_chunks(self, sha256: str, size: int, stream: IO[bytes]) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have stored the same content meanwhile.
            if not self.has(sha256):
                conn.execute("INSERT INTO blobs (sha256, size, chunks) VALUES (?, ?, 0)", (sha256, size))
                idx = 0
                while chunk := stream.read(CHUNK):
                    conn.execute(
                        "INSERT INTO blob_chunks (sha256, idx, data) VALUES (?, ?, ?)",
                        (sha256, idx, chunk),
                    )
                    idx += 1
                conn.execute("UPDATE blobs SET chunks = ? WHERE sha256 = ?", (idx, sha256))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLITE_FULL rolls back by itself
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def read(self, sha256: str) -> Iterator[bytes]:
        """The blob's bytes, chunk by chunk. Raises KeyError if absent."""
        if not self.has(sha256):
            raise KeyError(sha256)
        cursor = self.conn.execute("SELECT data FROM blob_chunks WHERE sha256 = ? ORDER BY idx", (sha256,))
        for (data,) in cursor:
            yield bytes(data)

    def verify(self, sha256: str, size: int | None = None) -> str | None:
        """Re-hash a stored blob: None if its chunks still hash to ``sha256`` (and add
        up to its recorded size, and ``size`` if given), else what is wrong."""
        row = self.conn.execute("SELECT size, chunks FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            return "is missing from the database (deleted)"
        h = hashlib.sha256()
        total = count = 0
        cursor = self.conn.execute("SELECT data FROM blob_chunks WHERE sha256 = ? ORDER BY idx", (sha256,))
        for (data,) in cursor:
            # A row rewritten by hand may hold TEXT (or anything) instead of a BLOB.
            raw = bytes(data) if isinstance(data, bytes | memoryview) else str(data).encode()
            h.update(raw)
            total += len(raw)
            count += 1
        if h.hexdigest() != sha256:
            return "does not match its sha256 (rewritten)"
        if (total, count) != (row[0], row[1]) or (size is not None and total != size):
            return f"holds {total} bytes in {count} chunks, its records say otherwise (rewritten)"
        return None

    def size(self, sha256: str) -> int | None:
        row = self.conn.execute("SELECT size FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        return int(row[0]) if row else None

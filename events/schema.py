"""The SQLite schema of the event log and its migrations.

``PRAGMA user_version`` holds the schema version. Migrations run in order, each in
one transaction. sqlite-utils builds the tables (it is imported only when a migration
is due, because it costs ~140 ms of start-up that read commands should not pay).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 2


def _v1(conn: sqlite3.Connection) -> None:
    import sqlite_utils  # noqa: PLC0415 - lazy: see module docstring

    db = sqlite_utils.Database(conn)
    db["events"].create(  # type: ignore[union-attr]
        {
            "position": int,  # global order: lets projections resume from a position
            "build_id": str,
            "seq": int,
            "type": str,
            "at": str,
            "payload": str,
            "prev_hash": str,
            "hash": str,
        },
        pk="position",
        not_null={"build_id", "seq", "type", "at", "payload", "prev_hash", "hash"},
    )
    # Optimistic concurrency is this constraint, not a Python lock.
    db["events"].create_index(["build_id", "seq"], unique=True)  # type: ignore[union-attr]
    db["events"].create_index(["type"])  # type: ignore[union-attr]
    db["heads"].create(  # type: ignore[union-attr]
        {"build_id": str, "seq": int, "hash": str},
        pk="build_id",
        not_null={"seq", "hash"},
    )
    # One statement per execute(): executescript() would COMMIT our migration
    # transaction halfway.
    for statement in _V1_TRIGGERS:
        conn.execute(statement)


_V1_TRIGGERS = (
    """
        -- The head of each chain, kept by the database itself: deleting the last
        -- event leaves the chain valid but the head pointing past it.
        CREATE TRIGGER events_track_head AFTER INSERT ON events BEGIN
            INSERT INTO heads (build_id, seq, hash) VALUES (NEW.build_id, NEW.seq, NEW.hash)
            ON CONFLICT (build_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash;
        END
    """,
    """
        -- Append-only by construction. Someone who drops these triggers to edit rows
        -- is caught by `gmi-fsm verify` (the hash chain).
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN
            SELECT RAISE(ABORT, 'events are append-only: rows cannot be updated');
        END
    """,
    """
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN
            SELECT RAISE(ABORT, 'events are append-only: rows cannot be deleted');
        END
    """,
)


def _v2(conn: sqlite3.Connection) -> None:
    import sqlite_utils  # noqa: PLC0415 - lazy: see module docstring

    db = sqlite_utils.Database(conn)
    # Command output is stored once per content (sha256), in chunks, so a 200 MB
    # output never has to be held in memory, going in or coming out.
    db["blobs"].create(  # type: ignore[union-attr]
        {"sha256": str, "size": int, "chunks": int}, pk="sha256", not_null={"size", "chunks"}
    )
    db["blob_chunks"].create(  # type: ignore[union-attr]
        {"sha256": str, "idx": int, "data": bytes},
        pk=("sha256", "idx"),
        foreign_keys=[("sha256", "blobs", "sha256")],
        not_null={"data"},
    )


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1, 2: _v2}


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; return the version found."""
    found = current_version(conn)
    if found > SCHEMA_VERSION:
        msg = f"database schema version {found} is newer than this gmi-fsm understands ({SCHEMA_VERSION})"
        raise RuntimeError(msg)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-check under the write lock: another process may have migrated.
            if current_version(conn) >= version:
                conn.execute("ROLLBACK")
                continue
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return found

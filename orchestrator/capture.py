"""Capture a command's output with bounded memory.

Each stream is masked (secrets), hashed and spooled to a temporary file as it
arrives; only a bounded head and tail stay in memory. When the command ends the
spool goes into the blob store once, by content.

Most commands print a line or nothing: an output that fits in the head
(``HEAD_BYTES``) is whole in its event already, so it is kept in memory and never
touches the disk (no spool file, no blob). The spool file is opened only when an
output grows past the head.

The spool file has no name (``O_TMPFILE``, or created and unlinked at once where the
filesystem lacks it): a run killed with SIGKILL mid-step leaves nothing in TMPDIR,
the kernel frees it with the process.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from events.blobs import INLINE_LIMIT, BlobStore
from events.model import OutputDigest
from orchestrator.secrets import REDACTOR, StreamRedactor
from orchestrator.targets.base import Stream

HEAD_BYTES = INLINE_LIMIT  # an output that fits in the head is never stored as a blob
TAIL_BYTES = 4096
FACT_TEXT_LIMIT = 1 << 20


class _StreamCapture:
    def __init__(self, spool_dir: Path | None) -> None:
        self._redactor: StreamRedactor = REDACTOR.stream()
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = bytearray()  # while _size <= HEAD_BYTES: the whole output
        self._tail = bytearray()
        self.text: str | None = None
        self._spool_dir = spool_dir
        self._spool: IO[bytes] | None = None  # opened once the output outgrows the head

    def feed(self, data: bytes) -> None:
        self._write(self._redactor.feed(data))

    def _write(self, data: bytes) -> None:
        if not data:
            return
        self._hash.update(data)
        if self._spool is None and self._size + len(data) > HEAD_BYTES:
            self._spool = tempfile.TemporaryFile(  # noqa: SIM115 - closed in finish/discard
                prefix="gmi-out-", dir=self._spool_dir
            )
            self._spool.write(self._head)  # everything so far: it all fitted in the head
        if self._spool is not None:
            self._spool.write(data)
        self._size += len(data)
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        self._tail += data[-TAIL_BYTES:]
        if len(self._tail) > TAIL_BYTES:
            del self._tail[: len(self._tail) - TAIL_BYTES]

    def finish(self, blobs: BlobStore | None) -> OutputDigest:
        self._write(self._redactor.flush())
        digest = self._hash.hexdigest()
        head = self._head.decode("utf-8", "replace")
        if self._spool is None:
            # Whole in the head (and so in the event): no file was written, no blob is
            # needed. Facts come from short commands: this is their usual path.
            self.text = head
            return OutputDigest(sha256=digest, size=self._size, head=head, tail="")
        spool = self._spool
        try:
            spool.flush()
            if self._size <= FACT_TEXT_LIMIT:  # keep the whole text only when it is small
                spool.seek(0)
                self.text = spool.read().decode("utf-8", "replace")
            if blobs is not None:
                spool.seek(0)
                blobs.put_stream(spool, digest, self._size)
        finally:
            spool.close()
        tail = self._tail.decode("utf-8", "replace")
        return OutputDigest(sha256=digest, size=self._size, head=head, tail=tail)

    def discard(self) -> None:
        if self._spool is not None:
            self._spool.close()


class OutputCapture:
    """An :class:`~orchestrator.targets.base.OutputSink` for one command.

    ``echo`` (optional) sees the masked output too, for live progress.
    """

    def __init__(
        self, *, spool_dir: Path | None = None, echo: Callable[[Stream, bytes], None] | None = None
    ) -> None:
        self._streams = {"stdout": _StreamCapture(spool_dir), "stderr": _StreamCapture(spool_dir)}
        self._echo = echo

    def __call__(self, stream: Stream, data: bytes) -> None:
        self._streams[stream].feed(data)
        if self._echo is not None:
            self._echo(stream, REDACTOR.text(data.decode("utf-8", "replace")).encode())

    def finish(self, blobs: BlobStore | None) -> tuple[OutputDigest, OutputDigest]:
        return self._streams["stdout"].finish(blobs), self._streams["stderr"].finish(blobs)

    def discard(self) -> None:
        for s in self._streams.values():
            s.discard()

    def stdout_text(self) -> str | None:
        """The whole (masked) stdout after :meth:`finish`, when it was small."""
        return self._streams["stdout"].text

"""Capture a command's output with bounded memory.

Each stream is masked (secrets), hashed and spooled to a temporary file as it
arrives; only a bounded head and tail stay in memory. When the command ends the
spool goes into the blob store once, by content.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from events.blobs import BlobStore
from events.model import OutputDigest
from orchestrator.secrets import REDACTOR, StreamRedactor
from orchestrator.targets.base import Stream

HEAD_BYTES = 4096
TAIL_BYTES = 4096
FACT_TEXT_LIMIT = 1 << 20


class _StreamCapture:
    def __init__(self, spool_dir: Path | None) -> None:
        self._redactor: StreamRedactor = REDACTOR.stream()
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = bytearray()
        self._tail = bytearray()
        self.text: str | None = None
        self._spool: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in finish
            prefix="gmi-out-", dir=spool_dir, delete=False
        )

    def feed(self, data: bytes) -> None:
        self._write(self._redactor.feed(data))

    def _write(self, data: bytes) -> None:
        if not data:
            return
        self._hash.update(data)
        self._size += len(data)
        self._spool.write(data)
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        self._tail += data[-TAIL_BYTES:]
        if len(self._tail) > TAIL_BYTES:
            del self._tail[: len(self._tail) - TAIL_BYTES]

    def finish(self, blobs: BlobStore | None) -> OutputDigest:
        self._write(self._redactor.flush())
        self._spool.close()
        path = Path(self._spool.name)
        digest = self._hash.hexdigest()
        # Facts come from short commands: keep the whole text only when it is small.
        self.text = path.read_text("utf-8", "replace") if self._size <= FACT_TEXT_LIMIT else None
        try:
            # Output that fits in the head is whole in the event already: a blob would
            # only repeat it (and cost a transaction per step).
            if blobs is not None and self._size > HEAD_BYTES:
                blobs.put_file(path, digest)
        finally:
            path.unlink(missing_ok=True)
        head = self._head.decode("utf-8", "replace")
        tail = "" if self._size <= HEAD_BYTES else self._tail.decode("utf-8", "replace")
        return OutputDigest(sha256=digest, size=self._size, head=head, tail=tail)

    def discard(self) -> None:
        self._spool.close()
        Path(self._spool.name).unlink(missing_ok=True)


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

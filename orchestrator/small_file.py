"""Read a small regular file with a size cap, refusing anything else before it blocks.

A spec path (or a ``file:`` secret) can name /dev/zero (endless), a FIFO no one
writes to (``open`` blocks forever), a folder, or a 3 GB file. ``read_small_file``
checks the kind with ``stat`` before opening, opens with ``O_NONBLOCK`` (a FIFO swapped
in after the check cannot block the open either), checks again with ``fstat``, and
reads at most ``limit + 1`` bytes: bounded time and memory whatever the path names.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnreadableFile(Exception):
    """The path names something that is not a small regular file. The message says
    what it is (without the path: the caller names it)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise UnreadableFile(
            f"is not a regular file ({_kind(mode)})", hint="give the path of a file that holds the text"
        )


def read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of regular file ``path`` (at most ``limit``). Raises
    FileNotFoundError, :class:`UnreadableFile`, or OSError."""
    _check_regular(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        _check_regular(os.fstat(fd).st_mode)
        parts: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 16, limit + 1 - size)):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UnreadableFile(
                    f"is larger than {limit} bytes", hint="is it the right file? a spec is a few KiB"
                )
        return b"".join(parts)
    finally:
        os.close(fd)

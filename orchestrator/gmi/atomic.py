"""Write-then-rename: a crash never leaves a half-written file under its final name.

The temporary file sits beside the target (same filesystem, so ``os.replace`` is an
atomic rename) and is named ``.<name>.part`` so no reader mistakes it for the real
thing. Data and the folder entry are fsynced: after ``atomic_writer`` returns, the
file survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def part_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part")


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``dest``. On error it
    is removed and ``dest`` is left as it was."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(dest)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_writer(dest: Path) -> Iterator[BinaryIO]:
    with atomic_path(dest) as tmp, tmp.open("wb") as f:
        yield f


def write_text_atomic(dest: Path, text: str) -> None:
    with atomic_writer(dest) as f:
        f.write(text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

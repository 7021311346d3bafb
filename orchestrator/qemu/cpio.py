"""Append files to an initramfs, so an installer finds its answer file at boot.

Linux unpacks an initramfs made of several archives laid end to end, each possibly
compressed on its own; later files win. So adding ``/preseed.cfg`` to the Debian
installer's ``initrd.gz`` needs no unpacking: write a gzip'd cpio ("newc") archive
and append it. This is Debian's documented "initrd preseeding", done without the
``cpio`` tool (pure Python, and so it runs where the build runs).
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping

__all__ = ["append_to_initrd", "newc_archive"]

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


def _entry(ino: int, name: str, data: bytes, mode: int) -> bytes:
    raw_name = name.encode("utf-8") + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw_name), 0)
    header = _MAGIC + b"".join(f"{v:08x}".encode("ascii") for v in fields)
    out = header + raw_name
    out += b"\0" * (-len(out) % 4)  # name ends on a 4-byte boundary
    out += data
    out += b"\0" * (-len(data) % 4)  # so does the data
    return out


def newc_archive(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """A cpio newc archive of ``files`` (path without a leading slash -> (data, mode)).

    Regular files only, owned by root, in the archive's root folder or in folders the
    initramfs already has.
    """
    parts: list[bytes] = []
    for ino, (name, (data, mode)) in enumerate(sorted(files.items()), start=1):
        if name.startswith("/") or ".." in name.split("/") or not name:
            msg = f"cpio member names are relative and stay inside the archive: {name!r}"
            raise ValueError(msg)
        parts.append(_entry(ino, name, data, 0o100000 | (mode & 0o7777)))
    parts.append(_entry(0, _TRAILER, b"", 0))
    archive = b"".join(parts)
    return archive + b"\0" * (-len(archive) % 512)


def append_to_initrd(initrd: bytes, files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """``initrd`` followed by a gzip'd newc archive of ``files``."""
    # mtime=0: the same answer file gives the same bytes, so the digest is stable.
    return initrd + gzip.compress(newc_archive(files), compresslevel=6, mtime=0)

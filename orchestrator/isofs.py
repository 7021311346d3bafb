"""Write a small ISO 9660 image with pycdlib (no genisoimage/xorriso needed), atomically.

Seed media (NoCloud ``cidata``, ``OEMDRV``) and the lab's installer ISO are flat
folders of files whose names (``user-data``, ``ks.cfg``, ``initrd.gz``) plain ISO 9660
cannot hold, so every image carries Rock Ridge (what Linux mounts) and Joliet (what
Windows and installers read) names; the ISO 9660 names are only 8.3 fallbacks.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pycdlib

__all__ = ["IsoMember", "write_iso"]


@dataclass(frozen=True, slots=True)
class IsoMember:
    """A file in the image's root: its long name, and its bytes or a file to copy."""

    name: str
    data: bytes | Path
    iso9660_name: str | None = None  # e.g. "USERDATA.;1"; None: a generated one


def write_iso(dest: Path, label: str, members: Sequence[IsoMember]) -> Path:
    """Write ``members`` into an ISO labelled ``label`` at ``dest``: a temporary file in
    the same folder, renamed over ``dest`` only once complete."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    try:
        for i, member in enumerate(members):
            iso_path = f"/{member.iso9660_name or f'F{i}.;1'}"
            rr_name, joliet_path = member.name, f"/{member.name}"
            if isinstance(member.data, Path):
                iso.add_file(str(member.data), iso_path, rr_name=rr_name, joliet_path=joliet_path)
            else:
                data = member.data
                iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=rr_name, joliet_path=joliet_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            iso.write(str(tmp))
            tmp.chmod(0o644)
            tmp.replace(dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        iso.close()
    return dest

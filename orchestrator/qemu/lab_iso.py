"""A Debian installer ISO for the lab, made from Debian's own installer package.

No installer ISO can be downloaded here, but Debian ships its network installer as a
package (``debian-installer-12-netboot-amd64``). This writes its kernel and initrd
into an ISO laid out like Debian's ``mini.iso`` (``/linux``, ``/initrd.gz``), so the
QEMU host's ISO path runs the real Debian installer. The ISO has no boot loader of
its own: the QEMU host boots the installer's kernel directly (that is how it hands
over the preseed). The network installer downloads its remaining components
(``.udeb`` files) and the packages from ``source.mirror``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pycdlib

__all__ = ["NETBOOT_DIR", "NETBOOT_PACKAGE", "LabIsoError", "write_netboot_iso"]

NETBOOT_PACKAGE = "debian-installer-12-netboot-amd64"
NETBOOT_DIR = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
LABEL = "GMI_LAB_DEBIAN12"  # Joliet labels hold 16 characters

_README = """Debian 12 network installer (kernel + initrd) from the Debian package
{package}, laid out like Debian's mini.iso. Made by `gmi-fsm lab installer-iso`
for gmi-fsm's QEMU host, which boots /linux with /initrd.gz and a preseed.
"""


class LabIsoError(Exception):
    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def write_netboot_iso(dest: Path, netboot_dir: Path = NETBOOT_DIR) -> Path:
    """Write the lab installer ISO to ``dest`` atomically."""
    members = {"linux": netboot_dir / "linux", "initrd.gz": netboot_dir / "initrd.gz"}
    missing = [str(p) for p in members.values() if not p.is_file()]
    if missing:
        raise LabIsoError(
            f"the Debian network installer is not installed (missing {', '.join(missing)})",
            hint=f"apt-get install -y --no-install-recommends {NETBOOT_PACKAGE} (scripts/setup.sh does)",
        )
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    readme = _README.format(package=NETBOOT_PACKAGE).encode()
    try:
        import io  # noqa: PLC0415

        iso.add_fp(
            io.BytesIO(readme), len(readme), "/README.TXT;1", rr_name="README.txt", joliet_path="/README.txt"
        )
        for i, (name, path) in enumerate(members.items()):
            iso.add_file(str(path), f"/F{i}.;1", rr_name=name, joliet_path=f"/{name}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        os.close(fd)
        try:
            iso.write(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        iso.close()
    return dest

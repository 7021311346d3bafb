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

from pathlib import Path

from orchestrator.isofs import IsoMember, write_iso

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
    members_on_disk = {"linux": netboot_dir / "linux", "initrd.gz": netboot_dir / "initrd.gz"}
    missing = [str(p) for p in members_on_disk.values() if not p.is_file()]
    if missing:
        raise LabIsoError(
            f"the Debian network installer is not installed (missing {', '.join(missing)})",
            hint=f"apt-get install -y --no-install-recommends {NETBOOT_PACKAGE} (scripts/setup.sh does)",
        )
    readme = _README.format(package=NETBOOT_PACKAGE).encode()
    members = [
        IsoMember("README.txt", readme),
        *(IsoMember(name, path) for name, path in members_on_disk.items()),
    ]
    return write_iso(dest, LABEL, members)

"""The names vmgenie expects, derived in one place from the OS name and version."""

from __future__ import annotations

import re
from dataclasses import dataclass

# vmgenie's own pattern (GMI-FORMAT.md), .NET named groups spelled the Python way.
# Both groups are greedy, as in .NET: "GMI-A-B-1.zip" is os "A-B", version "1".
ZIP_NAME_RE = re.compile(r"^GMI-(?P<os>.+)-(?P<ver>.+)\.zip$")
TAR_NAME_RE = re.compile(r"^GMI-(?P<os>.+)-(?P<ver>.+)\.tar\.gz$")
BASE_NAME_RE = re.compile(r"^GMI-(?P<os>.+)-(?P<ver>.+)$")

VM_DIR = "Virtual Machines"
DISK_DIR = "Virtual Hard Disks"
SNAPSHOT_DIR = "Snapshots"
METADATA = "gmi-metadata.yml"
SUMS = "SHA256SUMS"


@dataclass(frozen=True, slots=True)
class GmiNames:
    """Every file name of one GMI, e.g. ``GmiNames("Debian", "12")``."""

    os: str
    version: str

    @property
    def base(self) -> str:
        return f"GMI-{self.os}-{self.version}"

    @property
    def vm_name(self) -> str:
        return f"GMI {self.os} {self.version}"

    @property
    def key(self) -> str:
        """The repository index key, ``<Os>-<Ver>``."""
        return f"{self.os}-{self.version}"

    @property
    def zip(self) -> str:
        return f"{self.base}.zip"

    @property
    def tar(self) -> str:
        return f"{self.base}.tar.gz"

    @property
    def manifest(self) -> str:
        return f"{self.base}.yml"

    @property
    def readme(self) -> str:
        return f"{self.base}.md"

    @property
    def events(self) -> str:
        return f"{self.base}.events.jsonl"

    @property
    def provenance(self) -> str:
        return f"{self.base}.intoto.json"

    @property
    def disk_entry(self) -> str:
        """The VHDX's path inside the package (vmgenie looks exactly here)."""
        return f"{DISK_DIR}/{self.vm_name}.vhdx"


def names_from_archive(filename: str) -> GmiNames | None:
    """The names for a package file (``.zip`` or ``.tar.gz``) or folder name; None
    when the name does not follow vmgenie's pattern."""
    for pattern in (ZIP_NAME_RE, TAR_NAME_RE, BASE_NAME_RE):
        m = pattern.match(filename)
        if m:
            return GmiNames(m.group("os"), m.group("ver"))
    return None

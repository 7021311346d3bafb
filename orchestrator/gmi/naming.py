"""The names vmgenie expects, derived in one place from the OS name, the version and
the package variant.

A full GMI (a Hyper-V export) is ``GMI-<Os>-<Ver>.zip``, the name vmgenie's import
parses. A disk-only GMI (no VM configuration: what a build without Hyper-V makes) is
``disk-only-GMI-<Os>-<Ver>.zip``: a name vmgenie's pattern does not match, so its import
refuses it before extracting anything, and a manifest ``disk-only-GMI-<Os>-<Ver>.yml``
inside, so a copy renamed to ``GMI-<Os>-<Ver>.zip`` is still refused before vmgenie
touches an existing VM (its import looks for ``GMI-<Os>-<Ver>.yml`` first). See
docs/package.md, "The disk-only variant".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# vmgenie's own pattern (src/Artifacts/Gmi.cs), .NET named groups spelled the Python
# way. Both groups are greedy, as in .NET: "GMI-A-B-1.zip" is os "A-B", version "1".
ZIP_NAME_RE = re.compile(r"^GMI-(?P<os>.+)-(?P<ver>.+)\.zip$")
TAR_NAME_RE = re.compile(r"^GMI-(?P<os>.+)-(?P<ver>.+)\.tar\.gz$")
BASE_NAME_RE = re.compile(r"^GMI-(?P<os>.+)-(?P<ver>.+)$")

Variant = Literal["hyperv-export", "disk-only"]
HYPERV_EXPORT: Variant = "hyperv-export"
DISK_ONLY: Variant = "disk-only"
# Not "GMI-...": vmgenie's pattern is anchored at "GMI-", so no suffix could do this
# (".zip" must stay last for Expand-Archive, and "GMI-Debian-12.disk-only.zip" still
# matches with os "Debian-12.disk", version "only").
DISK_ONLY_PREFIX = "disk-only-"

VM_DIR = "Virtual Machines"
DISK_DIR = "Virtual Hard Disks"
SNAPSHOT_DIR = "Snapshots"
METADATA = "gmi-metadata.yml"
SUMS = "SHA256SUMS"


@dataclass(frozen=True, slots=True)
class GmiNames:
    """Every file name of one GMI, e.g. ``GmiNames("Debian", "12")`` or
    ``GmiNames("Debian", "12", DISK_ONLY)``."""

    os: str
    version: str
    variant: Variant = HYPERV_EXPORT

    @property
    def base(self) -> str:
        """vmgenie's stem ``GMI-<Os>-<Ver>`` (whatever the variant)."""
        return f"GMI-{self.os}-{self.version}"

    @property
    def stem(self) -> str:
        """The stem of this package's files: ``base``, or ``disk-only-`` + ``base``."""
        return DISK_ONLY_PREFIX + self.base if self.is_disk_only else self.base

    @property
    def is_disk_only(self) -> bool:
        return self.variant == DISK_ONLY

    @property
    def finished(self) -> GmiNames:
        """The names of the full GMI this one becomes once finished on Hyper-V."""
        return GmiNames(self.os, self.version, HYPERV_EXPORT)

    @property
    def vm_name(self) -> str:
        return f"GMI {self.os} {self.version}"

    @property
    def key(self) -> str:
        """The repository index key, ``<Os>-<Ver>``."""
        return f"{self.os}-{self.version}"

    @property
    def zip(self) -> str:
        return f"{self.stem}.zip"

    @property
    def tar(self) -> str:
        return f"{self.stem}.tar.gz"

    @property
    def manifest(self) -> str:
        return f"{self.stem}.yml"

    @property
    def readme(self) -> str:
        return f"{self.stem}.md"

    @property
    def events(self) -> str:
        return f"{self.stem}.events.jsonl"

    @property
    def provenance(self) -> str:
        return f"{self.stem}.intoto.json"

    @property
    def disk_entry(self) -> str:
        """The VHDX's path inside the package (vmgenie looks exactly here)."""
        return f"{DISK_DIR}/{self.vm_name}.vhdx"


def names_from_archive(filename: str) -> GmiNames | None:
    """The names for a package file (``.zip`` or ``.tar.gz``) or folder name, either
    variant; None when the name follows neither."""
    variant = HYPERV_EXPORT
    if filename.startswith(DISK_ONLY_PREFIX):
        variant, filename = DISK_ONLY, filename.removeprefix(DISK_ONLY_PREFIX)
    for pattern in (ZIP_NAME_RE, TAR_NAME_RE, BASE_NAME_RE):
        m = pattern.match(filename)
        if m:
            return GmiNames(m.group("os"), m.group("ver"), variant)
    return None


def vmgenie_accepts_name(filename: str) -> bool:
    """True when vmgenie's import would take ``filename`` for a GMI (its pattern)."""
    return ZIP_NAME_RE.match(filename) is not None

"""Write a cloud-init NoCloud seed ISO with pycdlib (no genisoimage/xorriso needed).

cloud-init finds the seed by its volume label ``cidata`` and reads the files
``user-data``, ``meta-data`` and optionally ``network-config``. Those names are
lowercase with dashes, which plain ISO 9660 cannot hold, so the image carries Rock
Ridge (what Linux mounts) and Joliet names; the ISO 9660 8.3 names are only fallbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator.isofs import IsoMember, write_iso

__all__ = ["SEED_LABEL", "SeedFiles", "meta_data", "write_seed_iso"]

SEED_LABEL = "cidata"

# (rock ridge / joliet name, ISO 9660 level-1 name)
_NAMES = {
    "user-data": "USERDATA.;1",
    "meta-data": "METADATA.;1",
    "network-config": "NETWORKC.;1",
}


@dataclass(frozen=True, slots=True)
class SeedFiles:
    """The seed's content. ``user_data`` should start with ``#cloud-config``."""

    user_data: str
    meta_data: str
    network_config: str | None = None


def meta_data(instance_id: str, local_hostname: str) -> str:
    """NoCloud meta-data. A new ``instance_id`` makes cloud-init run first-boot again."""
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": local_hostname}, sort_keys=False)


def write_seed_iso(dest: Path, seed: SeedFiles) -> Path:
    """Write the seed ISO to ``dest`` atomically (temp file in the same dir, then rename)."""
    files = {"user-data": seed.user_data, "meta-data": seed.meta_data}
    if seed.network_config is not None:
        files["network-config"] = seed.network_config
    members = [IsoMember(name, text.encode("utf-8"), _NAMES[name]) for name, text in files.items()]
    return write_iso(dest, SEED_LABEL, members)

"""The NoCloud seed ISO, read back with pycdlib (and blkid where available)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pycdlib
import pytest
import yaml

from orchestrator.qemu.seed_iso import SEED_LABEL, SeedFiles, meta_data, write_seed_iso

USER_DATA = "#cloud-config\nhostname: lab-1\nusers:\n  - name: tester\n"
NETWORK = "version: 2\nethernets:\n  id0:\n    match: {name: 'en*'}\n    dhcp4: true\n"


def _read(iso_path: Path) -> dict[str, dict[str, bytes]]:
    """Every file of the ISO by its Rock Ridge and by its Joliet name."""
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        result: dict[str, dict[str, bytes]] = {"rr": {}, "joliet": {}}
        for kind, key in (("rr", "rr_path"), ("joliet", "joliet_path")):
            for _root, _dirs, files in iso.walk(**{key: "/"}):
                for name in files:
                    buf = io.BytesIO()
                    iso.get_file_from_iso_fp(buf, **{key: f"/{name}"})
                    result[kind][name] = buf.getvalue()
        vol = iso.pvd.volume_identifier.decode().strip()
        result["label"] = {vol: b""}
    finally:
        iso.close()
    return result


def test_user_and_meta_data_read_back(tmp_path: Path) -> None:
    md = meta_data("iid-42", "lab-1")
    iso = write_seed_iso(tmp_path / "seed.iso", SeedFiles(USER_DATA, md))
    content = _read(iso)
    for kind in ("rr", "joliet"):
        assert content[kind] == {"user-data": USER_DATA.encode(), "meta-data": md.encode()}
    assert SEED_LABEL in content["label"]
    assert yaml.safe_load(md) == {"instance-id": "iid-42", "local-hostname": "lab-1"}


def test_network_config_is_optional(tmp_path: Path) -> None:
    iso = write_seed_iso(
        tmp_path / "seed.iso", SeedFiles(USER_DATA, meta_data("i", "h"), network_config=NETWORK)
    )
    assert _read(iso)["rr"]["network-config"] == NETWORK.encode()


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "seed.iso"
    write_seed_iso(dest, SeedFiles(USER_DATA, meta_data("a", "h")))
    write_seed_iso(dest, SeedFiles(USER_DATA, meta_data("b", "h")))
    assert b"instance-id: b" in _read(dest)["rr"]["meta-data"]
    assert [p.name for p in tmp_path.iterdir()] == ["seed.iso"]


@pytest.mark.skipif(shutil.which("blkid") is None, reason="blkid not installed")
def test_blkid_sees_the_cidata_label(tmp_path: Path) -> None:
    # cloud-init finds the seed through blkid's LABEL, exactly like this.
    iso = write_seed_iso(tmp_path / "seed.iso", SeedFiles(USER_DATA, meta_data("i", "h")))
    out = subprocess.run(["blkid", "-p", "-o", "export", str(iso)], capture_output=True,
                         text=True, check=True).stdout
    assert "TYPE=iso9660" in out
    assert f"LABEL={SEED_LABEL}" in out

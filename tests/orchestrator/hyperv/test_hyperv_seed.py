"""Unattended-install media: the volume label and answer file each installer finds."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import pytest
import yaml

from orchestrator.hyperv.seed import SeedError, seed_media, write_seed_media
from orchestrator.spec import validate_spec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1abc test@example"


def _spec(name: str, version: str, family: str):  # type: ignore[no-untyped-def]
    spec, _ = validate_spec(
        {
            "name": "seed",
            "os": {"name": name, "version": version, "family": family},
            "host": {"kind": "hyperv", "host": "h", "vm_path": "D:\\b", "export_path": "D:\\e"},
            "source": {"iso": "x.iso"},
            "guest": {"user": "genie", "ssh_private_key": "file:key"},
        }
    )
    return spec


def _read_iso(path: Path) -> tuple[str, dict[str, str]]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files = {}
        for child in iso.list_children(joliet_path="/"):
            name = child.file_identifier().decode("utf-16-be")
            if name in (".", "..", "\x00", "\x01"):
                continue
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            files[name] = out.getvalue().decode()
        return label, files
    finally:
        iso.close()


@pytest.mark.parametrize(
    ("os_name", "version", "family", "label", "answer"),
    [
        ("Ubuntu", "24.04", "apt", "cidata", "user-data"),
        ("AlmaLinux", "9", "dnf", "OEMDRV", "ks.cfg"),
        ("openSUSE", "15.6", "zypper", "OEMDRV", "autoinst.xml"),
    ],
)
def test_seed_media_per_family(
    tmp_path: Path, os_name: str, version: str, family: str, label: str, answer: str
) -> None:
    media = seed_media(_spec(os_name, version, family), KEY)
    got_label, files = _read_iso(write_seed_media(tmp_path / "seed.iso", media))
    assert got_label == label
    text = files[answer]
    assert KEY in text  # the build user's key
    assert "genie" in text
    if family == "apt":
        auto = yaml.safe_load(text)["autoinstall"]
        assert auto["shutdown"] == "poweroff"  # the host waits for Off
        assert "linux-cloud-tools-virtual" in auto["packages"]  # hv_kvp_daemon
        assert auto["storage"]["layout"]["name"] == "direct"  # no LVM
        assert "meta-data" in files
    elif family == "dnf":
        assert "hyperv-daemons" in text
        assert "\npoweroff\n" in text
        assert "--fstype=xfs" in text
    else:
        assert "<package>hyper-v</package>" in text
        assert "final_halt" in text


def test_debian_unattended_is_refused_with_a_hint() -> None:
    with pytest.raises(SeedError) as info:
        seed_media(_spec("Debian", "12", "apt"), KEY)
    assert "install: manual" in info.value.hint

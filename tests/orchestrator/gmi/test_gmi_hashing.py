"""CRC-64/NVME, sha256 streaming, SHA256SUMS parsing, names, manifest parsing."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.gmi.hashing import Crc64Nvme, crc64nvme_chunks, parse_sha256sums, sha256_file
from orchestrator.gmi.manifest import ManifestError, parse_manifest
from orchestrator.gmi.naming import names_from_archive
from orchestrator.gmi.publish import crc64nvme_base64


def _bitwise_crc64nvme(data: bytes) -> int:
    """The definition, one bit at a time (reflected poly 0x9A6C9329AC4BC9B5)."""
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x9A6C9329AC4BC9B5 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFFFFFFFFFF


def test_crc64nvme_check_value() -> None:
    assert crc64nvme_chunks([b"123456789"]) == 0xAE8B14860A799888
    assert crc64nvme_chunks([b""]) == 0


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_crc64nvme_streams_and_matches_the_definition(data: bytes, cut: int) -> None:
    crc = Crc64Nvme()
    crc.update(data[:cut])
    crc.update(data[cut:])
    assert crc.value == _bitwise_crc64nvme(data)


def test_crc64nvme_base64_is_s3s_form() -> None:
    # 8 big-endian bytes in base64, as in vmgenie's gmi-repository.dist.yml
    encoded = crc64nvme_base64(0xAE8B14860A799888)
    assert len(encoded) == 12 and encoded.endswith("=")
    assert base64.b64decode(encoded) == bytes.fromhex("ae8b14860a799888")


def test_sha256_file_streams(tmp_path: Path) -> None:
    p = tmp_path / "f"
    data = os.urandom(3 * 1024 * 1024 + 17)
    p.write_bytes(data)
    assert sha256_file(p) == (hashlib.sha256(data).hexdigest(), len(data))


def test_parse_sha256sums() -> None:
    d = "a" * 64
    assert parse_sha256sums(f"{d} *GMI-X-1.zip\n{d}  name with spaces.md\n") == [
        (d, "GMI-X-1.zip"),
        (d, "name with spaces.md"),
    ]
    with pytest.raises(ValueError, match="line 1"):
        parse_sha256sums("nothex *x\n")


@pytest.mark.parametrize(
    ("name", "os", "ver"),
    [
        ("GMI-Debian-12.zip", "Debian", "12"),
        ("GMI-Ubuntu-24.04.zip", "Ubuntu", "24.04"),
        ("GMI-OpenSUSE-16.Beta.tar.gz", "OpenSUSE", "16.Beta"),
        ("GMI-A-B-1.zip", "A-B", "1"),
    ],
)
def test_names(name: str, os: str, ver: str) -> None:
    names = names_from_archive(name)
    assert names is not None and (names.os, names.version) == (os, ver)
    assert (
        names.vm_name == f"GMI {os} {ver}" and names.disk_entry == f"Virtual Hard Disks/GMI {os} {ver}.vhdx"
    )


def test_manifest_accepts_unquoted_scalars_as_vmgenie_does() -> None:
    text = (
        "gmi_version: 1.0\nos: Ubuntu\nversion: 24.04\ncreated: 2025-07-30T18:09:36Z\n"
        "updated: 2025-07-30T18:09:36Z\nvm_name: GMI Ubuntu 24.04\nhyperv_generation: 2\n"
        "maintainer: m\nmaintainer_email: e\nsource_url: u\ndescription: d\n"
        f"checksum_sha256: {'b' * 64}\nsome_future_key: kept\n"
    )
    m = parse_manifest(text)
    assert (m.gmi_version, m.version, m.created) == ("1.0", "24.04", "2025-07-30T18:09:36Z")
    assert m.variant == "hyperv-export" and not m.is_gmi_fsm


def test_manifest_rejects_upper_case_checksum() -> None:
    text = "gmi_version: '1.0'\n" + f"checksum_sha256: {'B' * 64}\n"
    with pytest.raises(ManifestError) as exc:
        parse_manifest(text)
    assert any(p.startswith("checksum_sha256: String should match") for p in exc.value.problems)

"""CRC-64/NVME (awscrt, checked against the definition), sha256 streaming,
SHA256SUMS parsing, names of both package variants."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.gmi.hashing import (
    crc64nvme_file,
    crc64nvme_stream,
    crc64nvme_update,
    parse_sha256sums,
    sha256_file,
)
from orchestrator.gmi.naming import names_from_archive, vmgenie_accepts_name
from orchestrator.gmi.publish import crc64nvme_base64

MASK = 0xFFFFFFFFFFFFFFFF
REFLECTED_POLY = 0x9A6C9329AC4BC9B5  # 0xAD93D23594C93659, bit-reversed


def oracle_crc64nvme(data: bytes) -> int:
    """The test oracle: CRC-64/NVME from its RevEng definition, one bit at a time
    (width 64, poly 0xAD93D23594C93659, init all ones, refin/refout, xorout all ones)."""
    crc = MASK
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ REFLECTED_POLY if crc & 1 else crc >> 1
    return crc ^ MASK


def test_crc64nvme_reveng_check_and_residue() -> None:
    # RevEng catalogue: check = CRC of "123456789", residue = register after a
    # message followed by its own CRC (little-endian, as refout appends it).
    assert oracle_crc64nvme(b"123456789") == 0xAE8B14860A799888
    assert crc64nvme_update(b"123456789") == 0xAE8B14860A799888
    assert crc64nvme_update(b"") == 0
    for message in (b"123456789", b"", os.urandom(1000)):
        crc = crc64nvme_update(message)
        assert crc64nvme_update(message + crc.to_bytes(8, "little")) ^ MASK == 0xF310303B2B6F6E42


@settings(max_examples=200)
@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=2000))
def test_awscrt_matches_the_oracle_in_any_chunking(data: bytes, cut: int) -> None:
    streamed = crc64nvme_update(data[cut:], crc64nvme_update(data[:cut]))
    assert streamed == crc64nvme_update(data) == oracle_crc64nvme(data)


def test_crc64nvme_file_streams_across_buffer_boundaries(tmp_path: Path) -> None:
    data = os.urandom(9 * 1024 * 1024 + 13)  # over two 4 MiB reads, then a short one
    p = tmp_path / "f"
    p.write_bytes(data)
    assert crc64nvme_file(p) == crc64nvme_update(data)
    assert crc64nvme_stream(io.BytesIO(data)) == (crc64nvme_update(data), len(data))
    small = data[:4096]  # the oracle is slow: compare it on a slice
    assert crc64nvme_stream(io.BytesIO(small))[0] == oracle_crc64nvme(small)


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
    assert names is not None and (names.os, names.version) == (os, ver) and not names.is_disk_only
    assert (
        names.vm_name == f"GMI {os} {ver}" and names.disk_entry == f"Virtual Hard Disks/GMI {os} {ver}.vhdx"
    )


def test_disk_only_names_do_not_match_vmgenies_pattern() -> None:
    names = names_from_archive("disk-only-GMI-Debian-12.zip")
    assert names is not None and names.is_disk_only and (names.os, names.version) == ("Debian", "12")
    assert names.zip == "disk-only-GMI-Debian-12.zip"
    assert names.manifest == "disk-only-GMI-Debian-12.yml"  # not the GMI-<os>-<ver>.yml vmgenie loads
    assert names.vm_name == "GMI Debian 12" and names.disk_entry == "Virtual Hard Disks/GMI Debian 12.vhdx"
    assert names.finished.zip == "GMI-Debian-12.zip" and names.finished.manifest == "GMI-Debian-12.yml"
    assert not vmgenie_accepts_name(names.zip)
    assert vmgenie_accepts_name(names.finished.zip)
    # Why a prefix and not a suffix: vmgenie's greedy pattern still matches this one.
    assert vmgenie_accepts_name("GMI-Debian-12.disk-only.zip")

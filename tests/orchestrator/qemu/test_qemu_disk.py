"""qemu-img wrappers on a small real raw disk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.qemu._run import QemuToolError
from orchestrator.qemu.disk import check, convert_to_vhdx, create_work_copy, detect_format, info

MIB = 1024 * 1024


@pytest.fixture
def raw_disk(tmp_path: Path) -> Path:
    """16 MiB sparse raw file with recognisable data at the start and in the middle."""
    path = tmp_path / "small.raw"
    with path.open("wb") as fh:
        fh.truncate(16 * MIB)
        fh.write(b"GMI-START" * 100)
        fh.seek(8 * MIB)
        fh.write(os.urandom(MIB))
    return path


def _to_raw(src: Path, fmt: str, dst: Path) -> bytes:
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(src), str(dst)],
                   check=True)
    return dst.read_bytes()


def test_full_work_copy_is_qcow2_with_same_data(raw_disk: Path, tmp_path: Path) -> None:
    work = create_work_copy(raw_disk, tmp_path / "work.qcow2")
    data = info(work)
    assert data["format"] == "qcow2"
    assert data["virtual-size"] == 16 * MIB
    assert "backing-filename" not in data
    assert _to_raw(work, "qcow2", tmp_path / "back.raw") == raw_disk.read_bytes()
    assert check(work).ok


def test_linked_copy_uses_backing_file_and_can_grow(raw_disk: Path, tmp_path: Path) -> None:
    work = create_work_copy(raw_disk, tmp_path / "linked.qcow2", linked=True, size_gib=1)
    data = info(work)
    assert data["backing-filename"] == str(raw_disk.resolve())
    assert data["backing-filename-format"] == "raw"
    assert data["virtual-size"] == 1024 * MIB


def test_vhdx_roundtrip_and_check(raw_disk: Path, tmp_path: Path) -> None:
    vhdx = convert_to_vhdx(raw_disk, tmp_path / "out.vhdx")
    assert info(vhdx)["format"] == "vhdx"
    result = check(vhdx)
    assert result.ok
    assert result.supported
    assert _to_raw(vhdx, "vhdx", tmp_path / "back.raw") == raw_disk.read_bytes()
    # Only the final file is left: the temp name was renamed, not copied.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.raw", "out.vhdx", "small.raw"]
    # A VHDX is itself a valid base for a work copy.
    assert info(create_work_copy(vhdx, tmp_path / "w.qcow2"))["format"] == "qcow2"


def test_raw_check_is_not_supported_but_ok(raw_disk: Path) -> None:
    result = check(raw_disk)
    assert result.ok
    assert not result.supported


def test_corrupt_qcow2_is_reported_not_raised(raw_disk: Path, tmp_path: Path) -> None:
    work = create_work_copy(raw_disk, tmp_path / "work.qcow2")
    # Break the refcount table offset in the qcow2 header (bytes 48..55).
    with work.open("r+b") as fh:
        fh.seek(48)
        fh.write((0xFFFF0000).to_bytes(8, "big"))
    result = check(work)  # qemu-img exits 2: an answer about the disk, not a tool failure
    assert not result.ok
    assert "errors were found" in result.output


def test_errors_say_where_and_how(tmp_path: Path) -> None:
    missing = tmp_path / "nope.qcow2"
    with pytest.raises(QemuToolError) as err:
        info(missing)
    msg = str(err.value)
    assert str(missing) in msg
    assert "fix:" in msg
    with pytest.raises(ValueError, match="suffix"):
        detect_format(tmp_path / "disk.bin")


def test_failed_conversion_leaves_no_destination(tmp_path: Path) -> None:
    dst = tmp_path / "out.vhdx"
    with pytest.raises(QemuToolError):
        convert_to_vhdx(tmp_path / "missing.raw", dst)
    assert not dst.exists()
    assert list(tmp_path.iterdir()) == []

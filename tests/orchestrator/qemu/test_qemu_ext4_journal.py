"""Zeroing unused ext4 journals, and compacting with it, on real filesystems made by
mkfs.ext4 / mkfs.vfat / sfdisk in plain files (no loop devices, no mounts).

Every journal gets random garbage in its log blocks first (as a guest's old
transactions would leave), found with `debugfs bmap`, independently of the module's
own block-map parsing; `e2fsck -fn` checks each filesystem afterwards.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.qemu._run import QemuToolError
from orchestrator.qemu.disk import compact_to_vhdx, convert_to_vhdx, create_work_copy, info
from orchestrator.qemu.ext4_journal import _zero_range, zero_journal, zero_journals

MIB = 1 << 20
BS = 4096
JOURNAL_BLOCKS = 1024  # mkfs.ext4's minimum: 4 MiB at 4 KiB blocks
SECTOR = 512
ESP_START, ESP_SECTORS = 2048, 16 * MIB // SECTOR  # sectors
ROOT_START, ROOT_SECTORS = ESP_START + ESP_SECTORS, 48 * MIB // SECTOR
DISK_BYTES = (ROOT_START + ROOT_SECTORS + 2048) * SECTOR


def _run(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def _dev(image: Path, offset: int) -> str:
    return f"{image}?offset={offset}" if offset else str(image)


def _mkfs_ext4(image: Path, content: Path, *, offset: int = 0, size: int = 48 * MIB, fs: str = "ext4") -> None:
    args = ["mkfs." + fs, "-q", "-F", "-b", str(BS), "-d", str(content)]
    if fs != "ext2":
        args += ["-J", f"size={JOURNAL_BLOCKS * BS // MIB}"]
    if offset:
        args += ["-E", f"offset={offset}"]
    _run(*args, str(image), f"{size // 1024}k")


def _journal_blocks(image: Path, offset: int = 0) -> list[int]:
    """Physical block of each logical journal block, by `debugfs bmap <8> N`."""
    cmds = image.parent / "bmap.cmds"
    cmds.write_text("".join(f"bmap <8> {n}\n" for n in range(JOURNAL_BLOCKS)))
    out = _run("debugfs", "-f", str(cmds), _dev(image, offset)).stdout
    blocks = [int(line) for line in out.splitlines() if line.strip().isdigit()]
    assert len(blocks) == JOURNAL_BLOCKS
    return blocks


def _fill_journal_with_garbage(image: Path, offset: int = 0) -> list[int]:
    blocks = _journal_blocks(image, offset)
    with image.open("r+b") as fh:
        for b in blocks[1:]:  # logical 0 is the journal superblock
            fh.seek(offset + b * BS)
            fh.write(os.urandom(BS))
    return blocks


def _expected_after_zeroing(data: bytes, blocks: list[int], offset: int = 0) -> bytes:
    out = bytearray(data)
    for b in blocks[1:]:
        out[offset + b * BS : offset + (b + 1) * BS] = bytes(BS)
    return bytes(out)


def _fsck_clean(image: Path, offset: int = 0) -> None:
    proc = subprocess.run(["e2fsck", "-fn", _dev(image, offset)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def content(tmp_path: Path) -> Path:
    d = tmp_path / "content"
    (d / "etc").mkdir(parents=True)
    (d / "etc" / "hostname").write_text("gmi\n")
    (d / "data.bin").write_bytes(os.urandom(3 * MIB))
    return d


@pytest.fixture
def bare_fs(tmp_path: Path, content: Path) -> Path:
    image = tmp_path / "fs.img"
    _mkfs_ext4(image, content)
    return image


def _gpt_disk(path: Path, content: Path, *, root: str = "ext4") -> Path:
    with path.open("wb") as fh:
        fh.truncate(DISK_BYTES)
    parts = [f"start={ESP_START}, size={ESP_SECTORS}, type=U, name=EFI"]
    if root:
        parts.append(f"start={ROOT_START}, size={ROOT_SECTORS}, type=L, name=rootfs")
    _run("sfdisk", "-q", str(path), input="label: gpt\n" + "\n".join(parts) + "\n")
    _run("mkfs.vfat", "--offset", str(ESP_START), str(path), str(ESP_SECTORS * SECTOR // 1024))
    _run("mcopy", "-i", f"{path}@@{ESP_START * SECTOR}", str(content / "etc" / "hostname"), "::/hostname")
    if root:
        _mkfs_ext4(path, content, offset=ROOT_START * SECTOR, size=ROOT_SECTORS * SECTOR, fs=root)
    return path


@pytest.mark.parametrize("fs", ["ext4", "ext3"])  # extent-mapped; block-mapped with an indirect block
def test_unused_journal_is_zeroed_and_nothing_else_changes(tmp_path: Path, content: Path, fs: str) -> None:
    bare_fs = tmp_path / "fs.img"
    _mkfs_ext4(bare_fs, content, fs=fs)
    blocks = _fill_journal_with_garbage(bare_fs)
    before = bare_fs.read_bytes()
    result = zero_journal(bare_fs)
    assert result is not None
    assert result.skipped == ""
    assert result.zeroed_bytes == (JOURNAL_BLOCKS - 1) * BS
    assert result.nonzero_bytes == (JOURNAL_BLOCKS - 1) * BS  # every log block held garbage
    after = bare_fs.read_bytes()
    # The log blocks are zero; the journal superblock and every other byte are as they were.
    assert after == _expected_after_zeroing(before, blocks)
    assert after[blocks[0] * BS : (blocks[0] + 1) * BS] == before[blocks[0] * BS : (blocks[0] + 1) * BS]
    _fsck_clean(bare_fs)
    assert _run("debugfs", "-R", "cat /etc/hostname", str(bare_fs)).stdout == "gmi\n"
    # Holes were punched: the file holds less data than before (it was sparse already).
    assert os.stat(bare_fs).st_blocks * 512 <= len(before) - (JOURNAL_BLOCKS - 1) * BS
    # Idempotent: a second pass zeroes nothing that was not already zero.
    again = zero_journal(bare_fs)
    assert again is not None
    assert (again.zeroed_bytes, again.nonzero_bytes, again.skipped) == ((JOURNAL_BLOCKS - 1) * BS, 0, "")
    assert bare_fs.read_bytes() == after


@pytest.mark.parametrize(
    ("debugfs_cmd", "reason"),
    [
        ("feature needs_recovery", "needs_recovery"),
        ("ssv state 0", "not cleanly unmounted"),
        ("ssv state 3", "not cleanly unmounted"),  # clean, but with errors
    ],
)
def test_filesystem_that_was_not_cleanly_unmounted_is_left_alone(
    bare_fs: Path, debugfs_cmd: str, reason: str
) -> None:
    _fill_journal_with_garbage(bare_fs)
    _run("debugfs", "-w", "-R", debugfs_cmd, str(bare_fs))
    before = bare_fs.read_bytes()
    result = zero_journal(bare_fs)
    assert result is not None
    assert reason in result.skipped
    assert (result.zeroed_bytes, result.nonzero_bytes) == (0, 0)
    assert bare_fs.read_bytes() == before


def test_journal_with_transactions_to_replay_is_left_alone(bare_fs: Path) -> None:
    blocks = _fill_journal_with_garbage(bare_fs)
    with bare_fs.open("r+b") as fh:  # s_start: the log begins at block 1
        fh.seek(blocks[0] * BS + 0x1C)
        fh.write((1).to_bytes(4, "big"))
    before = bare_fs.read_bytes()
    result = zero_journal(bare_fs)
    assert result is not None
    assert "journal not empty (s_start 1)" in result.skipped
    assert bare_fs.read_bytes() == before


def test_journal_superblock_that_does_not_match_is_left_alone(bare_fs: Path) -> None:
    blocks = _fill_journal_with_garbage(bare_fs)
    with bare_fs.open("r+b") as fh:  # s_maxlen no longer what inode 8 maps
        fh.seek(blocks[0] * BS + 0x10)
        fh.write((JOURNAL_BLOCKS + 1).to_bytes(4, "big"))
    before = bare_fs.read_bytes()
    result = zero_journal(bare_fs)
    assert result is not None
    assert "journal length" in result.skipped
    assert bare_fs.read_bytes() == before


def test_no_journal_and_external_journals_are_skipped(tmp_path: Path, content: Path) -> None:
    ext2 = tmp_path / "ext2.img"
    _mkfs_ext4(ext2, content, fs="ext2")
    result = zero_journal(ext2)
    assert result is not None
    assert result.skipped == "no journal"

    jdev = tmp_path / "jdev.img"
    _run("mkfs.ext4", "-q", "-F", "-O", "journal_dev", "-b", str(BS), str(jdev), "4096")
    result = zero_journal(jdev)
    assert result is not None
    assert "external journal device" in result.skipped

    # A filesystem whose journal lives elsewhere (journal UUID set).
    fs = tmp_path / "ext-journal.img"
    _mkfs_ext4(fs, content, fs="ext2")
    uuid = _run("dumpe2fs", "-h", str(jdev)).stdout.split("Filesystem UUID:")[1].split()[0]
    _run("debugfs", "-w", "-R", "feature has_journal", str(fs))
    _run("debugfs", "-w", "-R", f"ssv journal_uuid {uuid}", str(fs))
    before = fs.read_bytes()
    result = zero_journal(fs)
    assert result is not None
    assert result.skipped == "external journal"
    assert fs.read_bytes() == before


def test_not_an_ext_filesystem_is_not_reported(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(MIB))
    assert zero_journal(junk) is None
    assert zero_journals(junk) == []


def test_bare_filesystem_is_found_as_whole_disk(bare_fs: Path) -> None:
    _fill_journal_with_garbage(bare_fs)
    (result,) = zero_journals(bare_fs)
    assert (result.where, result.offset, result.skipped) == ("whole disk", 0, "")
    assert result.nonzero_bytes == (JOURNAL_BLOCKS - 1) * BS
    _fsck_clean(bare_fs)


def test_gpt_disk_zeroes_the_root_journal_and_leaves_the_esp(tmp_path: Path, content: Path) -> None:
    disk = _gpt_disk(tmp_path / "disk.raw", content)
    root = ROOT_START * SECTOR
    blocks = _fill_journal_with_garbage(disk, root)
    before = disk.read_bytes()
    (result,) = zero_journals(disk)  # the vfat ESP has no entry
    assert (result.where, result.offset, result.skipped) == ("partition 2", root, "")
    assert result.zeroed_bytes == result.nonzero_bytes == (JOURNAL_BLOCKS - 1) * BS
    assert disk.read_bytes() == _expected_after_zeroing(before, blocks, root)
    _fsck_clean(disk, root)
    esp = f"{disk}@@{ESP_START * SECTOR}"
    assert _run("mtype", "-i", esp, "::/hostname").stdout == "gmi\n"


def test_filesystem_larger_than_its_partition_is_left_alone(tmp_path: Path, content: Path) -> None:
    disk = _gpt_disk(tmp_path / "disk.raw", content)
    root = ROOT_START * SECTOR
    _mkfs_ext4(disk, content, offset=root, size=ROOT_SECTORS * SECTOR + 4 * MIB)
    before = disk.read_bytes()
    (result,) = zero_journals(disk)
    assert "larger than its partition" in result.skipped
    assert disk.read_bytes() == before


def test_vfat_only_disk_has_nothing_to_zero(tmp_path: Path, content: Path) -> None:
    disk = _gpt_disk(tmp_path / "disk.raw", content, root="")
    before = disk.read_bytes()
    assert zero_journals(disk) == []
    assert disk.read_bytes() == before


def test_zero_writes_where_holes_cannot_be_punched(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(3 * MIB))
    fd = os.open(path, os.O_RDWR)
    try:
        _zero_range(fd, MIB // 2, MIB + 4096, punch=False)
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[MIB // 2 : MIB // 2 + MIB + 4096] == bytes(MIB + 4096)
    assert all(data[i : i + 4096] != bytes(4096) for i in (0, MIB // 2 + MIB + 4096))
    assert len(data) == 3 * MIB


def test_compact_to_vhdx_zeroes_the_journal_in_a_copy(tmp_path: Path, content: Path) -> None:
    disk = _gpt_disk(tmp_path / "disk.raw", content)
    root = ROOT_START * SECTOR
    blocks = _fill_journal_with_garbage(disk, root)
    work = create_work_copy(disk, tmp_path / "work.qcow2")
    work_before = work.read_bytes()
    out = tmp_path / "out"
    done = compact_to_vhdx(work, out / "GMI Test 1.vhdx", src_format="qcow2")
    assert done.path == out / "GMI Test 1.vhdx"
    assert (done.journal_zeroed_bytes, done.journal_nonzero_bytes) == ((JOURNAL_BLOCKS - 1) * BS,) * 2
    assert done.journal_skipped == ""
    assert info(done.path)["format"] == "vhdx"
    assert work.read_bytes() == work_before  # the source is never written
    assert sorted(p.name for p in out.iterdir()) == ["GMI Test 1.vhdx"]  # no temp files left
    back = tmp_path / "back.raw"
    _run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(done.path), str(back))
    assert back.read_bytes() == _expected_after_zeroing(disk.read_bytes(), blocks, root)
    _fsck_clean(back, root)
    # 4 MiB of stale journal is 4 MiB less VHDX than the plain conversion of the same disk.
    plain = convert_to_vhdx(work, tmp_path / "plain.vhdx", src_format="qcow2")
    assert plain.stat().st_size - done.path.stat().st_size >= 3 * MIB


def test_compact_reports_skips_and_still_converts(tmp_path: Path, content: Path) -> None:
    disk = _gpt_disk(tmp_path / "disk.raw", content)
    root = ROOT_START * SECTOR
    _fill_journal_with_garbage(disk, root)
    _run("debugfs", "-w", "-R", "feature needs_recovery", _dev(disk, root))
    done = compact_to_vhdx(disk, tmp_path / "out.vhdx")
    assert done.journal_zeroed_bytes == 0
    assert done.journal_skipped.startswith("partition 2: needs_recovery is set")
    back = tmp_path / "back.raw"
    _run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(done.path), str(back))
    assert back.read_bytes() == disk.read_bytes()


def test_failed_compaction_leaves_no_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(QemuToolError, match="expanding the disk"):
        compact_to_vhdx(tmp_path / "missing.qcow2", out / "x.vhdx")
    assert list(out.iterdir()) == []

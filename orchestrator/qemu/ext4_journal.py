"""Zero the stale log area of cleanly unmounted ext3/ext4 journals in a raw disk image.

A guest that powers off cleanly leaves its journal empty (``s_start == 0``: nothing to
replay) but the journal's blocks still hold the last transactions it wrote: up to
the journal's size (64 MiB by default) of non-zero data that no one will read again.
Zeroing them lets ``qemu-img convert`` leave them out of the VHDX.

One job: find the ext filesystems in a raw image (the partitions of its GPT or MBR
table, or the whole image when it has none), and for each, zero the journal's log
blocks (every journal block from ``s_first`` on, i.e. all but the journal superblock)
**only when** all of these hold, else record why not and leave it byte-identical:

- ext superblock magic; state exactly "clean" (valid, no errors, no orphan recovery);
  ``has_journal``, no ``needs_recovery``; an internal journal (inode 8, no journal
  device or UUID), not itself an external journal device;
- ``debugfs`` opens the filesystem (it checks the superblock checksum) and maps inode 8
  to data blocks covering logical blocks 0..N-1 exactly, inside the filesystem and the
  partition; extent-tree and indirect blocks are left alone;
- the block mapped at logical 0 is a JBD2 superblock (magic, v1/v2) with the
  filesystem's block size, ``s_maxlen == N``, the inode's size N blocks, no recorded
  journal error, and ``s_start == 0`` (the journal is empty).

Zeroing is a hole punched in the (sparse) raw file, or zero writes where the
filesystem cannot punch; it is read back before this returns. Nothing else is
written: not the journal superblock, not the ext superblock, not the extent tree.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator import procs
from orchestrator.qemu._run import QemuToolError, require_tool

__all__ = ["JournalZeroing", "zero_journal", "zero_journals"]

# ext2/3/4 superblock (little-endian), at byte 1024 of the filesystem.
_SB_OFFSET = 1024
_EXT_MAGIC = 0xEF53
_STATE_VALID, _STATE_ERROR, _STATE_ORPHAN = 0x1, 0x2, 0x4
_COMPAT_HAS_JOURNAL = 0x4
_INCOMPAT_RECOVER, _INCOMPAT_JOURNAL_DEV, _INCOMPAT_64BIT = 0x4, 0x8, 0x80
_JOURNAL_INO = 8

# JBD2 journal superblock (big-endian), in the journal's logical block 0.
_JBD2_MAGIC = 0xC03B3998
_JBD2_SUPERBLOCK_V1, _JBD2_SUPERBLOCK_V2 = 3, 4

_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class JournalZeroing:
    """What happened to one ext filesystem's journal.

    ``zeroed_bytes``: bytes of journal log area that are zero now (0 when skipped);
    ``nonzero_bytes``: how many of them held non-zero data before (whole fs blocks);
    ``skipped``: why nothing was written ("" when zeroed).
    """

    where: str
    offset: int
    zeroed_bytes: int = 0
    nonzero_bytes: int = 0
    skipped: str = ""


class _Refused(Exception):
    """This filesystem's journal is not provably unused: leave it alone."""


@dataclass(frozen=True, slots=True)
class _Plan:
    block_size: int
    jsb_offset: int  # absolute byte offset of the journal superblock in the image
    runs: tuple[tuple[int, int], ...]  # absolute (byte offset, length) to zero


def zero_journals(image: Path) -> list[JournalZeroing]:
    """Zero the unused journals of every ext filesystem in the raw ``image``.

    One entry per ext filesystem found (other partitions, e.g. a vfat ESP, have none);
    a single ``skipped`` entry when the partition table cannot be read.
    """
    try:
        places = _filesystem_places(image)
    except _Refused as exc:
        return [JournalZeroing("disk", 0, skipped=str(exc))]
    results = []
    for where, offset, size in places:
        result = zero_journal(image, offset, size=size, where=where)
        if result is not None:
            results.append(result)
    return results


def zero_journal(
    image: Path, offset: int = 0, *, size: int | None = None, where: str = "whole disk"
) -> JournalZeroing | None:
    """Zero the journal of the ext filesystem at byte ``offset`` of the raw ``image``
    if it is provably unused; ``None`` when there is no ext filesystem there."""
    size = image.stat().st_size - offset if size is None else size
    sb = _read(image, offset + _SB_OFFSET, 1024)
    if len(sb) < 1024 or _u16le(sb, 0x38) != _EXT_MAGIC:
        return None
    try:
        plan = _plan(image, offset, size, sb)
    except _Refused as exc:
        return JournalZeroing(where, offset, skipped=str(exc))
    zeroed, nonzero = _zero(image, plan)
    return JournalZeroing(where, offset, zeroed_bytes=zeroed, nonzero_bytes=nonzero)


# -- finding the filesystems ---------------------------------------------------------


def _text(done: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[str]:
    out, err = done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def _filesystem_places(image: Path) -> list[tuple[str, int, int]]:
    """(label, byte offset, byte size) of each partition, or the whole image."""
    sfdisk = _tool("sfdisk")
    proc = _text(procs.run([sfdisk, "--json", str(image)], timeout_s=60))
    if proc.returncode != 0:
        if "does not contain a recognized partition table" in proc.stderr:
            return [("whole disk", 0, image.stat().st_size)]
        raise _Refused(f"sfdisk could not read the partition table: {proc.stderr.strip()[-300:]}")
    table = json.loads(proc.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    places = []
    for n, p in enumerate(table.get("partitions", []), start=1):
        number = re.search(r"(\d+)$", str(p.get("node", "")))  # GPT entries may have gaps
        label = f"partition {number.group(1) if number else n}"
        places.append((label, int(p["start"]) * sector, int(p["size"]) * sector))
    return places


# -- deciding: every check, no writes -------------------------------------------------


def _plan(image: Path, offset: int, size: int, sb: bytes) -> _Plan:
    bs, blocks, first_data_block = _check_superblock(sb, size)
    inode_size, extents = _journal_map(image, offset)
    nblocks = _check_map(extents, bs, blocks, first_data_block, inode_size)
    jsb_offset = offset + extents[0][2] * bs
    j_first = _check_journal_superblock(_read(image, jsb_offset, 1024), bs, nblocks)
    runs: list[tuple[int, int]] = []
    for lstart, lend, pstart in extents:
        lo = max(lstart, j_first)
        if lo > lend:
            continue
        start, length = offset + (pstart + lo - lstart) * bs, (lend - lo + 1) * bs
        if runs and runs[-1][0] + runs[-1][1] == start:
            start, length = runs[-1][0], runs.pop()[1] + length
        runs.append((start, length))
    return _Plan(bs, jsb_offset, tuple(runs))


def _check_superblock(sb: bytes, size: int) -> tuple[int, int, int]:
    """(block size, block count, first data block) of a clean fs with an internal journal."""
    state = _u16le(sb, 0x3A)
    if state & (_STATE_VALID | _STATE_ERROR | _STATE_ORPHAN) != _STATE_VALID:
        raise _Refused(f"filesystem not cleanly unmounted (state 0x{state:x})")
    compat, incompat = _u32le(sb, 0x5C), _u32le(sb, 0x60)
    if incompat & _INCOMPAT_JOURNAL_DEV:
        raise _Refused("an external journal device, not a filesystem")
    if not compat & _COMPAT_HAS_JOURNAL:
        raise _Refused("no journal")
    if incompat & _INCOMPAT_RECOVER:
        raise _Refused("needs_recovery is set: the journal holds transactions to replay")
    journal_ino, journal_dev = _u32le(sb, 0xE0), _u32le(sb, 0xE4)
    if journal_dev or any(sb[0xD0:0xE0]):
        raise _Refused("external journal")
    if journal_ino != _JOURNAL_INO:
        raise _Refused(f"journal in inode {journal_ino}, expected {_JOURNAL_INO}")
    log_bs = _u32le(sb, 0x18)
    if log_bs > 6:
        raise _Refused(f"unknown block size (log {log_bs})")
    bs = 1024 << log_bs
    blocks = _u32le(sb, 0x04)
    if incompat & _INCOMPAT_64BIT:
        blocks |= _u32le(sb, 0x150) << 32
    if blocks * bs > size:
        raise _Refused(f"filesystem ({blocks * bs} bytes) larger than its partition ({size} bytes)")
    return bs, blocks, _u32le(sb, 0x14)


def _check_map(
    extents: list[tuple[int, int, int]], bs: int, blocks: int, first_data_block: int, inode_size: int
) -> int:
    """The number of journal blocks: logical 0..N-1 mapped once each, inside the fs."""
    extents.sort()
    expected = 0
    for lstart, lend, pstart in extents:
        if lstart != expected:
            raise _Refused(f"journal inode map has a gap or overlap at logical block {expected}")
        if pstart <= first_data_block or pstart + (lend - lstart) >= blocks:
            raise _Refused("journal blocks outside the filesystem's data area")
        expected = lend + 1
    if expected < 2 or inode_size != expected * bs:
        raise _Refused(f"journal inode size {inode_size} is not its {expected} mapped blocks of {bs}")
    return expected


def _check_journal_superblock(jsb: bytes, bs: int, nblocks: int) -> int:
    """The first log block (``s_first``) of an empty JBD2 journal of ``nblocks`` blocks."""
    if len(jsb) < 1024 or _u32be(jsb, 0) != _JBD2_MAGIC:
        raise _Refused("no JBD2 superblock at the journal's first block")
    if _u32be(jsb, 4) not in (_JBD2_SUPERBLOCK_V1, _JBD2_SUPERBLOCK_V2):
        raise _Refused(f"unknown journal superblock type {_u32be(jsb, 4)}")
    j_bs, j_maxlen, j_first, j_start = (_u32be(jsb, o) for o in (0x0C, 0x10, 0x14, 0x1C))
    j_errno = int.from_bytes(jsb[0x20:0x24], "big", signed=True)
    if j_bs != bs:
        raise _Refused(f"journal block size {j_bs} is not the filesystem's {bs}")
    if j_maxlen != nblocks:
        raise _Refused(f"journal length {j_maxlen} blocks, but {nblocks} are mapped")
    if j_errno:
        raise _Refused(f"the journal recorded an error ({j_errno})")
    if j_start != 0:
        raise _Refused(f"journal not empty (s_start {j_start}): it may hold transactions to replay")
    if not 1 <= j_first < j_maxlen:
        raise _Refused(f"unexpected first log block {j_first}")
    return j_first


_MAP_ENTRY = re.compile(r"\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?")
_META_ENTRY = re.compile(r"\((?:ETB\d+|IND|DIND|TIND)\):\d+")


def _journal_map(image: Path, offset: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Inode 8's size and data blocks as (first logical, last logical, first physical),
    from ``debugfs -R "stat <8>"`` (extent-mapped or block-mapped journals)."""
    if "?" in image.name:
        raise _Refused("the image file name contains '?', which e2fsprogs reads as options")
    debugfs = _tool("debugfs")
    proc = _text(
        procs.run(
            [debugfs, "-R", f"stat <{_JOURNAL_INO}>", f"{image.name}?offset={offset}"],
            cwd=image.parent,
            timeout_s=300,
            env={"DEBUGFS_PAGER": "__none__", "PAGER": "__none__"},
        )
    )
    err = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("debugfs "))
    out = proc.stdout
    if proc.returncode != 0 or err.strip() or not out.startswith(f"Inode: {_JOURNAL_INO} "):
        raise _Refused(f"debugfs could not read the journal inode: {(err or out).strip()[-300:]}")
    size = re.search(r"\bSize: (\d+)", out)
    _head, sep, body = out.partition("\nEXTENTS:\n")
    if not sep:
        _head, sep, body = out.partition("\nBLOCKS:\n")
    if size is None or not sep:
        raise _Refused("debugfs printed no size or block map for the journal inode")
    body = body.split("\nTOTAL:", 1)[0]
    extents = []
    for raw in body.replace("\n", " ").split(","):
        entry = raw.strip()
        if not entry or _META_ENTRY.fullmatch(entry):
            continue
        m = _MAP_ENTRY.fullmatch(entry)
        if m is None:
            raise _Refused(f"unexpected entry in the journal's block map: {entry[:80]!r}")
        l0, l1, p0, p1 = m.groups()
        lstart, lend = int(l0), int(l1 or l0)
        pstart, pend = int(p0), int(p1 or p0)
        if pend - pstart != lend - lstart:
            raise _Refused(f"inconsistent entry in the journal's block map: {entry!r}")
        extents.append((lstart, lend, pstart))
    if not extents:
        raise _Refused("the journal inode maps no blocks")
    return int(size.group(1)), extents


def _tool(name: str) -> str:
    """The tool's path; also looked up in the sbin directories a non-root PATH lacks."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        try:
            require_tool(name)
        except QemuToolError as exc:
            raise _Refused(f"{exc.what} ({exc.hint})") from exc
    return found or name


# -- writing ---------------------------------------------------------------------------


def _zero(image: Path, plan: _Plan) -> tuple[int, int]:
    """Zero the plan's runs; return (bytes zeroed, bytes that were non-zero)."""
    bs = plan.block_size
    zero_block = bytes(bs)
    nonzero = 0
    fd = os.open(image, os.O_RDWR)
    try:
        jsb_before = os.pread(fd, bs, plan.jsb_offset)
        for start, length in plan.runs:
            for pos in range(start, start + length, _CHUNK):
                chunk = os.pread(fd, min(_CHUNK, start + length - pos), pos)
                nonzero += sum(bs for i in range(0, len(chunk), bs) if chunk[i : i + bs] != zero_block)
        for start, length in plan.runs:
            _zero_range(fd, start, length)
        zeros = bytes(_CHUNK)
        for start, length in plan.runs:
            for pos in range(start, start + length, _CHUNK):
                n = min(_CHUNK, start + length - pos)
                if os.pread(fd, n, pos) != zeros[:n]:
                    raise OSError(errno.EIO, f"journal blocks at byte {pos} of {image} are not zero")
        if os.pread(fd, bs, plan.jsb_offset) != jsb_before:
            raise OSError(errno.EIO, f"the journal superblock of {image} changed while zeroing")
    finally:
        os.close(fd)
    return sum(length for _s, length in plan.runs), nonzero


def _zero_range(fd: int, start: int, length: int, *, punch: bool = True) -> None:
    """Punch a hole (the file keeps its size), or write zeros where that is unsupported."""
    if punch and _punch_hole(fd, start, length):
        return
    zeros = bytes(_CHUNK)
    for pos in range(start, start + length, _CHUNK):
        n = min(_CHUNK, start + length - pos)
        if os.pwrite(fd, zeros[:n], pos) != n:
            raise OSError(errno.EIO, f"short write while zeroing at byte {pos}")


def _punch_hole(fd: int, start: int, length: int) -> bool:
    libc = _libc()
    if libc is None:
        return False
    rc = libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, length)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, f"fallocate(PUNCH_HOLE) failed: {os.strerror(err)}")


_LIBC: list[ctypes.CDLL | None] = []


def _libc() -> ctypes.CDLL | None:
    if not _LIBC:
        name = ctypes.util.find_library("c")
        lib = ctypes.CDLL(name, use_errno=True) if name else None
        if lib is not None and hasattr(lib, "fallocate"):
            lib.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            lib.fallocate.restype = ctypes.c_int
        else:
            lib = None
        _LIBC.append(lib)
    return _LIBC[0]


# -- bytes -------------------------------------------------------------------------------


def _read(image: Path, offset: int, n: int) -> bytes:
    with image.open("rb") as fh:
        fh.seek(offset)
        return fh.read(n)


def _u16le(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 2], "little")


def _u32le(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 4], "little")


def _u32be(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 4], "big")

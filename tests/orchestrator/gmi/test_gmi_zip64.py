"""A member over 4 GiB: ZIP64 written where .NET's ZipArchive reads it, streamed, read
back by two independent readers (Python's zipfile and Info-ZIP's unzip).

The member is a sparse file (4 GiB + 3 MiB of which ~2 MiB are real data) and is
DEFLATED at level 1 in this test: stored, the zip would hold 4 GiB of real bytes on
disk (zipfile writes every zero); deflated, the zeros shrink to ~20 MB and the test
runs in well under a minute. The ZIP64 fields are the same either way: they depend on
the uncompressed size (over 4 GiB), which is what .NET needs to find in them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from orchestrator.gmi.package import Entry, write_zip

GIB = 1024**3
MIB = 1024**2
BIG = 4 * GIB + 3 * MIB + 17
ARC = "Virtual Hard Disks/GMI Big 1.vhdx"
ZIP64_EXTRA = 0x0001
FFFF32 = 0xFFFFFFFF


def _sparse(path: Path) -> None:
    with path.open("wb") as f:
        f.truncate(BIG)
        f.write(b"GMI-HEAD" * 4096)
        f.seek(2 * GIB)
        f.write(os.urandom(MIB))
        f.seek(4 * GIB + MIB)  # data past the 4 GiB mark, where a 32-bit size would wrap
        f.write(os.urandom(MIB))


def _extra_fields(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i + 4 <= len(data):
        tag, size = struct.unpack_from("<HH", data, i)
        out[tag] = data[i + 4 : i + 4 + size]
        i += 4 + size
    return out


def _central_directory(raw: bytes) -> list[dict[str, object]]:
    eocd = raw.rfind(b"PK\x05\x06")
    (entries,) = struct.unpack_from("<H", raw, eocd + 10)
    (cd_offset,) = struct.unpack_from("<I", raw, eocd + 16)
    if cd_offset == FFFF32 or entries == 0xFFFF:  # ZIP64 end of central directory
        loc = raw.rfind(b"PK\x06\x07", 0, eocd)
        (z64_offset,) = struct.unpack_from("<Q", raw, loc + 8)
        entries, cd_offset = struct.unpack_from("<Q8xQ", raw, z64_offset + 32)
    out, i = [], cd_offset
    for _ in range(entries):
        assert raw[i : i + 4] == b"PK\x01\x02"
        (_, version_needed, flags, method, _, _, crc, csize, usize, nlen, xlen, clen, _, _, _, offset) = (
            struct.unpack_from("<HHHHHHIIIHHHHHII", raw, i + 4)
        )
        name = raw[i + 46 : i + 46 + nlen].decode()
        extra = raw[i + 46 + nlen : i + 46 + nlen + xlen]
        out.append(
            {
                "name": name,
                "version_needed": version_needed,
                "flags": flags,
                "method": method,
                "csize": csize,
                "usize": usize,
                "offset": offset,
                "extra": _extra_fields(extra),
            }
        )
        i += 46 + nlen + xlen + clen
    return out


@pytest.mark.timeout(300)
def test_member_over_4_gib_is_zip64_and_reads_back_twice(tmp_path: Path) -> None:
    if shutil.which("unzip") is None:
        pytest.skip("Info-ZIP unzip is not installed (scripts/setup.sh installs it)")
    src = tmp_path / "big.vhdx"
    _sparse(src)
    assert src.stat().st_blocks * 512 < 64 * MIB, "the test file must stay sparse"
    small = tmp_path / "small.yml"
    small.write_text('os: "Big"\n')
    dest = tmp_path / "GMI-Big-1.zip"
    written = write_zip(
        dest,
        [Entry("GMI-Big-1.yml", small), Entry("Virtual Hard Disks/"), Entry(ARC, src)],
        timestamp="2025-07-30T18:09:36Z",
        disk_compression="deflated",
        deflate_level=1,
    )
    assert dest.stat().st_size < 256 * MIB and written.size == dest.stat().st_size

    # Reader 2 (below) runs on the other core while reader 1 reads.
    tester = subprocess.Popen(["unzip", "-tq", str(dest)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    # Reader 1: Python's zipfile, streamed, CRC-32 checked at the end of the member.
    with zipfile.ZipFile(dest) as zf:
        info = zf.getinfo(ARC)
        assert info.file_size == BIG and info.compress_type == zipfile.ZIP_DEFLATED
        h = hashlib.sha256()
        with zf.open(info) as stream:
            while chunk := stream.read(8 * MIB):
                h.update(chunk)
    assert h.hexdigest() == written.members[ARC]

    # Reader 2: Info-ZIP unzip (its own ZIP64 and inflate code) lists the real size and
    # tests every member's CRC.
    listing = subprocess.run(["unzip", "-l", str(dest)], capture_output=True, text=True, check=True)
    assert str(BIG) in listing.stdout, listing.stdout
    out, _ = tester.communicate(timeout=240)
    assert tester.returncode == 0 and b"No errors detected" in out, out

    # Where .NET looks: the central directory's 32-bit sizes are 0xFFFFFFFF and the
    # ZIP64 extra field (0x0001) holds the real ones, in the order of the spec; the
    # local header has 0xFFFFFFFF sizes and both real sizes in its ZIP64 extra field.
    raw = dest.read_bytes()
    cd = {e["name"]: e for e in _central_directory(raw)}
    assert set(cd) == {"GMI-Big-1.yml", "Virtual Hard Disks/", ARC}
    big = cd[ARC]
    assert big["method"] == 8 and not int(big["flags"]) & 0x8  # deflate; sizes in the headers
    assert int(big["version_needed"]) >= 45  # 4.5: ZIP64
    assert big["usize"] == FFFF32 and big["csize"] == FFFF32
    extra = big["extra"]
    assert isinstance(extra, dict) and ZIP64_EXTRA in extra
    usize, csize = struct.unpack_from("<QQ", extra[ZIP64_EXTRA])
    assert usize == BIG and 0 < csize < 256 * MIB
    offset = int(big["offset"])
    assert raw[offset : offset + 4] == b"PK\x03\x04"
    _, _, _, _, _, _, l_csize, l_usize, nlen, xlen = struct.unpack_from("<HHHHHIIIHH", raw, offset + 4)
    assert (l_csize, l_usize) == (FFFF32, FFFF32)
    local_extra = _extra_fields(raw[offset + 30 + nlen : offset + 30 + nlen + xlen])
    assert struct.unpack("<QQ", local_extra[ZIP64_EXTRA]) == (BIG, csize)
    # Only stored and deflate, as .NET reads them.
    assert {e["method"] for e in cd.values()} <= {0, 8}

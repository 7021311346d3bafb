"""CRC-64/NVME of a package vs sha256 of the same file, in the same run.

`gmi-fsm publish` computes the zip's CRC-64/NVME (vmgenie's index field) with awscrt's
C implementation (orchestrator.gmi.hashing.crc64nvme_file). The baseline is the
sha256 every package already gets (orchestrator.gmi.hashing.sha256_file, OpenSSL's
hashlib), which runs at disk-cache speed: the CRC must not be slower. The file is
written once and read once untimed, so both timed passes read it from the page cache
(a cold read would time the disk, not the checksum). Runs alternate CRC/sha256 so a
load change hits both; the medians and the median of the per-pair ratios are printed.

For contrast, the table-driven pure-Python CRC the project used before (the same
algorithm as the test oracle, one table lookup per byte) is timed on an 8 MiB slice.

Usage: python bench/bench_crc64.py [MiB] [rounds]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.gmi.hashing import crc64nvme_file, crc64nvme_update, sha256_file  # noqa: E402

MIB = 1 << 20
POLY = 0x9A6C9329AC4BC9B5
MASK = 0xFFFFFFFFFFFFFFFF


def _table() -> list[int]:
    out = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ POLY if crc & 1 else crc >> 1
        out.append(crc)
    return out


def pure_python_crc(data: bytes) -> int:
    table, crc = _table(), MASK
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ MASK


def timed(fn, path: Path) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn(path)
    return time.perf_counter() - start


def main() -> None:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "package.zip"
        with path.open("wb") as f:
            block = os.urandom(16 * MIB)  # incompressible, like a stored VHDX
            for _ in range(size_mib // 16):
                f.write(block)
        crc64nvme_file(path)  # warm the page cache (untimed)
        crcs, shas = [], []
        for _ in range(rounds):
            crcs.append(timed(crc64nvme_file, path))
            shas.append(timed(sha256_file, path))
        ratios = [c / s for c, s in zip(crcs, shas, strict=True)]
        mb = size_mib * MIB / 1e6
        crc_med, sha_med = statistics.median(crcs), statistics.median(shas)
        print(f"file: {size_mib} MiB, {rounds} alternated rounds, load {os.getloadavg()[0]:.2f}")
        print(f"crc64nvme (awscrt): median {crc_med:.3f} s = {mb / crc_med:,.0f} MB/s")
        print(f"sha256 (hashlib):   median {sha_med:.3f} s = {mb / sha_med:,.0f} MB/s")
        print(f"crc/sha256 time: {crc_med / sha_med:.3f} (median per-pair {statistics.median(ratios):.3f})")
        data = path.read_bytes()[: 8 * MIB]
        start = time.perf_counter()
        slow = pure_python_crc(data)
        py = time.perf_counter() - start
        assert slow == crc64nvme_update(data), "pure-Python and awscrt disagree"
        print(f"pure-Python table CRC on 8 MiB: {py:.2f} s = {8 * MIB / 1e6 / py:.1f} MB/s (same value)")


if __name__ == "__main__":
    main()

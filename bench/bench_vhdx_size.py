"""VHDX size vs the bytes in use in the guest filesystems.

For each build: `fs.used_bytes` (recorded by cleanup/facts-image, `df` of / before the
zero-fill), `fs.used_bytes_all` (the same step: `df` used summed over every block-device
filesystem, i.e. / and the ESP; builds before it was recorded lack it) and the VHDX
(artifact `vhdx`) read from `gmi-fsm audit ID --format json`, plus the data the VHDX
really holds (non-zero 4 KiB blocks of its sparse raw expansion), so the gap splits into
"not in df" (ext4 journal/metadata, partition table) and "container" (VHDX headers, BAT,
1 MiB block rounding). Goal: VHDX within 10% of fs.used_bytes_all (of fs.used_bytes
when the build did not record it); the root-only ratio is printed too.

Either read finished builds:
    python bench/bench_vhdx_size.py --db EVENTS.db --build ID [--build ID2 ...]
or run builds (one per free-space mode) from the lab base disk, sequentially:
    python bench/bench_vhdx_size.py --run zero-fill,none [--lab DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

GOAL = 0.10


def audit(db: Path, build_id: str) -> dict[str, Any]:
    out = subprocess.run(
        ["gmi-fsm", "--db", str(db), "audit", build_id, "--format", "json"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    data: dict[str, Any] = json.loads(out)
    return data


def data_bytes(vhdx: Path) -> tuple[int, int]:
    """Non-zero guest data in the VHDX: (bytes in non-zero 4 KiB blocks, bytes in
    1 MiB blocks holding any of them, i.e. the payload floor of a 1 MiB-block VHDX).

    `qemu-img map` reports a VHDX as all data, so the disk is expanded to a sparse raw
    file (zero 4 KiB blocks become holes) and its extents are walked.
    """
    with tempfile.TemporaryDirectory(prefix="bench-vhdx-", dir=vhdx.parent) as d:
        raw = Path(d) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", "-S", "4k", str(vhdx), str(raw)],
                       check=True)  # fmt: skip
        size = raw.stat().st_size
        data4k = raw.stat().st_blocks * 512
        mib = 1 << 20
        blocks: set[int] = set()
        fd = os.open(raw, os.O_RDONLY)
        try:
            pos = 0
            while pos < size:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    break
                end = os.lseek(fd, start, os.SEEK_HOLE)
                blocks.update(range(start // mib, (end - 1) // mib + 1))
                pos = end
        finally:
            os.close(fd)
    return data4k, len(blocks) * mib


def measure(db: Path, build_id: str) -> dict[str, Any]:
    a = audit(db, build_id)
    facts = a["facts"]
    (vhdx,) = [x for x in a["artifacts"] if x["name"] == "vhdx"]
    used = int(facts["fs.used_bytes"])
    used_all = int(facts["fs.used_bytes_all"]) if facts.get("fs.used_bytes_all") else None
    basis = used_all or used
    size = int(vhdx["size"])
    path = Path(vhdx["path"])
    data4k, data1m = data_bytes(path) if path.exists() else (None, None)
    spec_free = next(
        (c.get("step") for c in a.get("commands", []) if c.get("step") in ("zero-fill", "fstrim")), "none"
    )
    return {
        "build_id": build_id,
        "free_space": spec_free,
        "fs_used_bytes": used,
        "fs_used_bytes_all": used_all,
        "vhdx_bytes": size,
        "vhdx_nonzero_4k_bytes": data4k,
        "vhdx_nonzero_1m_blocks_bytes": data1m,
        "journal_zeroed_bytes": int(facts.get("compact.journal_zeroed_bytes", 0)),
        "ratio": round(size / used, 3),
        "ratio_all": round(size / used_all, 3) if used_all else None,
        "goal_basis": "fs.used_bytes_all" if used_all else "fs.used_bytes",
        "within_goal": abs(size / basis - 1) <= GOAL,
        "status": a["status"],
    }


def run_builds(modes: list[str], lab: Path, work: Path) -> list[tuple[Path, str]]:
    from bench_vs_packer import run_gmi

    (base,) = lab.glob("*.qcow2")
    key = lab / "lab_ed25519"
    done = []
    for mode in modes:
        d = work / f"gmi-{mode}"
        try:
            r = run_gmi(d, base, key, free_space=mode)
            print(f"built {r['build_id']} (free_space {mode}) in {r['total_s']} s", flush=True)
        except RuntimeError as exc:  # a failed validate still leaves the VHDX and the facts
            print(f"build with free_space {mode}: {exc}", flush=True)
        from events.store import SqliteEventStore

        store = SqliteEventStore(d / "events.db", readonly=True)
        (bid,) = store.build_ids()
        store.close()
        done.append((d / "events.db", bid))
    return done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db")
    ap.add_argument("--build", action="append", default=[])
    ap.add_argument("--run", default="")
    ap.add_argument("--lab", default="")
    ap.add_argument("--work", default="/tmp/bench-vhdx")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if args.run:
        work = Path(args.work)
        lab = Path(args.lab) if args.lab else work / "lab"
        if not (lab / "lab_ed25519").exists():
            subprocess.run(
                ["gmi-fsm", "lab", "base-image", "--out", str(lab)], check=True, capture_output=True
            )
        targets = run_builds(args.run.split(","), lab, work)
    else:
        if not args.db or not args.build:
            sys.exit("give --db and --build, or --run MODES")
        targets = [(Path(args.db), b) for b in args.build]
    rows = [measure(db, b) for db, b in targets]
    for r in rows:
        mb = 1e6
        data = (
            f"{r['vhdx_nonzero_4k_bytes'] / mb:.1f} MB non-zero 4K blocks, "
            f"{r['vhdx_nonzero_1m_blocks_bytes'] / mb:.1f} MB in 1 MiB blocks"
            if r["vhdx_nonzero_4k_bytes"] is not None
            else "n/a"
        )
        all_fs = (
            f"all filesystems {r['fs_used_bytes_all'] / mb:.1f} MB, VHDX/used(all) {r['ratio_all']:.3f}"
            if r["ratio_all"] is not None
            else "all filesystems: not recorded by this build"
        )
        print(
            f"{r['build_id']} (free space: {r['free_space']}): fs used (/) {r['fs_used_bytes'] / mb:.1f} MB, "
            f"VHDX {r['vhdx_bytes'] / mb:.1f} MB (holding {data}; journal zeroed "
            f"{r['journal_zeroed_bytes'] / mb:.1f} MB), VHDX/used(/) {r['ratio']:.3f}, {all_fs} "
            f"({'within' if r['within_goal'] else 'NOT within'} {GOAL:.0%} of {r['goal_basis']})"
        )
    print(json.dumps({"benchmark": "vhdx_size",
                      "goal": f"within {GOAL:.0%} of fs.used_bytes_all (else fs.used_bytes)",
                      "loadavg_1m": round(os.getloadavg()[0], 2), "builds": rows}))  # fmt: skip


if __name__ == "__main__":
    main()

"""What checking the hash chain costs `status` and `replay`: fold(read_verified) (one
pass: a sha256 per event, the recorded head at the end) against fold(read) (the fold
alone, as before), both on the same 100,000-event build in the same run, alternated.

Prints a human summary and one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_replay import build_events

from events.chain import GENESIS_HASH
from events.store import SqliteEventStore, stamp
from states.projection import fold

ROUNDS = 7


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        store = SqliteEventStore(Path(d) / "verified.db")
        rows = stamp("bench", 0, GENESIS_HASH, build_events())
        store.insert(rows)
        n = len(rows)
        plain, verified, chain_only = [], [], []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            assert fold("bench", store.read("bench")).status == "succeeded"
            t1 = time.perf_counter()
            assert fold("bench", store.read_verified("bench")).status == "succeeded"
            t2 = time.perf_counter()
            assert store.verify("bench").ok
            t3 = time.perf_counter()
            plain.append(t1 - t0)
            verified.append(t2 - t1)
            chain_only.append(t3 - t2)
        store.close()
    p, v, c = statistics.median(plain), statistics.median(verified), statistics.median(chain_only)
    per_event_us = (v - p) / n * 1e6
    print(
        f"{n} events: fold(read) {p * 1000:.0f} ms ({n / p:,.0f}/s); fold(read_verified) {v * 1000:.0f} ms "
        f"({n / v:,.0f}/s), {v / p:.2f}x, +{per_event_us:.2f} us/event; verify (chain by position) "
        f"{c * 1000:.0f} ms"
    )
    print(
        json.dumps(
            {
                "benchmark": "verified_read",
                "events": n,
                "fold_read_ms": round(p * 1000),
                "fold_read_verified_ms": round(v * 1000),
                "ratio": round(v / p, 2),
                "extra_us_per_event": round(per_event_us, 2),
                "verify_chain_ms": round(c * 1000),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Event append through the store vs raw sqlite3 INSERT+COMMIT, same pragmas, same run.

Each append is one committed transaction (synchronous=FULL, WAL), as the engine does
for every event. Prints the ratio store/raw in events per second (>= 0.8 is the goal).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from events.chain import GENESIS_HASH
from events.model import StepFinished, event_payload
from events.store import NewEvent, SqliteEventStore

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
ROUNDS = 3


def payload() -> dict[str, object]:
    ev = StepFinished(
        stage="update", step="full-upgrade", attempt=1, outcome="succeeded", exit_code=0, duration_s=1.5
    )
    return event_payload(ev)


def bench_store(path: Path) -> float:
    store = SqliteEventStore(path)
    p = payload()
    seq, head = 0, GENESIS_HASH
    t0 = time.perf_counter()
    for _ in range(N):
        rec = store.append("bench", seq, head, [NewEvent("StepFinished", p)])
        seq, head = rec[-1].seq, rec[-1].hash
    dt = time.perf_counter() - t0
    store.close()
    return N / dt


def bench_raw(path: Path) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(
        "CREATE TABLE events (position INTEGER PRIMARY KEY, build_id TEXT NOT NULL, seq INTEGER NOT NULL,"
        " type TEXT NOT NULL, at TEXT NOT NULL, payload TEXT NOT NULL, prev_hash TEXT NOT NULL,"
        " hash TEXT NOT NULL)"
    )
    conn.execute("CREATE UNIQUE INDEX ix ON events (build_id, seq)")
    text = json.dumps(payload())
    t0 = time.perf_counter()
    for i in range(N):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO events (build_id, seq, type, at, payload, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
            ("bench", i + 1, "StepFinished", "2026-01-01T00:00:00Z", text, "0" * 64, "0" * 64),
        )
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return N / dt


def main() -> None:
    ratios = []
    for r in range(ROUNDS):
        with tempfile.TemporaryDirectory() as d:
            raw = bench_raw(Path(d) / "raw.db")
            ours = bench_store(Path(d) / "store.db")
        ratios.append(ours / raw)
        print(
            f"round {r + 1}: raw sqlite3 {raw:,.0f} ev/s, gmi-fsm store {ours:,.0f} ev/s, ratio {ours / raw:.2f}"
        )
    ratios.sort()
    print(
        json.dumps(
            {
                "benchmark": "append",
                "events": N,
                "median_ratio": round(ratios[len(ratios) // 2], 3),
                "goal": ">= 0.8",
            }
        )
    )


if __name__ == "__main__":
    main()

"""Replay (read + fold through the stage machine) of a 100,000-event build.

Writes a realistic build (12 stages, many steps, facts) in one transaction, then
times `fold(read(...))` against reading the same rows with raw sqlite3 + orjson.loads
(the floor: the same decoder, no fold). Goal: >= 200,000 events/s.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from events.chain import GENESIS_HASH
from events.model import (
    BuildRequested,
    BuildSucceeded,
    FactRecorded,
    OutputDigest,
    StageCompleted,
    StageEntered,
    StepFinished,
    StepStarted,
    event_payload,
)
from events.store import NewEvent, SqliteEventStore, stamp
from states.projection import fold
from states.stages import STAGE_NAMES

TARGET = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000


def build_events() -> list[NewEvent]:
    out = [
        BuildRequested(
            spec={"name": "bench"},
            spec_sha256="0" * 64,
            spec_path="/b.yaml",
            tool_version="0",
            requested_by="bench",
            hostname="bench",
        )
    ]
    per_stage = (TARGET - 2) // len(STAGE_NAMES) // 3
    digest = OutputDigest(sha256="a" * 64, size=100, head="ok\n")
    for stage in STAGE_NAMES:
        out.append(StageEntered(stage=stage))
        for i in range(per_stage):
            out.append(
                StepStarted(
                    stage=stage,
                    step=f"s{i}",
                    attempt=1,
                    target="guest",
                    command="true",
                    idempotent=True,
                    timeout_s=60,
                )
            )
            out.append(
                StepFinished(
                    stage=stage,
                    step=f"s{i}",
                    attempt=1,
                    outcome="succeeded",
                    exit_code=0,
                    duration_s=0.1,
                    stdout=digest,
                    stderr=None,
                )
            )
            out.append(FactRecorded(key=f"{stage}.k{i}", value="v", source=f"{stage}/s{i}"))
        out.append(StageCompleted(stage=stage))
    out.append(BuildSucceeded())
    return [NewEvent(e.type, event_payload(e)) for e in out]


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "replay.db"
        store = SqliteEventStore(path)
        events = build_events()
        rows = stamp("bench", 0, GENESIS_HASH, events)
        store.insert(rows)
        n = len(rows)
        results = []
        for _ in range(3):
            t0 = time.perf_counter()
            st = fold("bench", store.read("bench"))
            dt = time.perf_counter() - t0
            assert st.status == "succeeded", st.status
            conn = sqlite3.connect(path)
            t1 = time.perf_counter()
            for (payload,) in conn.execute("SELECT payload FROM events WHERE build_id='bench' ORDER BY seq"):
                orjson.loads(payload)
            raw = time.perf_counter() - t1
            conn.close()
            results.append((n / dt, n / raw))
        results.sort()
        ours, raw = results[1]
        print(
            f"replayed {n:,} events: {ours:,.0f} events/s (raw read+json floor {raw:,.0f}/s, "
            f"ratio {ours / raw:.2f})"
        )
        print(
            json.dumps(
                {
                    "benchmark": "replay",
                    "events": n,
                    "events_per_s": round(ours),
                    "raw_floor_per_s": round(raw),
                    "goal": ">= 200000",
                }
            )
        )


if __name__ == "__main__":
    main()

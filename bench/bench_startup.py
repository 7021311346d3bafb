"""Process start-up of `gmi-fsm --help` and `gmi-fsm status ID`, against a bare
`python -c pass` measured in the same run (the floor no CLI can beat).

Goal: under 150 ms each (lazy imports keep pydantic, structlog, sqlite-utils and
asyncssh off these paths).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = 15


def timed(argv: list[str], env: dict[str, str]) -> float:
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "GMI_FSM_DB": str(Path(d) / "events.db"), "PYTHONPATH": str(REPO)}
        spec = Path(d) / "spec.yaml"
        spec.write_text("name: bench\nos: {name: Debian, version: '12', family: apt}\nhost: {kind: local}\n")
        cli = [sys.executable, "-m", "orchestrator.cli"]
        subprocess.run([*cli, "run", str(spec)], env=env, check=True, capture_output=True)
        build = json.loads(
            subprocess.run([*cli, "list", "--json"], env=env, check=True, capture_output=True).stdout
        )[0]["build_id"]
        floor = timed([sys.executable, "-c", "pass"], env)
        help_ms = timed([*cli, "--help"], env)
        status_ms = timed([*cli, "status", build], env)
    print(
        f"python -c pass: {floor:.0f} ms; gmi-fsm --help: {help_ms:.0f} ms; gmi-fsm status: {status_ms:.0f} ms"
    )
    print(
        json.dumps(
            {
                "benchmark": "startup",
                "python_floor_ms": round(floor),
                "help_ms": round(help_ms),
                "status_ms": round(status_ms),
                "goal_ms": 150,
            }
        )
    )


if __name__ == "__main__":
    main()

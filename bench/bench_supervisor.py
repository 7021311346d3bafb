"""What containment costs: a program run under the step supervisor
(``orchestrator.procs.run``: a child subreaper that ends the program's whole tree)
against the same program started bare with ``subprocess.run``, in the same run.

Two programs: ``true`` (the fixed cost per program, which is all of it for a short
command) and ``sh -c 'sleep 0.2'`` (a program whose own time dominates, as a real
step's does). Reported: medians, the added milliseconds, and the ratio.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator import procs

RUNS = 40


def median_ms(fn) -> float:
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def main() -> None:
    for argv in (["true"], ["sh", "-c", "sleep 0.2"]):
        bare = median_ms(lambda a=argv: subprocess.run(a, capture_output=True, check=False))
        contained = median_ms(lambda a=argv: procs.run(a))
        print(
            f"{' '.join(argv):24} bare {bare:7.1f} ms  supervised {contained:7.1f} ms  "
            f"+{contained - bare:5.1f} ms  ratio {contained / bare:5.2f}"
        )


if __name__ == "__main__":
    main()

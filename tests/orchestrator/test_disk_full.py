"""A full disk while the event log is appended to: the run stops with "disk full"
(exit 14, the database's path and how to fix it), the log stays consistent (verify
passes, the last step is merely in doubt), and once space is freed the build resumes
to success.

The disk is real: a 16 MiB tmpfs mounted for the test (we run as root; where mounting
is not permitted the test is skipped, saying so). The build's own hook fills it,
exactly as a runaway step filling the disk the database lives on would, so the next
append gets ENOSPC from the kernel and SQLite reports SQLITE_FULL.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import build_ids, event_rows, run_cli, write_spec

from orchestrator.exit_codes import ExitCode


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# Fills the filesystem the database is on, unless the operator has freed it.
FILL = "if [ ! -e ../freed ]; then head -c 100000000 /dev/zero > ../filler 2>/dev/null; fi; "
OUTPUTS = {
    "event": "echo done",  # a short output: the step's outcome event is what cannot be written
    "blob": "head -c 20000 /dev/zero | tr '\\0' x",  # past the event's head: stored as a blob first
}
AFTER = {"name": "after", "stage": "update", "idempotent": True, "run": "echo after >> after.txt"}


@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_disk_full_is_reported_and_the_build_resumes_once_space_is_freed(small_disk: Path, output: str) -> None:
    work = small_disk / "w"
    db = work / "events.db"
    fill = {"name": "fill", "stage": "provision", "idempotent": True, "run": FILL + OUTPUTS[output]}
    spec = write_spec(work, [fill, AFTER], name="full")

    proc = run_cli("run", spec, db=db)

    assert proc.returncode == ExitCode.DISK_FULL, proc.stderr
    assert f"disk full: the event database {db} could not be written" in proc.stderr, proc.stderr
    assert f"free space on the filesystem that holds {work}" in proc.stderr, proc.stderr
    assert "gmi-fsm run --resume" in proc.stderr
    assert "cannot rollback" not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (small_disk / "filler").stat().st_size > 10 << 20  # the disk really was full

    (build_id,) = build_ids(db)
    # Consistent: every committed event chains, the step whose outcome could not be
    # written is in doubt (not falsely failed or done), and reads work on a full disk.
    assert run_cli("verify", build_id, db=db).returncode == 0
    types = [r[2] for r in event_rows(db, build_id)]
    assert types[-1] == "StepStarted", types

    (small_disk / "filler").unlink()
    (small_disk / "freed").touch()
    resumed = run_cli("run", "--resume", build_id, db=db)
    assert resumed.returncode == 0, resumed.stderr
    assert (work / "after.txt").read_text() == "after\n"
    assert run_cli("verify", build_id, db=db).returncode == 0

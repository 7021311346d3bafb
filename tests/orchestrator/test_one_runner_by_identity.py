"""One runner per build whatever names the database: a symlink, a hard link, a relative
path, a bind mount of the file. A second runner (or an operator's decision, or an
abort) reaching the same file by another name exits 6 with a clear message, having
read, written and sent nothing; concurrent decisions on a paused build record exactly
one decision.

Real processes throughout: the CLI as subprocesses, a hook that blocks until the test
lets it finish (so the winner is mid-step when the others arrive), a real bind mount
(we run as root; skipped where mounting is not permitted).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.cli import build_ids, count_events, event_rows, run_cli, start_cli, write_spec

from orchestrator.exit_codes import ExitCode

BLOCK = {
    "name": "block",
    "stage": "provision",
    "idempotent": True,  # the worst case: an in-doubt idempotent step would be re-run at once
    "run": "echo run >> runs.txt; touch started; while [ ! -e go ]; do sleep 0.02; done",
    "timeout_s": 60,
}
# Not idempotent, no check: in doubt after a crash, so the build pauses for a decision.
ONCE = {"name": "once", "stage": "provision", "run": "echo run >> runs.txt"}
# After the decision, whichever it was, the build blocks here holding the runner lock.
LATER = {
    "name": "later",
    "stage": "update",
    "idempotent": True,
    "run": "touch started; while [ ! -e go ]; do sleep 0.02; done",
    "timeout_s": 60,
}


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _requested(work: Path, hooks: list[dict[str, object]], kill_after: int = 1) -> tuple[Path, str]:
    db = work / "events.db"
    spec = write_spec(work, hooks, name="one")
    crash = run_cli("run", spec, db=db, env={"GMI_FSM_FAULT_KILL_AFTER_SEQ": str(kill_after)})
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    (build_id,) = build_ids(db)
    return db, build_id


def _assert_busy(rc: int, err: str, build_id: str) -> None:
    assert rc == ExitCode.BUILD_BUSY, err
    assert f"build {build_id} is being driven by another runner" in err, err
    assert "stopped before reading or sending anything" in err, err
    assert "Traceback" not in err


@pytest.fixture
def bind_mounts() -> Iterator[Callable[[Path, Path], None]]:
    mounted: list[Path] = []

    def mount(source: Path, target: Path) -> None:
        if os.geteuid() != 0:
            pytest.skip("a bind mount needs root")
        target.touch()
        proc = subprocess.run(
            ["mount", "--bind", str(source), str(target)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {proc.stderr.strip()}")
        mounted.append(target)

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def _alias(kind: str, db: Path, other: Path, bind: Callable[[Path, Path], None]) -> tuple[str, Path | None]:
    """Another name for ``db``: (the --db argument, the cwd to run in)."""
    other.mkdir()
    if kind == "symlink":
        (other / "alias.db").symlink_to(db)
        return str(other / "alias.db"), None
    if kind == "hardlink":
        os.link(db, other / "alias.db")
        return str(other / "alias.db"), None
    if kind == "relative":
        return os.path.relpath(db, other), other
    if kind == "bind-mount":
        bind(db, other / "alias.db")
        return str(other / "alias.db"), None
    raise AssertionError(kind)


KINDS = ["symlink", "hardlink", "relative", "bind-mount"]


@pytest.mark.parametrize("kind", KINDS)
def test_second_runner_by_another_name_is_refused(
    tmp_path: Path, kind: str, bind_mounts: Callable[[Path, Path], None]
) -> None:
    work = tmp_path / "w"
    db, build_id = _requested(work, [BLOCK])
    winner = start_cli("run", "--resume", build_id, db=db)
    try:
        _wait_for(work / "started")
        alias, cwd = _alias(kind, db, tmp_path / "other", bind_mounts)
        before = count_events(db)
        for argv in (
            ["run", "--resume", build_id],
            ["resume", build_id],
            ["abort", build_id],
            ["resume", build_id, "--decision", "skip"],
        ):
            rc, _out, err = _finish(start_cli("--db", alias, *argv, db=None, cwd=cwd))
            _assert_busy(rc, err, build_id)
            assert count_events(db) == before, argv  # nothing written
    finally:
        (work / "go").touch()
        rc, _out, err = _finish(winner)
    assert rc == 0, err
    assert (work / "runs.txt").read_text() == "run\n"  # the hook ran once
    types = [r[2] for r in event_rows(db, build_id)]
    assert types.count("StepStarted") == 1
    assert types[-1] == "BuildSucceeded"
    if kind == "hardlink":
        # Two names for one SQLite database in WAL mode can lose events: refused.
        proc = run_cli("verify", build_id, db=db)
        assert proc.returncode == ExitCode.STORE_ERROR, proc.stderr
        assert f"the event database {db} has 2 hard links" in proc.stderr
        assert "find / -xdev -samefile" in proc.stderr
        (tmp_path / "other" / "alias.db").unlink()
    assert run_cli("verify", build_id, db=db).returncode == 0


def test_a_reader_by_another_name_is_refused_while_the_database_is_open(
    tmp_path: Path, bind_mounts: Callable[[Path, Path], None]
) -> None:
    """SQLite keeps the write-ahead log beside the name it is given: a process reading
    the file by another name (a bind mount of the file) would read it without the log.
    While a runner has it open, such a process is refused, with the reason."""
    work = tmp_path / "w"
    db, build_id = _requested(work, [BLOCK])
    winner = start_cli("run", "--resume", build_id, db=db)
    try:
        _wait_for(work / "started")
        alias, _cwd = _alias("bind-mount", db, tmp_path / "other", bind_mounts)
        proc = run_cli("--db", alias, "status", build_id, db=None)
        assert proc.returncode == ExitCode.STORE_ERROR, proc.stderr
        assert "is open in another process under another name" in proc.stderr
        assert f"use one path to the database everywhere (here it is {alias})" in proc.stderr
        assert run_cli("status", build_id, db=db).returncode == 0  # by its own name: fine
    finally:
        (work / "go").touch()
        rc, _out, err = _finish(winner)
    assert rc == 0, err
    # Nobody has it open now: by the other name it may be read.
    assert run_cli("--db", alias, "status", build_id, db=None).returncode == 0


def _paused_build(work: Path) -> tuple[Path, str]:
    """A build paused by a crash right after the non-idempotent step's StepStarted."""
    db, build_id = _requested(work, [ONCE, LATER], kill_after=3)  # 1 requested, 2 stage entered, 3 started
    assert [r[2] for r in event_rows(db, build_id)][-1] == "StepStarted"
    paused = run_cli("run", "--resume", build_id, db=db)
    assert paused.returncode == ExitCode.BUILD_PAUSED, paused.stderr
    return db, build_id


@pytest.mark.parametrize("decisions", [("retry", "retry"), ("retry", "skip"), ("skip", "retry", "retry")])
def test_concurrent_decisions_record_exactly_one(tmp_path: Path, decisions: tuple[str, ...]) -> None:
    work = tmp_path / "w"
    db, build_id = _paused_build(work)
    procs = [
        start_cli("resume", build_id, "--decision", d, "--note", f"decider {i}", db=db)
        for i, d in enumerate(decisions)
    ]
    try:
        # The winner drives the build (a retry runs the blocking step; a skip goes on to
        # the end); every other decider must have been refused meanwhile.
        deadline = time.monotonic() + 30
        while sum(p.poll() is not None for p in procs) < len(procs) - 1:
            assert time.monotonic() < deadline, "the losing deciders did not finish"
            time.sleep(0.02)
    finally:
        (work / "go").touch()
    results = [_finish(p) for p in procs]
    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1, results
    for rc, _out, err in losers:
        _assert_busy(rc, err, build_id)
    rows = event_rows(db, build_id)
    decided = [r for r in rows if r[2] == "OperatorDecision"]
    assert len(decided) == 1, decided
    assert run_cli("verify", build_id, db=db).returncode == 0


def test_decision_while_a_runner_drives_the_build_is_refused(tmp_path: Path) -> None:
    """After a retry the build is running again: a late decider is told the build is
    busy (not "not paused"), and writes nothing."""
    work = tmp_path / "w"
    db, build_id = _paused_build(work)
    winner = start_cli("resume", build_id, "--decision", "retry", db=db)
    try:
        _wait_for(work / "started")
        before = count_events(db)
        rc, _out, err = _finish(start_cli("resume", build_id, "--decision", "skip", db=db))
        _assert_busy(rc, err, build_id)
        assert count_events(db) == before
    finally:
        (work / "go").touch()
    rc, _out, err = _finish(winner)
    assert rc == 0, err
    assert (work / "runs.txt").read_text() == "run\n"

"""Two runners on one build: exactly one drives it; the other exits 6 (BUILD_BUSY)
with a clear message, having written and sent nothing.

The hook blocks until a ``go`` file appears, so the test decides when the winner may
finish: the loser is always refused while the winner is mid-step, which is the case
the unique seq alone cannot catch (see orchestrator/runlock.py).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.cli import build_ids, count_events, event_rows, run_cli, start_cli, write_spec

from events.chain import GENESIS_HASH
from events.errors import ConcurrencyError
from events.model import BuildRequested, FactRecorded, event_payload
from events.store import NewEvent, SqliteEventStore
from orchestrator.recorder import BuildRecorder

HOOK = {
    "name": "block",
    "stage": "provision",
    "idempotent": True,  # the worst case: an in-doubt idempotent step would be re-run at once
    "run": "echo run >> runs.txt; touch started; while [ ! -e go ]; do sleep 0.02; done",
    "timeout_s": 30,
}


def _requested_build(tmp_path: Path) -> tuple[Path, Path, str]:
    """A build with only BuildRequested (the runner was killed right after it)."""
    work = tmp_path / "w"
    db = work / "events.db"
    spec = write_spec(work, [HOOK], name="two")
    crash = run_cli("run", spec, db=db, env={"GMI_FSM_FAULT_KILL_AFTER_SEQ": "1"})
    assert crash.returncode == -signal.SIGKILL
    (build_id,) = build_ids(db)
    return work, db, build_id


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def _finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _assert_loser(rc: int, err: str, build_id: str) -> None:
    assert rc == 6, err
    # The holder names its pid once it has written it; a loser that arrives in the
    # instant between the winner's flock and that write reads "a live process".
    assert (
        f"build {build_id} is being driven by another runner (pid " in err
        or f"build {build_id} is being driven by another runner (a live process)" in err
    ), err
    assert "stopped before reading or sending anything" in err
    assert f"hint: wait for it to finish, or check `gmi-fsm status {build_id}`" in err


@pytest.mark.parametrize("round_", [1, 2])
def test_second_runner_is_refused_while_the_first_is_mid_step(tmp_path: Path, round_: int) -> None:
    work, db, build_id = _requested_build(tmp_path)
    winner = start_cli("run", "--resume", build_id, db=db)
    try:
        _wait_for(work / "started")
        before = count_events(db)
        rc, _out, err = _finish(start_cli("run", "--resume", build_id, db=db))
        _assert_loser(rc, err, build_id)
        assert count_events(db) == before  # the loser wrote nothing
        # `resume` is the same door.
        rc, _out, err = _finish(start_cli("resume", build_id, db=db))
        _assert_loser(rc, err, build_id)
        assert count_events(db) == before
    finally:
        (work / "go").touch()
        rc, _out, err = _finish(winner)
    assert rc == 0, err
    assert (work / "runs.txt").read_text() == "run\n"  # the hook ran once
    types = [r[2] for r in event_rows(db, build_id)]
    assert types[-1] == "BuildSucceeded"
    assert "BuildResumed" not in types  # only the winner ever attached (its first append: seq 2)
    assert run_cli("verify", build_id, db=db).returncode == 0


@pytest.mark.parametrize("round_", [1, 2])
def test_two_runners_started_at_once(tmp_path: Path, round_: int) -> None:
    work, db, build_id = _requested_build(tmp_path)
    procs = [start_cli("run", "--resume", build_id, db=db) for _ in range(2)]
    try:
        deadline = time.monotonic() + 20
        while all(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "neither runner was refused"
            time.sleep(0.02)
        (loser,) = [p for p in procs if p.poll() is not None]
        (winner,) = [p for p in procs if p is not loser]
        rc, _out, err = _finish(loser)
        _assert_loser(rc, err, build_id)
    finally:
        (work / "go").touch()
    rc, _out, err = _finish(winner)
    assert rc == 0, err
    assert (work / "runs.txt").read_text() == "run\n"
    assert [r[2] for r in event_rows(db, build_id)].count("StepStarted") == 1


def test_stale_recorder_fails_on_its_first_append_and_writes_nothing(tmp_path: Path) -> None:
    """The second line of defence (two recorders that both read the same head): the
    unique (build_id, seq) refuses the slower one, whose state is then reloaded."""
    store = SqliteEventStore(tmp_path / "e.db")
    requested = BuildRequested(
        spec={}, spec_sha256="0" * 64, spec_path="/x", tool_version="t", requested_by="me", hostname="h"
    )
    store.append("b", 0, GENESIS_HASH, [NewEvent("BuildRequested", event_payload(requested))])
    first, second = BuildRecorder(store, "b"), BuildRecorder(store, "b")
    first.record(FactRecorded(key="a", value="1", source="t"))
    with pytest.raises(
        ConcurrencyError, match="another runner appended event seq 2 first; nothing was written"
    ):
        second.record(
            FactRecorded(key="b", value="2", source="t"), FactRecorded(key="c", value="3", source="t")
        )
    assert [e.payload.get("key") for e in store.read("b")] == [None, "a"]
    assert second.state.head_seq == 2  # reloaded from the store
    assert second.state.facts == {"a": "1"}
    assert store.verify("b").ok
    store.close()

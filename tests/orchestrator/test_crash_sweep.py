"""Crash sweep: kill the runner (SIGKILL) right after EVERY event of a build, resume,
and check the build always ends well, nothing runs twice, and every log verifies.

``GMI_FSM_FAULT_KILL_AFTER_SEQ=k`` makes the runner SIGKILL itself right after the
event with seq ``k`` is committed (orchestrator/recorder.py). Each k gets its own
database and work folder; the runs are subprocesses, a few at a time.
"""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.cli import build_ids, event_rows, run_cli, write_spec

from events.store import SqliteEventStore
from states.projection import fold

APPEND = "update/hook.after.append-line"
CHECKED = "cleanup/hook.after.checked"

HOOKS = [
    {
        "name": "prepare",
        "stage": "provision",
        "run": "mkdir -p state && echo ready > state/prep",
        "idempotent": True,
    },
    # Not idempotent and no check: running it twice would add a second line.
    {"name": "append-line", "stage": "update", "run": 'echo "appended" >> lines.txt'},
    # Not idempotent, but its check tells whether its effect is there.
    {
        "name": "checked",
        "stage": "cleanup",
        "run": "echo once >> checked.txt",
        "check": "grep -q once checked.txt",
    },
    {"name": "tidy", "stage": "seal", "run": "touch state/sealed", "idempotent": True},
]


@dataclass
class SweepResult:
    k: int
    crash_rc: int
    resume_rcs: list[int]
    paused: bool
    lines: int
    checked_lines: int
    status: str
    verify_ok: bool
    types: list[str]


def _seq_of(rows: list[tuple[str, int, str, str]], type_: str, step_id: str) -> int:
    for _bid, seq, t, payload in rows:
        p = json.loads(payload)
        if t == type_ and f"{p['stage']}/{p['step']}" == step_id and not p.get("probe"):
            return seq
    raise AssertionError(f"no {type_} for {step_id}")


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _one(base: Path, k: int) -> SweepResult:
    work = base / f"k{k:03d}"
    db = work / "events.db"
    spec = write_spec(work, HOOKS, name="sweep")
    crash = run_cli("run", spec, db=db, env={"GMI_FSM_FAULT_KILL_AFTER_SEQ": str(k)})
    (build_id,) = build_ids(db)
    rcs: list[int] = []
    paused = False
    for _ in range(4):
        proc = run_cli("run", "--resume", build_id, db=db)
        rcs.append(proc.returncode)
        if proc.returncode == 5:
            paused = True
            assert "never finished" in proc.stderr, proc.stderr
            # Before the operator decides, the in-doubt step has not been run again.
            assert _lines(work / "lines.txt") == 0
            again = run_cli("run", "--resume", build_id, db=db)
            assert again.returncode == 5, again.stderr  # still paused: nobody guessed
            proc = run_cli("resume", build_id, "--decision", "retry", "--note", "crash sweep", db=db)
            rcs.append(proc.returncode)
        if proc.returncode in (0, 10):
            break
    store = SqliteEventStore(db, readonly=True)
    try:
        state = fold(build_id, store.read(build_id))
        report = store.verify(build_id)
    finally:
        store.close()
    return SweepResult(
        k=k,
        crash_rc=crash.returncode,
        resume_rcs=rcs,
        paused=paused,
        lines=_lines(work / "lines.txt"),
        checked_lines=_lines(work / "checked.txt"),
        status=state.status,
        verify_ok=report.ok,
        types=[r[2] for r in event_rows(db, build_id)],
    )


def test_crash_after_every_event_then_resume(tmp_path: Path) -> None:
    # A clean run first: how many events, and where the non-idempotent step's are.
    clean_dir = tmp_path / "clean"
    clean_db = clean_dir / "events.db"
    proc = run_cli("run", write_spec(clean_dir, HOOKS, name="sweep"), db=clean_db)
    assert proc.returncode == 0, proc.stderr
    rows = event_rows(clean_db)
    total = len(rows)
    started = _seq_of(rows, "StepStarted", APPEND)
    finished = _seq_of(rows, "StepFinished", APPEND)
    assert finished == started + 1
    assert _lines(clean_dir / "lines.txt") == 1

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda k: _one(tmp_path, k), range(1, total + 1)))

    for r in results:
        where = f"k={r.k}: {r}"
        assert r.crash_rc == -signal.SIGKILL, where
        assert r.status == "succeeded", where
        assert r.verify_ok, where
        assert r.types[-1] == "BuildSucceeded", where
        assert r.types.count("BuildSucceeded") == 1, where
        # Every effect exactly once, however the crash fell.
        assert r.lines == 1, where
        assert r.checked_lines == 1, where
        # The build pauses exactly when the crash fell between the non-idempotent step's
        # StepStarted and StepFinished, and never otherwise.
        assert r.paused == (started <= r.k < finished), where
        if r.k == total:
            assert r.resume_rcs == [10], where  # it had already succeeded before the kill
        elif r.paused:
            assert r.resume_rcs == [5, 0], where
            assert {"BuildPaused", "OperatorDecision"} <= set(r.types), where
        else:
            assert r.resume_rcs == [0], where
            assert "BuildPaused" not in r.types, where


def test_crash_while_the_command_runs_pauses_and_skip_completes(tmp_path: Path) -> None:
    """The harder in-doubt case: the command ran (its line is written) and the runner
    died before StepFinished. Resume must not run it again; the operator says skip."""
    work = tmp_path / "w"
    db = work / "events.db"
    spec = write_spec(
        work,
        [
            {
                "name": "append-then-die",
                "stage": "update",
                # $PPID is the step supervisor, its parent the runner: kill the runner
                # after the effect, before StepFinished.
                "run": 'echo "appended" >> lines.txt; '
                'if [ ! -e died ]; then touch died; kill -9 "$(cut -d" " -f4 /proc/$PPID/stat)"; sleep 5; fi',
            }
        ],
    )
    crash = run_cli("run", spec, db=db)
    assert crash.returncode == -signal.SIGKILL
    (build_id,) = build_ids(db)
    assert _lines(work / "lines.txt") == 1
    assert [r[2] for r in event_rows(db, build_id)][-1] == "StepStarted"

    proc = run_cli("run", "--resume", build_id, db=db)
    assert proc.returncode == 5, proc.stderr
    assert "update/hook.after.append-then-die" in proc.stderr
    assert f"gmi-fsm resume {build_id} --decision" in proc.stderr
    assert _lines(work / "lines.txt") == 1

    status = run_cli("status", build_id, "--json", db=db)
    assert json.loads(status.stdout)["status"] == "paused"
    no_decision = run_cli("resume", build_id, db=db)
    assert no_decision.returncode == 5
    assert "--decision retry|skip|abort" in no_decision.stderr

    done = run_cli("resume", build_id, "--decision", "skip", "--note", "the line is there", db=db)
    assert done.returncode == 0, done.stderr
    assert _lines(work / "lines.txt") == 1
    audit = json.loads(run_cli("audit", build_id, "--format", "json", db=db).stdout)
    assert audit["status"] == "succeeded"
    assert audit["decisions"][0]["decision"] == "skip"
    assert audit["decisions"][0]["note"] == "the line is there"
    assert run_cli("verify", build_id, db=db).returncode == 0


@pytest.mark.parametrize("decision", ["abort"])
def test_paused_build_can_be_aborted(tmp_path: Path, decision: str) -> None:
    work = tmp_path / "w"
    db = work / "events.db"
    spec = write_spec(work, [{"name": "once", "stage": "provision", "run": "echo x >> lines.txt"}])
    crash = run_cli("run", spec, db=db, env={"GMI_FSM_FAULT_KILL_AFTER_SEQ": "3"})
    assert crash.returncode == -signal.SIGKILL
    (build_id,) = build_ids(db)
    assert run_cli("run", "--resume", build_id, db=db).returncode == 5
    proc = run_cli("resume", build_id, "--decision", decision, db=db)
    assert proc.returncode == 0, proc.stderr
    assert "aborted" in proc.stdout
    ended = run_cli("run", "--resume", build_id, db=db)
    assert ended.returncode == 10
    assert "has already aborted" in ended.stderr
    assert not (work / "lines.txt").exists()

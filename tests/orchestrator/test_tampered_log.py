"""Nothing runs on a log that fails verification.

An attacker edits the frozen spec in a failed build's BuildRequested (the command a
resume would run), or deletes the last events: `run --resume`, `resume`, `resume
--decision` and `abort` exit 9 naming the first bad seq, run nothing and write
nothing; `status` and `replay` say "tampered" (with the seq) and exit 9.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest
from support.cli import build_ids, count_events, run_cli, write_spec

from orchestrator.exit_codes import ExitCode

FAIL_ONCE = {"name": "gate", "stage": "provision", "run": "test -e ok"}  # fails until ok exists
ONCE = {"name": "once", "stage": "provision", "run": "echo run >> runs.txt"}


@pytest.fixture
def failed(tmp_path: Path) -> tuple[Path, str]:
    """A failed build of its own (hooks run in the spec's folder: each test needs its own)."""
    work = tmp_path / "w"
    db = work / "events.db"
    proc = run_cli("run", write_spec(work, [FAIL_ONCE], name="tamper"), "--json", db=db)
    assert proc.returncode == ExitCode.BUILD_FAILED, proc.stderr
    _fold_wal(db)
    return db, json.loads(proc.stdout)["build_id"]


@pytest.fixture
def paused(tmp_path: Path) -> tuple[Path, str]:
    work = tmp_path / "w"
    db = work / "events.db"
    crash = run_cli(
        "run", write_spec(work, [ONCE], name="tamper"), db=db, env={"GMI_FSM_FAULT_KILL_AFTER_SEQ": "3"}
    )
    assert crash.returncode == -signal.SIGKILL
    (build_id,) = build_ids(db)
    assert run_cli("run", "--resume", build_id, db=db).returncode == ExitCode.BUILD_PAUSED
    _fold_wal(db)
    return db, build_id


def _fold_wal(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _edit_spec_command(db: Path) -> int:
    """Replace the hook's command in the frozen spec (seq 1) by one that leaves a mark."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET payload = replace(payload, 'test -e ok', 'touch pwned') WHERE seq = 1")
    assert conn.total_changes == 1
    conn.close()
    return 1


def _delete_last(db: Path) -> int:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_delete")
    (n,) = conn.execute("SELECT MAX(seq) FROM events").fetchone()
    conn.execute("DELETE FROM events WHERE seq = ?", (n,))
    conn.close()
    return n


TAMPERS = {"edit-spec": _edit_spec_command, "delete-last": _delete_last}
WRITES = {
    "run --resume": ["run", "--resume", "{id}"],
    "resume": ["resume", "{id}"],
    "abort": ["abort", "{id}"],
    "abort --keep": ["abort", "{id}", "--keep"],
    "run --resume --update-spec": ["run", "{spec}", "--resume", "{id}", "--update-spec"],
}


@pytest.mark.parametrize("command", sorted(WRITES))
@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_no_command_runs_on_a_tampered_log(
    failed: tuple[Path, str], tmp_path: Path, command: str, tamper: str
) -> None:
    db, build_id = failed
    work = db.parent
    spec = write_spec(work, [FAIL_ONCE], name="tamper", filename="again.yaml")
    bad_seq = TAMPERS[tamper](db)
    before = count_events(db)
    argv = [a.format(id=build_id, spec=spec) for a in WRITES[command]]

    proc = run_cli(*argv, db=db)

    assert proc.returncode == ExitCode.VERIFY_FAILED, (proc.returncode, proc.stderr)
    assert f"build {build_id}: the event log fails verification at seq {bad_seq}" in proc.stderr
    assert "nothing was run or written" in proc.stderr
    assert f"`gmi-fsm verify {build_id}`" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (work / "pwned").exists()
    assert count_events(db) == before


@pytest.mark.parametrize("decision", ["retry", "skip", "abort"])
def test_no_decision_is_recorded_on_a_tampered_log(
    paused: tuple[Path, str], tmp_path: Path, decision: str
) -> None:
    db, build_id = paused
    work = db.parent
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET payload = replace(payload, 'echo run', 'touch pwned') WHERE seq = 1")
    conn.close()
    before = count_events(db)

    proc = run_cli("resume", build_id, "--decision", decision, db=db)

    assert proc.returncode == ExitCode.VERIFY_FAILED, proc.stderr
    assert "the event log fails verification at seq 1" in proc.stderr
    assert not (work / "pwned").exists()
    assert not (work / "runs.txt").exists()
    assert count_events(db) == before


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_status_and_replay_say_tampered(failed: tuple[Path, str], tmp_path: Path, tamper: str) -> None:
    db, build_id = failed
    bad_seq = TAMPERS[tamper](db)
    for command in (["status", build_id], ["replay", build_id], ["replay", build_id, "--until", "1"]):
        text = run_cli(*command, db=db)
        assert text.returncode == ExitCode.VERIFY_FAILED, (command, text.stderr)
        assert f"build {build_id}: the event log is tampered: first bad seq {bad_seq}" in text.stderr, (
            text.stderr
        )
        assert text.stdout == ""
        as_json = run_cli(*command, "--json", db=db)
        assert as_json.returncode == ExitCode.VERIFY_FAILED
        data = json.loads(as_json.stdout)
        assert data["ok"] is False and data["tampered"] is True
        assert data["first_bad_seq"] == bad_seq
        assert data["reason"]

"""A local build runs to success, and every read command shows it (CLI as a subprocess,
real SQLite file)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from support.cli import cli_json, run_cli, write_spec

from states.stages import STAGE_NAMES


def test_local_build_succeeds_and_every_read_command_shows_it(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    spec = write_spec(
        tmp_path / "work",
        [
            {
                "name": "greet",
                "stage": "provision",
                "run": 'echo "hello $1" | tee -a "$2"',
                "args": ["world", "x.txt"],
            },
            {"name": "facts", "stage": "document", "when": "before", "run": "echo built=yes; echo oops >&2"},
        ],
        name="hello-local",
    )
    proc = run_cli("run", spec, "--json", db=db)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    build_id = result["build_id"]
    assert result == {
        "build_id": build_id,
        "outcome": "succeeded",
        "stage": "validate",
        "message": "",
        "exit_code": 0,
    }
    assert build_id.startswith("hello-local-")
    assert (tmp_path / "work" / "x.txt").read_text() == "hello world\n"  # hooks run in the spec's folder
    # The progress log on stderr is JSON lines.
    log_lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(r["event"] == "step finished" and r["step"] == "provision/hook.after.greet" for r in log_lines)

    listed = cli_json("list", db=db)
    assert [r["build_id"] for r in listed] == [build_id]
    assert listed[0]["last_event"] == "BuildSucceeded"
    n_events = listed[0]["events"]
    assert n_events == 1 + 2 * len(STAGE_NAMES) + 2 * 2 + 1

    status = cli_json("status", build_id, db=db)
    assert status["status"] == "succeeded"
    assert status["completed_stages"] == list(STAGE_NAMES)
    assert status["steps_done"] == 2
    assert status["in_doubt"] == []
    assert status["runs"] == 1
    assert status["events"] == n_events

    history = cli_json("history", build_id, db=db)
    assert [e["seq"] for e in history] == list(range(1, n_events + 1))
    assert history[0]["type"] == "BuildRequested"
    assert history[-1]["type"] == "BuildSucceeded"
    assert history[-1]["hash"] == status["head_hash"]
    started = [e for e in history if e["type"] == "StepStarted"]
    assert [(e["stage"], e["step"]) for e in started] == [
        ("provision", "hook.after.greet"),
        ("document", "hook.before.facts"),
    ]
    # Write-ahead: each StepStarted comes right before its StepFinished.
    for e in started:
        assert history[e["seq"]]["type"] == "StepFinished"

    replay = cli_json("replay", build_id, db=db)
    assert replay["ok"] is True
    assert replay["status"] == "succeeded"
    assert replay["until_seq"] == n_events
    assert replay["completed_stages"] == list(STAGE_NAMES)
    halfway = cli_json("replay", build_id, "--until", "5", db=db)
    assert halfway["status"] == "provision"
    assert halfway["stage_complete"] is True

    verify = cli_json("verify", build_id, db=db)
    assert verify == [
        {
            "build_id": build_id,
            "ok": True,
            "events": n_events,
            "first_bad_seq": None,
            "reason": "",
            "head_hash": status["head_hash"],
            "problems": [],
            "blobs_checked": 0,  # every output fitted in its event
            "consulted": [],  # a local build writes no package
            "against": None,
        }
    ]
    assert cli_json("verify", "--all", db=db)[0]["ok"] is True
    text = run_cli("verify", build_id, db=db)
    assert text.returncode == 0
    assert text.stdout.startswith(f"ok    {build_id}: {n_events} events")

    audit = cli_json("audit", build_id, db=db)
    assert audit == json.loads(run_cli("audit", build_id, "--format", "json", db=db).stdout)
    assert audit["status"] == "succeeded"
    assert audit["chain"] == {"ok": True, "first_bad_seq": None, "reason": ""}
    assert [c["step"] for c in audit["commands"]] == ["hook.after.greet", "hook.before.facts"]
    greet, facts = audit["commands"]
    assert greet["command"] == 'echo "hello $1" | tee -a "$2"'
    assert greet["args"] == ["world", "x.txt"]
    assert greet["exit_code"] == 0
    assert greet["outcome"] == "succeeded"
    assert greet["stdout"] == {"sha256": hashlib.sha256(b"hello world\n").hexdigest(), "size": 12}
    assert facts["stderr"] == {"sha256": hashlib.sha256(b"oops\n").hexdigest(), "size": 5}
    assert [r["kind"] for r in audit["runs"]] == ["BuildRequested"]
    assert [s["stage"] for s in audit["stages"]] == list(STAGE_NAMES)

    md = run_cli("audit", build_id, db=db)
    assert md.returncode == 0
    assert md.stdout.startswith(f"# Audit of build `{build_id}`")
    assert "- Status: **succeeded**" in md.stdout
    assert "chain intact" in md.stdout
    assert "| 3 | provision | hook.after.greet | 1 | local | 0 | succeeded |" in md.stdout

    # The text forms work too.
    assert build_id in run_cli("list", db=db).stdout
    assert "status     succeeded" in run_cli("status", build_id, db=db).stdout
    assert "BuildSucceeded" in run_cli("history", build_id, db=db).stdout
    assert "every move legal" in run_cli("replay", build_id, db=db).stdout

    # Nothing left to do: a succeeded build is not run again.
    again = run_cli("run", "--resume", build_id, db=db)
    assert again.returncode == 10
    assert "has already succeeded" in again.stderr
    assert cli_json("status", build_id, db=db)["events"] == n_events


def test_a_failed_step_fails_the_build_and_resume_finishes_it(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    work = tmp_path / "work"
    spec = write_spec(
        work,
        [{"name": "needs-flag", "stage": "update", "run": "test -e flag || { echo no flag >&2; exit 3; }"}],
    )
    proc = run_cli("run", spec, db=db)
    assert proc.returncode == 4, proc.stderr
    assert "failed in update" in proc.stderr
    assert "no flag" in proc.stderr  # the last line of stderr is in the reason
    assert "gmi-fsm run --resume" in proc.stderr
    (build_id,) = [r["build_id"] for r in cli_json("list", db=db)]
    status = cli_json("status", build_id, db=db)
    assert status["status"] == "failed"
    assert status["stage"] == "update"
    (work / "flag").touch()
    proc = run_cli("run", "--resume", build_id, db=db)
    assert proc.returncode == 0, proc.stderr
    status = cli_json("status", build_id, db=db)
    assert status["status"] == "succeeded"
    assert status["runs"] == 2
    audit = cli_json("audit", build_id, db=db)
    assert [(c["attempt"], c["exit_code"]) for c in audit["commands"]] == [(1, 3), (2, 0)]
    assert cli_json("verify", build_id, db=db)[0]["ok"] is True

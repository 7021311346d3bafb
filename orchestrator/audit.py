"""How an image was made: every command with its target, exit status, duration and
output digests; the facts; the artifacts; the runs and decisions. Computed from the
events alone."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Any

from events.store import ChainReport, RecordedEvent
from orchestrator.markdown import cell, code, code_cell, fence, num, plain
from states.projection import BuildState


def audit_report(state: BuildState, events: Iterable[RecordedEvent], chain: ChainReport) -> dict[str, Any]:
    commands: list[dict[str, Any]] = []
    open_: dict[tuple[str, str, int, bool], dict[str, Any]] = {}
    stages: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None  # the step whose programs are being recorded
    for ev in events:
        p = ev.payload
        if ev.type in ("BuildRequested", "BuildResumed"):
            runs.append(
                {
                    "seq": ev.seq,
                    "at": ev.at,
                    "kind": ev.type,
                    "by": p.get("requested_by") or p.get("resumed_by"),
                    "hostname": p.get("hostname"),
                    "tool_version": p.get("tool_version"),
                }
            )
        elif ev.type == "StageEntered":
            stages.append({"stage": p["stage"], "entered_at": ev.at, "completed_at": None})
        elif ev.type == "StageCompleted" and stages:
            stages[-1]["completed_at"] = ev.at
        elif ev.type == "StepStarted":
            row = {
                "seq": ev.seq,
                "stage": p["stage"],
                "step": p["step"],
                "attempt": p["attempt"],
                "target": p["target"],
                "command": p["command"],
                "args": p.get("args", []),
                "params": p.get("params", {}),
                "kind": "probe" if p.get("probe") else "step",
                "started_at": ev.at,
                "finished_at": None,
                "outcome": "in doubt",
                "exit_code": None,
                "duration_s": None,
                "stdout": None,
                "stderr": None,
                "error": "",
                "subcommands": [],
            }
            open_[(p["stage"], p["step"], p["attempt"], bool(p.get("probe")))] = row
            current = row
            commands.append(row)
        elif ev.type == "SubcommandStarted" and current is not None:
            current["subcommands"].append(
                {
                    "index": p["index"],
                    "argv": p["argv"],
                    "cwd": p.get("cwd", ""),
                    "started_at": ev.at,
                    "exit_code": None,
                    "duration_s": None,
                    "stdout": None,
                    "stderr": None,
                    "error": "",
                    "note": "",
                    "finished": False,
                }
            )
        elif ev.type == "SubcommandFinished" and current is not None:
            for sub in current["subcommands"]:
                if sub["index"] == p["index"]:
                    sub.update(
                        exit_code=p.get("exit_code"),
                        duration_s=p.get("duration_s"),
                        stdout=_digest(p.get("stdout")),
                        stderr=_digest(p.get("stderr")),
                        error=p.get("error", ""),
                        note=p.get("note", ""),
                        finished=True,
                    )
        elif ev.type == "StepFinished":
            key = (p["stage"], p["step"], p["attempt"], bool(p.get("probe")))
            if key not in open_:  # already_done after an in-doubt attempt has its own row
                continue
            row = open_.pop(key)
            row.update(
                finished_at=ev.at,
                outcome=p["outcome"],
                exit_code=p.get("exit_code"),
                duration_s=p.get("duration_s"),
                error=p.get("error", ""),
                stdout=_digest(p.get("stdout")),
                stderr=_digest(p.get("stderr")),
            )
        elif ev.type == "OperatorDecision":
            decisions.append({"seq": ev.seq, "at": ev.at, **p})
    return {
        "build_id": state.build_id,
        "status": state.status,
        "stage": state.stage,
        "reason": state.reason,
        "spec_sha256": state.spec_sha256,
        "spec_path": state.spec_path,
        "requested_by": state.requested_by,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "events": state.events,
        "head_hash": state.head_hash,
        "chain": {"ok": chain.ok, "first_bad_seq": chain.first_bad_seq, "reason": chain.reason},
        "runs": runs,
        "stages": stages,
        "commands": commands,
        "decisions": decisions,
        "facts": dict(sorted(state.facts.items())),
        "artifacts": list(state.artifacts.values()),
    }


def _subcommand_end(sub: dict[str, Any]) -> str:
    """How a program ended, as Markdown: its note and error are content (escaped)."""
    if not sub["finished"]:
        return "started, never finished (in doubt)"
    if sub["note"]:
        return plain(sub["note"])
    if sub["exit_code"] is None:
        return f"no exit status: {plain(sub['error'])}"
    out = sub["stdout"]
    digest = ""
    if out and out["size"]:
        digest = f", stdout sha256 {code(out['sha256'][:12])} ({num(out['size'])} bytes)"
    return f"exit {num(sub['exit_code'])} in {sub['duration_s']:.2f} s{digest}"


def _digest(d: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"sha256": d["sha256"], "size": d["size"]} if d else None


def audit_markdown(report: dict[str, Any]) -> str:
    """The report as markdown. Every value from the events goes through
    ``orchestrator.markdown``: a command, an output, a fact or a note can hold fences,
    pipes, newlines, HTML or links, and must not change the report's structure."""
    chain = report["chain"]
    status = f"- Status: **{plain(report['status'])}**" + (
        f" ({code(report['reason'])})" if report["reason"] else ""
    )
    lines = [
        f"# Audit of build {code(report['build_id'])}",
        "",
        status,
        f"- Requested by {code(report['requested_by'])} at {code(report['created_at'])}; "
        f"last event {code(report['updated_at'])}",
        f"- Spec: {code(report['spec_path'])} (sha256 {code(report['spec_sha256'])})",
        f"- Events: {num(report['events'])}; head hash {code(report['head_hash'])}; chain "
        + ("intact" if chain["ok"] else f"**BROKEN at seq {num(chain['first_bad_seq'])}**"),
        f"- Runs: {len(report['runs'])}",
        "",
        "## Commands",
        "",
        "| seq | stage | step | try | target | exit | outcome | s | stdout sha256 (bytes) |",
        "|---:|---|---|---:|---|---:|---|---:|---|",
    ]
    for c in report["commands"]:
        out = c["stdout"]
        digest = f"{code_cell(str(out['sha256'])[:12])} ({num(out['size'], cell=True)})" if out else ""
        exit_code = "" if c["exit_code"] is None else num(c["exit_code"], cell=True)
        dur = "" if c["duration_s"] is None else num(_seconds(c["duration_s"]), cell=True)
        name = cell(c["step"]) + (" (probe)" if c["kind"] == "probe" else "")
        cells = [num(c["seq"], cell=True), cell(c["stage"]), name, num(c["attempt"], cell=True)]
        cells += [cell(c["target"]), exit_code, cell(c["outcome"]), dur, digest]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "### Command text", ""]
    for c in report["commands"]:
        body = str(c["command"])
        args = " ".join(repr(a) for a in c["args"])
        params = ", ".join(f"{k}={v!r}" for k, v in c["params"].items())
        if args:
            body += f"\n# args: {args}"
        if params:
            body += f"\n# params: {params}"
        step_id = f"{c['stage']}/{c['step']}"
        lines.append(f"- seq {num(c['seq'])} {code(step_id)} on {code(c['target'])}:")
        lines.append("")
        lines.extend(fence(body, indent="  "))
        for sub in c.get("subcommands", []):
            lines.append(f"  - program {num(sub['index'])}: {_subcommand_end(sub)}")
            lines.append("")
            lines.extend(fence(shlex.join(str(a) for a in sub["argv"]), indent="    "))
    lines += ["", "## Facts", ""]
    lines += [f"- {code(k)}: {code(v)}" for k, v in report["facts"].items()] or ["(none)"]
    lines += ["", "## Artifacts", ""]
    lines += [_artifact_line(a) for a in report["artifacts"]] or ["(none)"]
    if report["decisions"]:
        lines += ["", "## Operator decisions", ""]
        lines += [_decision_line(d) for d in report["decisions"]]
    return "\n".join(lines) + "\n"


def _artifact_line(a: dict[str, Any]) -> str:
    what = f"{code(a.get('name'))} {code(a.get('kind'))}: {code(a.get('path'))}"
    return f"- {what} sha256 {code(a.get('sha256'))} ({num(a.get('size'))} bytes)"


def _decision_line(d: dict[str, Any]) -> str:
    step_id = f"{d['stage']}/{d['step']}"
    line = f"- seq {num(d['seq'])} {code(d['at'])}: {code(d['decision'])} {code(step_id)}"
    return f"{line} by {code(d['operator'])} {code(d.get('note', ''))}".rstrip()


def _seconds(value: object) -> object:
    return f"{value:.2f}" if isinstance(value, int | float) else value

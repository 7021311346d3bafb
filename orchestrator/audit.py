"""How an image was made: every command with its target, exit status, duration and
output digests; the facts; the artifacts; the runs and decisions. Computed from the
events alone."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Any

from events.store import ChainReport, RecordedEvent
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
    if not sub["finished"]:
        return "started, never finished (in doubt)"
    if sub["note"]:
        return str(sub["note"])
    if sub["exit_code"] is None:
        return f"no exit status: {sub['error']}"
    out = sub["stdout"]
    digest = f", stdout sha256 `{out['sha256'][:12]}` ({out['size']} bytes)" if out and out["size"] else ""
    return f"exit {sub['exit_code']} in {sub['duration_s']:.2f} s{digest}"


def _digest(d: dict[str, Any] | None) -> dict[str, Any] | None:
    return {"sha256": d["sha256"], "size": d["size"]} if d else None


def audit_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Audit of build `{report['build_id']}`",
        "",
        f"- Status: **{report['status']}**" + (f" ({report['reason']})" if report["reason"] else ""),
        f"- Requested by {report['requested_by']} at {report['created_at']}; "
        f"last event {report['updated_at']}",
        f"- Spec: `{report['spec_path']}` (sha256 `{report['spec_sha256']}`)",
        f"- Events: {report['events']}; head hash `{report['head_hash']}`; chain "
        + ("intact" if report["chain"]["ok"] else f"**BROKEN at seq {report['chain']['first_bad_seq']}**"),
        f"- Runs: {len(report['runs'])}",
        "",
        "## Commands",
        "",
        "| seq | stage | step | try | target | exit | outcome | s | stdout sha256 (bytes) |",
        "|---:|---|---|---:|---|---:|---|---:|---|",
    ]
    for c in report["commands"]:
        out = c["stdout"]
        digest = f"`{out['sha256'][:12]}` ({out['size']})" if out else ""
        exit_code = "" if c["exit_code"] is None else str(c["exit_code"])
        dur = "" if c["duration_s"] is None else f"{c['duration_s']:.2f}"
        name = c["step"] + (" (probe)" if c["kind"] == "probe" else "")
        lines.append(
            f"| {c['seq']} | {c['stage']} | {name} | {c['attempt']} | {c['target']} | {exit_code} "
            f"| {c['outcome']} | {dur} | {digest} |"
        )
    lines += ["", "### Command text", ""]
    for c in report["commands"]:
        args = " ".join(repr(a) for a in c["args"])
        params = ", ".join(f"{k}={v!r}" for k, v in c["params"].items())
        lines.append(f"- seq {c['seq']} `{c['stage']}/{c['step']}` on {c['target']}:")
        lines.append("")
        lines.append("  ```")
        lines.extend("  " + ln for ln in str(c["command"]).splitlines() or [""])
        if args:
            lines.append(f"  # args: {args}")
        if params:
            lines.append(f"  # params: {params}")
        lines.append("  ```")
        for sub in c.get("subcommands", []):
            lines.append(f"  - program {sub['index']}: {_subcommand_end(sub)}")
            lines.append("")
            lines.append("    ```")
            lines.append("    " + shlex.join(str(a) for a in sub["argv"]))
            lines.append("    ```")
    lines += ["", "## Facts", ""]
    lines += [f"- `{k}`: {v}" for k, v in report["facts"].items()] or ["(none)"]
    lines += ["", "## Artifacts", ""]
    lines += [
        f"- `{a['name']}` {a['kind']}: `{a['path']}` sha256 `{a['sha256']}` ({a['size']} bytes)"
        for a in report["artifacts"]
    ] or ["(none)"]
    if report["decisions"]:
        lines += ["", "## Operator decisions", ""]
        lines += [
            f"- seq {d['seq']} {d['at']}: {d['decision']} `{d['stage']}/{d['step']}` by "
            f"{d['operator']} {d.get('note', '')}"
            for d in report["decisions"]
        ]
    return "\n".join(lines) + "\n"

"""The read commands: list, status, history, replay, audit, verify. None of them
writes; each has --json."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.errors import user_errors
from orchestrator.cli.main import cli, emit_json, fail, json_option, store_for
from orchestrator.exit_codes import ExitCode

if TYPE_CHECKING:
    from orchestrator.integrity import BuildVerification


@cli.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the builds in the database."""
    with user_errors():
        rows = store_for(ctx, readonly=True).builds() if ctx.obj.exists() else []
    if as_json:
        emit_json(
            [
                {
                    "build_id": r.build_id,
                    "created_at": r.first_at,
                    "updated_at": r.last_at,
                    "events": r.head_seq,
                    "last_event": r.last_type,
                }
                for r in rows
            ]
        )
        return
    if not rows:
        click.echo(f"no builds in {ctx.obj}")
        return
    click.echo(f"{'BUILD':44} {'EVENTS':>6}  {'LAST EVENT':18} UPDATED")
    for r in rows:
        click.echo(f"{r.build_id:44} {r.head_seq:>6}  {r.last_type:18} {r.last_at}")


@cli.command()
@click.argument("build_id", metavar="ID")
@json_option
@click.pass_context
def status(ctx: click.Context, build_id: str, as_json: bool) -> None:
    """Show where build ID is, and what it needs to go on."""
    from orchestrator import builds  # noqa: PLC0415

    with user_errors(), tampered_report(build_id, as_json):
        st = builds.load_state(store_for(ctx, readonly=True), build_id)
    data = {
        "build_id": st.build_id,
        "status": st.status,
        "stage": st.stage,
        "stage_complete": st.stage_done,
        "reason": st.reason,
        "paused_step": st.paused_step,
        "in_doubt": st.in_doubt,
        "completed_stages": st.completed_stages,
        "steps_done": sum(1 for s in st.steps.values() if s.status == "done"),
        "runs": st.runs,
        "events": st.events,
        "head_hash": st.head_hash,
        "created_at": st.created_at,
        "updated_at": st.updated_at,
        "artifacts": sorted(st.artifacts),
    }
    if as_json:
        emit_json(data)
        return
    click.echo(f"build      {st.build_id}")
    click.echo(
        f"status     {st.status}" + (f" (in stage {st.stage})" if st.stage and st.stage != st.status else "")
    )
    if st.reason:
        click.echo(f"reason     {st.reason}")
    click.echo(f"stages     {len(st.completed_stages)} of 12 complete")
    click.echo(
        f"steps      {data['steps_done']} done"
        + (f", in doubt: {', '.join(st.in_doubt)}" if st.in_doubt else "")
    )
    click.echo(f"events     {st.events} (head {st.head_hash[:16]}…), runs {st.runs}")
    click.echo(f"updated    {st.updated_at}")
    nxt = {
        "paused": f"gmi-fsm resume {st.build_id} --decision retry|skip|abort",
        "failed": f"gmi-fsm run --resume {st.build_id}",
        "succeeded": f"gmi-fsm audit {st.build_id}",
        "aborted": "",
    }.get(st.status, f"gmi-fsm run --resume {st.build_id}  (if no runner is active)")
    if nxt:
        click.echo(f"next       {nxt}")


@cli.command()
@click.argument("build_id", metavar="ID")
@json_option
@click.pass_context
def history(ctx: click.Context, build_id: str, as_json: bool) -> None:
    """Show the timeline of build ID: every event, in order."""
    from orchestrator import builds  # noqa: PLC0415

    with user_errors():
        events = list(builds.history(store_for(ctx, readonly=True), build_id))
    if as_json:
        emit_json([{"seq": e.seq, "at": e.at, "type": e.type, **e.payload, "hash": e.hash} for e in events])
        return
    for e in events:
        click.echo(f"{e.seq:>5} {e.at[:23]} {e.type:17} {_summary(e.type, e.payload)}")


def _summary(type_: str, p: dict[str, object]) -> str:
    if type_ in ("StepStarted", "StepFinished"):
        tag = " (probe)" if p.get("probe") else ""
        if type_ == "StepStarted":
            return f"{p['stage']}/{p['step']}{tag} #{p['attempt']} on {p['target']}"
        return (
            f"{p['stage']}/{p['step']}{tag} #{p['attempt']} {p['outcome']} exit={p.get('exit_code')} "
            f"{p.get('duration_s')}s {p.get('error') or ''}"
        ).rstrip()
    if type_ in ("StageEntered", "StageCompleted"):
        return str(p["stage"])
    if type_ == "FactRecorded":
        return f"{p['key']} = {str(p['value'])[:80]}"
    if type_ == "ArtifactRecorded":
        return f"{p['name']} {p['path']} sha256={str(p['sha256'])[:16]}…"
    if type_ == "BuildRequested":
        return f"spec {p['spec_path']} by {p['requested_by']}@{p['hostname']}"
    if type_ == "SubcommandStarted":
        argv = " ".join(str(a) for a in p["argv"])  # type: ignore[attr-defined]
        return f"{p['stage']}/{p['step']} #{p['attempt']} program {p['index']}: {argv[:100]}"
    if type_ == "SubcommandFinished":
        end = p.get("note") or f"exit={p.get('exit_code')} {p.get('duration_s')}s {p.get('error') or ''}"
        return f"{p['stage']}/{p['step']} #{p['attempt']} program {p['index']}: {end}".rstrip()
    if type_ == "StepProgress":
        return f"{p['stage']}/{p['step']} #{p['attempt']} {p['values']}"
    keys = ("reason", "decision", "signal", "from_status", "step")
    return " ".join(f"{k}={p[k]}" for k in keys if k in p)


@cli.command()
@click.argument("build_id", metavar="ID")
@click.option(
    "--until", "until_seq", type=click.IntRange(min=1), help="Stop after this event seq (1 or more)."
)
@json_option
@click.pass_context
def replay(ctx: click.Context, build_id: str, until_seq: int | None, as_json: bool) -> None:
    """Rebuild the state of build ID through the stage machine, checking every move."""
    from events.errors import CorruptStreamError  # noqa: PLC0415
    from orchestrator import builds  # noqa: PLC0415

    with user_errors(), tampered_report(build_id, as_json):
        store = store_for(ctx, readonly=True)
        try:
            st = builds.replay(store, build_id, until_seq)
        except CorruptStreamError as exc:
            if as_json:
                emit_json({"build_id": build_id, "ok": False, "first_bad_seq": exc.seq, "reason": exc.reason})
                sys.exit(int(ExitCode.VERIFY_FAILED))
            fail(str(exc), ExitCode.VERIFY_FAILED)
    data = {
        "build_id": build_id,
        "ok": True,
        "until_seq": st.head_seq,
        "status": st.status,
        "stage": st.stage,
        "stage_complete": st.stage_done,
        "completed_stages": st.completed_stages,
        "in_doubt": st.in_doubt,
        "facts": st.facts,
    }
    if as_json:
        emit_json(data)
        return
    click.echo(f"replayed {st.events} events of {build_id} through the machine: every move legal")
    click.echo(f"state at seq {st.head_seq}: {st.status}" + (f" (stage {st.stage})" if st.stage else ""))


@cli.command()
@click.argument("build_id", metavar="ID")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@json_option
@click.pass_context
def audit(ctx: click.Context, build_id: str, fmt: str, as_json: bool) -> None:
    """How build ID's image was made: commands, exit statuses, durations, output
    digests, facts and artifacts."""
    from orchestrator import builds  # noqa: PLC0415
    from orchestrator.audit import audit_markdown, audit_report  # noqa: PLC0415

    with user_errors():
        store = store_for(ctx, readonly=True)
        st = builds.load_state(store, build_id, verified=False)  # it reports a broken chain
        report = audit_report(st, store.read(build_id), store.verify(build_id))
    if as_json or fmt == "json":
        emit_json(report)
    else:
        click.echo(audit_markdown(report), nl=False)


@cli.command()
@click.argument("build_id", metavar="ID", required=False)
@click.option("--all", "all_", is_flag=True, help="Verify every build in the database.")
@click.option(
    "--against",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also compare the build with this exported event log (a package's .events.jsonl), "
    "naming the first divergence.",
)
@json_option
@click.pass_context
def verify(ctx: click.Context, build_id: str | None, all_: bool, against: Path | None, as_json: bool) -> None:
    """Check build ID (or --all): its hash chain (any edited, deleted, inserted or
    reordered event), its recorded head, its stored outputs, and the records of its
    head in its package; the first bad seq is named."""
    from orchestrator import builds  # noqa: PLC0415
    from orchestrator.log_compare import WrongLog  # noqa: PLC0415

    if bool(build_id) == all_:
        fail("give a build ID or --all", ExitCode.USAGE)
    if against is not None and build_id is None:
        fail("--against needs a build ID (it compares one build)", ExitCode.USAGE)
    with user_errors():
        try:
            reports = builds.verify(store_for(ctx, readonly=True), build_id, against=against)
        except WrongLog as exc:
            fail(str(exc), ExitCode.USAGE, "give the .events.jsonl a package of this build carries")
    if as_json:
        emit_json([_verification_json(r) for r in reports])
    else:
        for r in reports:
            _print_verification(r)
    if any(not r.ok for r in reports):
        sys.exit(int(ExitCode.VERIFY_FAILED))


def _verification_json(r: BuildVerification) -> dict[str, Any]:
    against = None
    if r.against is not None:
        d = r.against.first_divergence
        against = {
            "file": r.against.file,
            "events": r.against.events,
            "first_divergence": None if d is None else {"seq": d.seq, "kind": d.kind, "detail": d.detail},
        }
    return {
        "build_id": r.build_id,
        "ok": r.ok,
        "events": r.chain.events,
        "first_bad_seq": r.first_bad_seq,
        "reason": r.reason,
        "head_hash": r.chain.head_hash,
        "problems": [{"kind": p.kind, "seq": p.seq, "detail": p.detail} for p in r.problems],
        "blobs_checked": r.blobs_checked,
        "consulted": r.consulted,
        "against": against,
    }


def _print_verification(r: BuildVerification) -> None:
    if r.ok:
        extra = f", {r.blobs_checked} stored outputs re-hashed" if r.blobs_checked else ""
        extra += f", {len(r.consulted)} package records consulted" if r.consulted else ""
        click.echo(f"ok    {r.build_id}: {r.chain.events} events, head {r.chain.head_hash[:16]}…{extra}")
    else:
        click.echo(f"BAD   {r.build_id}: first bad seq {r.first_bad_seq}: {r.reason}")
        for p in r.problems[1:] if len(r.problems) > 1 else []:
            click.echo(f"      also seq {p.seq} ({p.kind}): {p.detail}")
    if r.against is not None:
        d = r.against.first_divergence
        if d is None:
            more = r.against.database_head - r.against.events
            tail = f"; the database goes on to seq {r.against.database_head}" if more > 0 else ""
            click.echo(f"      matches {r.against.file} (seq 1 to {r.against.events}){tail}")
        else:
            click.echo(
                f"      against {r.against.file}: first divergence at seq {d.seq} ({d.kind}): {d.detail}"
            )


@contextlib.contextmanager
def tampered_report(build_id: str, as_json: bool) -> Iterator[None]:
    """status and replay on a log that fails its hash chain: say "tampered" with the
    first bad seq, and exit 9 (JSON too, with --json)."""
    from events.errors import TamperedError  # noqa: PLC0415

    try:
        yield
    except TamperedError as exc:
        if as_json:
            emit_json(
                {
                    "build_id": build_id,
                    "ok": False,
                    "tampered": True,
                    "first_bad_seq": exc.seq,
                    "reason": exc.reason,
                }
            )
            sys.exit(int(ExitCode.VERIFY_FAILED))
        fail(
            f"build {build_id}: the event log is tampered: first bad seq {exc.seq}: {exc.reason}",
            ExitCode.VERIFY_FAILED,
            f"`gmi-fsm verify {build_id}` shows every problem; the log cannot be trusted",
        )

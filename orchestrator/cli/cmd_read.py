"""The read commands: list, status, history, replay, audit, verify. None of them
writes; each has --json."""

from __future__ import annotations

import sys

import click

from orchestrator.cli.errors import user_errors
from orchestrator.cli.main import cli, emit_json, fail, json_option, store_for
from orchestrator.exit_codes import ExitCode


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

    with user_errors():
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

    with user_errors():
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
        st = builds.load_state(store, build_id)
        report = audit_report(st, store.read(build_id), store.verify(build_id))
    if as_json or fmt == "json":
        emit_json(report)
    else:
        click.echo(audit_markdown(report), nl=False)


@cli.command()
@click.argument("build_id", metavar="ID", required=False)
@click.option("--all", "all_", is_flag=True, help="Verify every build in the database.")
@json_option
@click.pass_context
def verify(ctx: click.Context, build_id: str | None, all_: bool, as_json: bool) -> None:
    """Check the hash chain of build ID (or --all): any edited, deleted, inserted or
    reordered event is found, and the first bad seq named."""
    from orchestrator import builds  # noqa: PLC0415

    if bool(build_id) == all_:
        fail("give a build ID or --all", ExitCode.USAGE)
    with user_errors():
        reports = builds.verify(store_for(ctx, readonly=True), build_id)
    bad = [r for r in reports if not r.ok]
    if as_json:
        emit_json(
            [
                {
                    "build_id": r.build_id,
                    "ok": r.ok,
                    "events": r.events,
                    "first_bad_seq": r.first_bad_seq,
                    "reason": r.reason,
                    "head_hash": r.head_hash,
                }
                for r in reports
            ]
        )
    else:
        for r in reports:
            if r.ok:
                click.echo(f"ok    {r.build_id}: {r.events} events, head {r.head_hash[:16]}…")
            else:
                click.echo(f"BAD   {r.build_id}: first bad seq {r.first_bad_seq}: {r.reason}")
    if bad:
        sys.exit(int(ExitCode.VERIFY_FAILED))

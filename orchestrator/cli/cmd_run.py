"""``run``, ``resume`` and ``abort``: the commands that write."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.errors import user_errors
from orchestrator.cli.main import cli, emit_json, fail, json_option, sigterm_as_interrupt, store_for
from orchestrator.exit_codes import ExitCode

if TYPE_CHECKING:
    from events.store import SqliteEventStore
    from orchestrator.engine import Engine, RunResult


@cli.command()
@click.argument("spec", required=False, type=click.Path(path_type=Path))
@click.option("--resume", "resume_id", metavar="ID", help="Continue this build instead of starting one.")
@click.option(
    "--update-spec",
    is_flag=True,
    help="With --resume: replace the build's frozen spec by SPEC (recorded as an event).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the commands' output as it arrives.")
@json_option
@click.pass_context
def run(
    ctx: click.Context,
    spec: Path | None,
    resume_id: str | None,
    update_spec: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    """Start a build from SPEC, or resume one with --resume ID.

    A resumed build runs with the spec frozen in its events, not the file on disk.
    """
    from orchestrator import builds  # noqa: PLC0415

    if spec is None and resume_id is None:
        fail(
            "give a SPEC file to start a build, or --resume ID",
            ExitCode.USAGE,
            "`gmi-fsm list` shows existing builds",
        )
    if spec is not None and resume_id is not None and not update_spec:
        fail(
            "SPEC was given with --resume: a resumed build uses its frozen spec",
            ExitCode.USAGE,
            "drop SPEC, or add --update-spec to replace the frozen spec",
        )
    with user_errors():
        prepared = builds.prepare(spec) if spec is not None else None
        if prepared is not None:
            builds.check_secrets(prepared.spec, prepared.spec_path.parent)
        if resume_id is None:
            assert prepared is not None
            store = store_for(ctx)  # creates the database if it is not there yet
            build_id = builds.new_build_id(prepared.spec.name)
            # The new build's lock before its first event: from the moment `list` can
            # show it, a `run --resume` of it is refused.
            with builds.runner(ctx.obj, build_id):
                builds.request(store, prepared, build_id)
                _drive(store, build_id, verbose=verbose, as_json=as_json)
            return
        # The runner lock first: a second runner stops before it opens, reads or sends
        # anything (orchestrator/runlock.py); then the log must verify.
        with builds.runner(ctx.obj, resume_id):
            store = store_for(ctx)
            state = builds.load_state(store, resume_id)
            if prepared is not None:
                builds.change_spec(store, resume_id, prepared)
            elif state.terminal:
                fail(
                    f"build {resume_id} has already {state.status}",
                    ExitCode.BUILD_ENDED,
                    "start a new build with `gmi-fsm run SPEC`",
                )
            _drive(store, resume_id, verbose=verbose, as_json=as_json)


@cli.command()
@click.argument("build_id", metavar="ID")
@click.option(
    "--decision",
    type=click.Choice(["retry", "skip", "abort"]),
    help="For a paused build: run the in-doubt step again, count it as done, or abort.",
)
@click.option("--note", default="", help="Why (recorded with the decision).")
@click.option(
    "--trust-new-host-key",
    is_flag=True,
    help="The guest's SSH host key changed and you know why: pin the new one at the next login.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the commands' output as it arrives.")
@json_option
@click.pass_context
def resume(
    ctx: click.Context,
    build_id: str,
    decision: str | None,
    note: str,
    trust_new_host_key: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    """Continue build ID (same as `run --resume ID`); decide first if it is paused."""
    from orchestrator import builds  # noqa: PLC0415

    # Decisions take the runner lock too, before anything is read: of two operators
    # deciding at once, exactly one records a decision; the other exits 6.
    with user_errors(), builds.runner(ctx.obj, build_id):
        store = store_for(ctx)
        state = builds.load_state(store, build_id)
        if state.terminal:
            fail(f"build {build_id} has already {state.status}", ExitCode.BUILD_ENDED)
        if state.status == "paused":
            if decision is None:
                fail(
                    f"build {build_id} is paused: {state.reason}",
                    ExitCode.BUILD_PAUSED,
                    f"choose: gmi-fsm resume {build_id} --decision retry|skip|abort",
                )
            if decision == "abort":
                asyncio.run(builds.abort(store, build_id, note or "aborted by operator decision"))
                _report_end("aborted", build_id, as_json, ExitCode.OK)
                return
            builds.decide(store, build_id, decision, note)  # type: ignore[arg-type]
        elif decision is not None:
            fail(
                f"build {build_id} is not paused (it is {state.status}); no decision needed",
                ExitCode.USAGE,
                f"run `gmi-fsm resume {build_id}` without --decision",
            )
        if trust_new_host_key:
            old = builds.trust_new_host_key(store, build_id)
            if old and not as_json:
                click.echo(f"cleared the pinned host key {old}; the next login pins the new one", err=True)
        _drive(store, build_id, verbose=verbose, as_json=as_json)


@cli.command()
@click.argument("build_id", metavar="ID")
@click.option("--reason", default="aborted by operator", help="Recorded with the abort.")
@click.option("--keep", is_flag=True, help="Do not remove the build VM and work files.")
@json_option
@click.pass_context
def abort(ctx: click.Context, build_id: str, reason: str, keep: bool, as_json: bool) -> None:
    """Abort build ID for good (it cannot be resumed afterwards).

    First the host removes what the build left (the build VM, its work disk), each
    command recorded; --keep leaves them for inspection.
    """
    from orchestrator import builds  # noqa: PLC0415

    with user_errors(), builds.runner(ctx.obj, build_id):
        store = store_for(ctx)
        state = builds.load_state(store, build_id)
        if state.terminal:
            fail(f"build {build_id} has already {state.status}", ExitCode.BUILD_ENDED)
        state = asyncio.run(builds.abort(store, build_id, reason, clean_up=not keep))
        if "clean-up incomplete" in state.reason and not as_json:
            click.echo(f"warning: {state.reason}", err=True)
    _report_end("aborted", build_id, as_json, ExitCode.OK)


def _report_end(status: str, build_id: str, as_json: bool, code: ExitCode) -> None:
    if as_json:
        emit_json({"build_id": build_id, "status": status})
    else:
        click.echo(f"build {build_id}: {status}")
    if code:
        sys.exit(int(code))


def _drive(store: SqliteEventStore, build_id: str, *, verbose: bool, as_json: bool) -> None:
    from orchestrator.engine import BuildHasEnded, BuildIsPaused, Outcome  # noqa: PLC0415

    observer = _observer(build_id, verbose=verbose, as_json=as_json)
    holder: dict[str, Engine] = {}
    try:
        result = asyncio.run(_run_with_signals(store, build_id, observer, holder))
    except BuildIsPaused as exc:
        fail(
            str(exc), ExitCode.BUILD_PAUSED, f"choose: gmi-fsm resume {build_id} --decision retry|skip|abort"
        )
    except BuildHasEnded as exc:
        fail(str(exc), ExitCode.BUILD_ENDED)
    if result is None:
        click.echo(f"interrupted; the build is resumable: gmi-fsm run --resume {build_id}", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    code = {
        Outcome.SUCCEEDED: ExitCode.OK,
        Outcome.FAILED: ExitCode.BUILD_FAILED,
        Outcome.PAUSED: ExitCode.BUILD_PAUSED,
        Outcome.ABORTED: ExitCode.BUILD_ENDED,
        Outcome.INTERRUPTED: ExitCode.INTERRUPTED,
    }[result.outcome]
    if as_json:
        emit_json(
            {
                "build_id": build_id,
                "outcome": result.outcome.value,
                "stage": result.stage,
                "message": result.message,
                "exit_code": int(code),
            }
        )
    elif result.outcome is Outcome.SUCCEEDED:
        click.echo(f"build {build_id} succeeded; `gmi-fsm audit {build_id}` shows how it was made")
    elif result.outcome is Outcome.FAILED:
        click.echo(f"build {build_id} failed in {result.stage}: {result.message}", err=True)
        click.echo(f"hint: fix the cause, then `gmi-fsm run --resume {build_id}`", err=True)
    elif result.outcome is Outcome.PAUSED:
        click.echo(f"build {build_id} paused: {result.message}", err=True)
        click.echo(f"hint: gmi-fsm resume {build_id} --decision retry|skip|abort", err=True)
    if code:
        sys.exit(int(code))


async def _run_with_signals(
    store: SqliteEventStore, build_id: str, observer: object, holder: dict[str, Engine]
) -> RunResult | None:
    from orchestrator import builds  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopped: list[str] = []

    def on_signal(name: str) -> None:
        if not stopped:
            stopped.append(name)
            engine = holder.get("engine")
            if engine is not None:
                engine.stop_signal = name
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        return await builds.run(
            store,
            build_id,
            observer=observer,  # type: ignore[arg-type]
            engine_hook=lambda e: holder.__setitem__("engine", e),
        )
    except asyncio.CancelledError:
        if stopped:
            return None
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)  # which restores SIG_DFL: a second SIGTERM would kill
        if stopped:
            # Interrupted: exit 130 follows whatever comes next; another Ctrl-C or SIGTERM
            # while this run winds down must not turn it into a death by signal (143).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, sigterm_as_interrupt)


def _observer(build_id: str, *, verbose: bool, as_json: bool) -> object:
    from orchestrator import logs  # noqa: PLC0415

    if sys.stderr.isatty() and not as_json:
        from rich.console import Console  # noqa: PLC0415

        from orchestrator.cli.progress import ConsoleProgress  # noqa: PLC0415

        logs.configure(json=False, level=30)
        return logs.FanOut(
            ConsoleProgress(Console(stderr=True), verbose=verbose), logs.LoggingObserver(build_id)
        )
    logs.configure(json=True)
    return logs.LoggingObserver(build_id)

"""The ``gmi-fsm`` command line: a thin layer over ``orchestrator.builds``.

Imports are lazy: ``--help`` and the read commands must start in well under 150 ms.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from orchestrator.exit_codes import ExitCode

if TYPE_CHECKING:
    from events.store import SqliteEventStore

F = TypeVar("F", bound=Callable[..., Any])


class Failure(Exception):
    """A user-facing error: what, where, how to fix, and a documented exit code.

    Not a click.ClickException: click declares its ``exit_code`` a class constant, and
    every Failure carries its own."""

    def __init__(self, message: str, code: ExitCode, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = int(code)
        self.hint = hint

    def show(self, file: Any = None) -> None:
        err = file or sys.stderr
        click.echo(f"error: {self.message}", err=True, file=err)
        if self.hint:
            click.echo(f"hint: {self.hint}", err=True, file=err)


def fail(message: str, code: ExitCode, hint: str = "") -> NoReturn:
    raise Failure(message, code, hint)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="GMI_FSM_DB",
    help="Event database (SQLite). Default: $GMI_FSM_DB, else "
    "$XDG_STATE_HOME/gmi-fsm/events.db (~/.local/state/gmi-fsm/events.db).",
)
@click.version_option("0.1.0", prog_name="gmi-fsm")
@click.pass_context
def cli(ctx: click.Context, db: Path | None) -> None:
    """Build Genie Machine Images as resumable, auditable state machines.

    Every command sent to a host or guest is recorded in an SQLite event log before
    and after it runs: a build survives a crash and resumes where it stopped, and
    its history can be replayed, audited and verified.
    """
    from orchestrator.paths import default_db  # noqa: PLC0415

    ctx.obj = db or default_db()


def store_for(ctx: click.Context, *, readonly: bool = False) -> SqliteEventStore:
    from events.errors import StoreError  # noqa: PLC0415
    from orchestrator.builds import open_store  # noqa: PLC0415

    try:
        store = open_store(ctx.obj, readonly=readonly)
    except StoreError as exc:
        fail(str(exc), ExitCode.STORE_ERROR, exc.hint)
    # Closed when the command ends, however it ends: the last connection to close folds
    # the write-ahead log into the database file (and releases its name, see
    # events/filelock.py), rather than leaving it beside the path this process used.
    ctx.call_on_close(store.close)
    return store


def _register() -> None:
    # Commands live in small modules; importing them registers them on `cli`.
    from orchestrator.cli import (  # noqa: F401, PLC0415
        cmd_graph,
        cmd_hyperv,
        cmd_lab,
        cmd_publish,
        cmd_read,
        cmd_run,
        cmd_spec,
        cmd_validate,
    )


def sigterm_as_interrupt(signum: int = 0, frame: object = None) -> None:
    """SIGTERM outside a run's event loop is Ctrl-C: it ends the command with exit 130
    ("interrupted"), never the shell's 143 for a process killed by the signal. A run
    installs its own handler while it drives a build (cmd_run)."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    import signal  # noqa: PLC0415

    signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    _register()
    try:
        cli.main(args=argv, prog_name="gmi-fsm", standalone_mode=False)
    except Failure as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.ClickException as exc:
        exc.show()
        sys.exit(int(ExitCode.USAGE))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: show it, but never a secret in its message
        import traceback  # noqa: PLC0415

        from orchestrator.secrets import REDACTOR  # noqa: PLC0415

        text = "".join(traceback.format_exception(exc))
        click.echo(REDACTOR.text(text), err=True, nl=False)
        click.echo(f"internal error (a bug in gmi-fsm): {REDACTOR.text(str(exc))}", err=True)
        click.echo("hint: please report it with the traceback above", err=True)
        sys.exit(int(ExitCode.INTERNAL))
    sys.exit(0)

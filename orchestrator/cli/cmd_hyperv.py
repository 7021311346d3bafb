"""``hyperv check``: the acceptance check of a real Hyper-V host."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from orchestrator.cli.errors import user_errors
from orchestrator.cli.main import cli, emit_json, fail, json_option
from orchestrator.exit_codes import ExitCode


@cli.group()
def hyperv() -> None:
    """Work with a real Hyper-V host."""


@hyperv.command()
@click.argument("spec", type=click.Path(path_type=Path))
@json_option
def check(spec: Path, as_json: bool) -> None:
    """Check the Hyper-V host of SPEC before a first build: WinRM/TLS, login, rights by SID,
    the Hyper-V module, the switch, free space, the SMB share, Secure Boot templates.

    It only reads: nothing is created on the host and nothing is written to the event
    database. Each failed item names its fix. Exit 0: ready (warnings allowed); 16: a
    check failed; 3: SPEC is not valid; 11: its password reference cannot be resolved;
    2: its host is not kind hyperv.
    """
    from orchestrator.hyperv.acceptance import NotAHyperVSpecError, check_spec  # noqa: PLC0415

    with user_errors():
        try:
            report = asyncio.run(check_spec(spec))
        except NotAHyperVSpecError as exc:
            fail(str(exc), ExitCode.USAGE, "give a spec whose host has kind: hyperv")
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.to_text(), nl=False)
    sys.exit(int(ExitCode.OK if report.ok else ExitCode.HOST_CHECK_FAILED))

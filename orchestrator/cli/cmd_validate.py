"""``validate``: check a GMI package the way vmgenie's import will, and more."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.main import cli, emit_json, json_option
from orchestrator.exit_codes import ExitCode

if TYPE_CHECKING:
    from orchestrator.gmi.report import Report


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--inspect",
    is_flag=True,
    help="Also look inside the disk offline (libguestfs) for what the sealed-image contract says "
    "a GMI must not carry of its build (keys, sudo rules, passwords, identity, logs; "
    "docs/sealed-image.md).",
)
@json_option
def validate(path: Path, inspect: bool, as_json: bool) -> None:
    """Validate the GMI package PATH (GMI-<os>-<ver>.zip, disk-only-GMI-<os>-<ver>.zip, a
    .tar.gz of either, or an unpacked folder).

    Checks what vmgenie's import does (name, extraction on NTFS, manifest binding, layout,
    VHDX checksum), then the sidecar, SHA256SUMS, provenance statement and the event log's
    hash chain. Exit 0: valid and importable by vmgenie; 12: not valid; 13: valid, but
    --inspect could not run (libguestfs missing); 15: a valid disk-only GMI, not importable
    by vmgenie until finished on a Hyper-V host.
    """
    from orchestrator.gmi.validate import validate as run_validation  # noqa: PLC0415

    report = run_validation(path, inspect=inspect)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.to_text(), nl=False)
    sys.exit(int(exit_code(report)))


def exit_code(report: Report) -> ExitCode:
    if report.importable:
        return ExitCode.OK
    if report.only_inspect_unavailable:
        return ExitCode.INSPECT_UNAVAILABLE
    if report.ok:  # and not importable: a disk-only GMI
        return ExitCode.NOT_IMPORTABLE
    return ExitCode.VALIDATION_FAILED

"""``spec schema`` and ``spec check``."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.errors import user_errors
from orchestrator.cli.main import cli, emit_json, json_option


@cli.group()
def spec() -> None:
    """Work with build spec files."""


@spec.command()
def schema() -> None:
    """Print the JSON Schema of a build spec (for editors and CI)."""
    from orchestrator.spec import spec_schema  # noqa: PLC0415

    emit_json(spec_schema())


@spec.command()
@click.argument("file", type=click.Path(path_type=Path))
@json_option
def check(file: Path, as_json: bool) -> None:
    """Validate FILE; print every problem with its field and line."""
    import dataclasses  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from orchestrator.exit_codes import ExitCode  # noqa: PLC0415
    from orchestrator.spec import load_spec  # noqa: PLC0415
    from orchestrator.spec_errors import SpecError  # noqa: PLC0415

    if as_json:
        try:
            spec_, _ = load_spec(file)
        except SpecError as exc:
            emit_json({"file": str(file), "ok": False, "issues": [dataclasses.asdict(i) for i in exc.issues]})
            sys.exit(int(ExitCode.SPEC_INVALID))
        emit_json({"file": str(file), "ok": True, "name": spec_.name, "gmi": spec_.gmi_name})
        return
    with user_errors():
        spec_, _ = load_spec(file)
    click.echo(f"{file}: ok ({spec_.gmi_name}, host {spec_.host.kind})")

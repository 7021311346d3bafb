"""``publish``: add a GMI to a vmgenie repository index (gmi-repository.yml)."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.main import cli, emit_json, fail, json_option
from orchestrator.exit_codes import ExitCode


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--index",
    "index",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The repository index YAML to create or update.",
)
@click.option(
    "--url",
    required=True,
    help="Where the zip will be downloaded from (a URL ending in / gets the zip's name appended).",
)
@json_option
def publish(path: Path, index: Path, url: str, as_json: bool) -> None:
    """Put PATH's entry (CRC-64/NVME, manifest fields) FIRST in the index's list for
    <Os>-<Ver> (vmgenie takes the first), replacing entries of the same GMI.

    The URL's last segment must be PATH's file name (vmgenie saves the download under it).
    Refuses a disk-only GMI and an index vmgenie could not load. Run `gmi-fsm validate
    PATH` first: publish reads the manifest but does not re-check the package.
    """
    from orchestrator.gmi.manifest import ManifestError  # noqa: PLC0415
    from orchestrator.gmi.publish import PublishError  # noqa: PLC0415
    from orchestrator.gmi.publish import publish as run_publish  # noqa: PLC0415

    try:
        result = run_publish(path, index, url)
    except PublishError as exc:
        fail(str(exc), ExitCode.VALIDATION_FAILED, exc.hint)
    except ManifestError as exc:
        fail(
            f"{path}: the manifest is not valid: {exc}", ExitCode.VALIDATION_FAILED, "run `gmi-fsm validate`"
        )
    if as_json:
        emit_json(
            {"index": str(result.index), "key": result.key, "replaced": result.replaced, **result.entry}
        )
        return
    verb = "updated" if result.replaced else "added"
    click.echo(f"{verb} {result.key} in {result.index}: crc64nvme {result.entry['crc64nvme']}")

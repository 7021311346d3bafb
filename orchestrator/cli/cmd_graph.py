"""``graph``: the stage machine as a Mermaid diagram."""

from __future__ import annotations

import click

from orchestrator.cli.main import cli


@cli.command()
def graph() -> None:
    """Print the stage graph (Mermaid; paste it into any Mermaid renderer)."""
    from states.machine import mermaid_diagram  # noqa: PLC0415

    click.echo(mermaid_diagram())

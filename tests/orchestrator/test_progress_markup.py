"""The terminal progress shows what commands print, and an error's text, as text: rich
markup in them (``[/bold]``, ``[link=...]``) neither breaks the run with a MarkupError
nor turns into a link or a style."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from orchestrator.cli.progress import ConsoleProgress
from states.steps import Command, Step

EVIL = "[/bold] [link=http://evil.example]click[/link] [red]not red[/red] [/] ends in \\"


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, color_system="truecolor", width=200), out


def _step() -> Step:
    return Step(
        stage="provision", name="hook.after.x", target="local", command=Command(kind="shell", text="true")
    )


@pytest.mark.parametrize("verbose", [True, False])
def test_error_text_and_output_with_markup_are_printed_as_text(verbose: bool) -> None:
    console, out = _console()
    progress = ConsoleProgress(console, verbose=verbose)
    step = _step()
    progress.step_started(step, 1, "")
    progress.step_output(step, "stdout", (EVIL + "\n").encode())
    progress.step_finished(step, "failed", 0.1, f"exit status 1: {EVIL}")
    progress.message(f"paused: {EVIL}")
    text = out.getvalue()
    assert EVIL in text  # shown literally (the styles around it are ours)
    assert "\x1b]8;" not in text  # no OSC 8 hyperlink
    if verbose:
        assert "[dim]" not in text  # our own style is applied, not printed

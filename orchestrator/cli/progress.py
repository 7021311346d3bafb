"""Human progress on a terminal: one line per stage and step, with durations.

Off a terminal, the structured log (JSON lines) is the progress instead. Everything a
command or a build says (output, error text, names, messages) is escaped before it
meets rich's markup: ``[/bold]`` in a command's stderr would otherwise end the run
with a MarkupError, and ``[link=...]`` would print a link.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from orchestrator.targets.base import Stream
from states.stages import stage_by_name
from states.steps import Step

_ICONS = {
    "succeeded": "[green]✓[/]",
    "already_done": "[green]✓[/]",
    "failed": "[red]✗[/]",
    "timed_out": "[red]⏱[/]",
    "error": "[red]![/]",
}


class ConsoleProgress:
    def __init__(self, console: Console, *, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self._t0 = time.monotonic()

    def _clock(self) -> str:
        s = int(time.monotonic() - self._t0)
        return f"[dim]{s // 60:02d}:{s % 60:02d}[/]"

    def stage_entered(self, stage: str) -> None:
        title = stage_by_name(stage).title
        self.console.print(f"{self._clock()} [bold cyan]▶ {escape(title)}[/] [dim]({escape(stage)})[/]")

    def step_started(self, step: Step, attempt: int, note: str) -> None:
        extra = f" [dim](attempt {attempt})[/]" if attempt > 1 else ""
        label = step.description or step.name
        self.console.print(f"{self._clock()}   … {escape(label)}{extra}", highlight=False)

    def step_output(self, step: Step, stream: Stream, data: bytes) -> None:
        if self.verbose:
            for line in data.decode("utf-8", "replace").splitlines():
                self.console.print(Text(f"        {line}", style="dim"), highlight=False)

    def step_finished(self, step: Step, outcome: str, duration_s: float, detail: str) -> None:
        icon = _ICONS.get(outcome, "?")
        tail = f" [red]{escape(detail)}[/]" if detail and outcome not in ("succeeded",) else ""
        self.console.print(
            f"{self._clock()}   {icon} {escape(step.name)} [dim]{duration_s:.1f}s[/]{tail}", highlight=False
        )

    def message(self, text: str) -> None:
        self.console.print(f"{self._clock()} {escape(text)}", highlight=False)

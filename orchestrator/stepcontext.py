"""What the engine lends to the code running one attempt of one step.

The engine is the only writer of the event log. A target or host operation that
needs something recorded while it runs (a program it starts, a transfer checkpoint)
reports it through the :class:`StepJournal` of the attempt, and the engine appends
the event. The attempt is found through a context variable, set by the engine around
``Target.run``: it reaches every coroutine of the step and every worker thread started
with ``asyncio.to_thread`` (which copies the context), so code deep in a host
operation (``qemu-img`` in ``orchestrator/qemu/disk.py``) can record its programs
without the journal being threaded through every call.

Outside a step (lab commands, ``validate``, tests) there is no attempt: programs run
the same way, contained, and nothing is recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol


class StepJournal(Protocol):
    """How a running step reports to the engine (which records each report as an
    event before the call returns). Safe to call from worker threads."""

    def subcommand_started(self, argv: Sequence[str], cwd: str = "") -> int:
        """A program is about to start; returns its index within the attempt."""
        ...

    def subcommand_finished(
        self,
        index: int,
        *,
        exit_code: int | None,
        duration_s: float,
        stdout: bytes = b"",
        stderr: bytes = b"",
        error: str = "",
        note: str = "",
    ) -> None: ...

    def progress(self, values: Mapping[str, str]) -> None:
        """A checkpoint: a later attempt of this step may continue from it."""
        ...


@dataclass(frozen=True, slots=True)
class StepAttempt:
    """One attempt of one step, as the code running it sees it."""

    step_id: str
    attempt: int
    command_id: str
    journal: StepJournal
    resume_from: Mapping[str, str]
    """The step's last recorded checkpoint values (from any earlier attempt)."""


_CURRENT: ContextVar[StepAttempt | None] = ContextVar("gmi_fsm_step_attempt", default=None)


def current_attempt() -> StepAttempt | None:
    """The attempt this code runs for, or None outside a step."""
    return _CURRENT.get()


@contextlib.contextmanager
def attempt_running(attempt: StepAttempt) -> Iterator[StepAttempt]:
    token = _CURRENT.set(attempt)
    try:
        yield attempt
    finally:
        _CURRENT.reset(token)

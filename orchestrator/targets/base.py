"""The one seam between the engine and the world: a target runs a command.

Every target (the local machine, a guest over SSH, a hypervisor host) implements
:class:`Target`. The engine never knows which one it talks to; tests swap in real
local processes or a named simulator at this seam.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from states.steps import Command

Stream = Literal["stdout", "stderr"]


class OutputSink(Protocol):
    """Receives a command's output as it arrives, in chunks of bytes.

    Sinks must not keep unbounded data: the engine's sink spools to a file and keeps
    only a bounded head and tail in memory.
    """

    def __call__(self, stream: Stream, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file a step produced, with its digest (computed by streaming)."""

    name: str
    path: str
    sha256: str
    size: int
    kind: str


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended. ``exit_code`` is None when it never produced one
    (killed by a signal, connection lost, timed out)."""

    exit_code: int | None
    timed_out: bool = False
    error: str = ""
    # Host operations (not shell commands) report what they learned and made here;
    # the engine records them as FactRecorded / ArtifactRecorded events.
    facts: Mapping[str, str] = field(default_factory=dict)
    artifacts: tuple[Artifact, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.error


class TargetError(Exception):
    """A target could not run a command at all (not: the command failed).

    ``hint`` tells the user how to fix it. ``retryable`` says whether trying again
    may help (a dropped connection) or not (a refused login).
    """

    def __init__(self, message: str, *, hint: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.hint = hint
        self.retryable = retryable


class Target(Protocol):
    """Runs commands somewhere. One instance per build run; ``close`` releases it."""

    name: str

    async def run(self, command: Command, *, timeout_s: float | None, sink: OutputSink) -> CommandResult:
        """Run ``command``; stream its output into ``sink``; return how it ended.

        A non-zero exit is a normal result, not an exception. Raise
        :class:`TargetError` only when the command could not be run or its end
        could not be observed. On timeout, stop the command and return
        ``CommandResult(None, timed_out=True)``.
        """
        ...

    def stop_command(self, command_id: str, *, sudo: bool) -> Command | None:
        """The command that stops every process still carrying ``command_id`` (what an
        attempt that never finished may have left running), or None when nothing of
        this target's commands can outlive the run that started them."""
        ...

    async def close(self) -> None: ...


def discard_output(stream: Stream, data: bytes) -> None:
    """An :class:`OutputSink` that drops everything (for probes)."""

"""The event types of a build: one discriminated union, versioned.

Events are facts in the past tense. They are immutable, carry no secrets (the spec
inside ``BuildRequested`` holds references like ``env:NAME``, never values), and are
the only source of truth: a build's state is computed from them (``events.projection``).

Schema version history:
    1: the first version.
    2: ``StepStarted.command_id``; ``SubcommandStarted``/``SubcommandFinished`` (the
       programs a host operation runs) and ``StepProgress`` (a long step's checkpoints).
       Additive: every version-1 stream is a valid version-2 stream.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 2


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BuildRequested(_Event):
    """A build was asked for. The spec is frozen here: resuming reads it from this
    event, not from the file on disk."""

    type: Literal["BuildRequested"] = "BuildRequested"
    spec: dict[str, Any]
    spec_sha256: str
    spec_path: str
    tool_version: str
    requested_by: str
    hostname: str


class SpecChanged(_Event):
    """The operator replaced the frozen spec on resume (``run --resume --spec``)."""

    type: Literal["SpecChanged"] = "SpecChanged"
    spec: dict[str, Any]
    spec_sha256: str
    spec_path: str
    changed_by: str


class StageEntered(_Event):
    type: Literal["StageEntered"] = "StageEntered"
    stage: str


class StepStarted(_Event):
    """Committed BEFORE the command is sent (write-ahead)."""

    type: Literal["StepStarted"] = "StepStarted"
    stage: str
    step: str
    attempt: int
    target: str
    command: str
    args: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    idempotent: bool
    timeout_s: float
    probe: bool = False
    command_id: str = ""
    """Carried in the environment (``GMI_COMMAND_ID``) of every process this attempt
    starts, locally and in the guest: how a resume finds and stops what is left of an
    attempt that never finished (docs/architecture.md, "Containment")."""


class OutputDigest(BaseModel):
    """A stream's bounded head and tail, and the digest of the whole, whose bytes
    are kept once as a content-addressed blob."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    sha256: str
    size: int
    head: str = ""
    tail: str = ""


StepOutcome = Literal["succeeded", "failed", "timed_out", "error", "already_done"]


class StepFinished(_Event):
    type: Literal["StepFinished"] = "StepFinished"
    stage: str
    step: str
    attempt: int
    outcome: StepOutcome
    exit_code: int | None
    duration_s: float
    stdout: OutputDigest | None = None
    stderr: OutputDigest | None = None
    error: str = ""
    probe: bool = False


class SubcommandStarted(_Event):
    """A step is about to run a program (a host operation's ``qemu-img``, ``mkfs``...).
    Committed before the program starts, like StepStarted; ``index`` counts from 1
    within the attempt. ``argv`` has every secret masked."""

    type: Literal["SubcommandStarted"] = "SubcommandStarted"
    stage: str
    step: str
    attempt: int
    index: int
    argv: list[str]
    cwd: str = ""


class SubcommandFinished(_Event):
    """How a program run by a step ended. ``exit_code`` None: killed, timed out, or
    left running on purpose (``note`` says which: e.g. the build VM)."""

    type: Literal["SubcommandFinished"] = "SubcommandFinished"
    stage: str
    step: str
    attempt: int
    index: int
    exit_code: int | None
    duration_s: float
    stdout: OutputDigest | None = None
    stderr: OutputDigest | None = None
    error: str = ""
    note: str = ""


class StepProgress(_Event):
    """A checkpoint of a long step (e.g. the bytes of a transfer verified so far): a
    later attempt of the same step continues from the last one instead of from zero."""

    type: Literal["StepProgress"] = "StepProgress"
    stage: str
    step: str
    attempt: int
    values: dict[str, str]


class StageCompleted(_Event):
    type: Literal["StageCompleted"] = "StageCompleted"
    stage: str


class StageFailed(_Event):
    type: Literal["StageFailed"] = "StageFailed"
    stage: str
    step: str
    reason: str


class BuildPaused(_Event):
    """The engine will not guess: an operator must decide (``gmi-fsm resume``)."""

    type: Literal["BuildPaused"] = "BuildPaused"
    stage: str
    step: str
    reason: str


Decision = Literal["retry", "skip", "abort"]


class OperatorDecision(_Event):
    type: Literal["OperatorDecision"] = "OperatorDecision"
    stage: str
    step: str
    decision: Decision
    operator: str
    note: str = ""


class BuildResumed(_Event):
    """A new run attached to the build (after a crash, a failure or a pause)."""

    type: Literal["BuildResumed"] = "BuildResumed"
    resumed_by: str
    hostname: str
    tool_version: str
    from_status: str


class RunInterrupted(_Event):
    """The runner was stopped by a signal; the build stays resumable."""

    type: Literal["RunInterrupted"] = "RunInterrupted"
    signal: str
    stage: str
    step: str = ""


class FactRecorded(_Event):
    type: Literal["FactRecorded"] = "FactRecorded"
    key: str
    value: str
    source: str


class ArtifactRecorded(_Event):
    type: Literal["ArtifactRecorded"] = "ArtifactRecorded"
    name: str
    path: str
    sha256: str
    size: int
    kind: str


class BuildSucceeded(_Event):
    type: Literal["BuildSucceeded"] = "BuildSucceeded"


class BuildFailed(_Event):
    """The build failed outside any step (e.g. a target could not be reached).
    Like a failed stage, it can be resumed once the cause is fixed."""

    type: Literal["BuildFailed"] = "BuildFailed"
    stage: str
    reason: str


class BuildAborted(_Event):
    type: Literal["BuildAborted"] = "BuildAborted"
    reason: str
    aborted_by: str


Event = Annotated[
    BuildRequested
    | SpecChanged
    | StageEntered
    | StepStarted
    | StepFinished
    | SubcommandStarted
    | SubcommandFinished
    | StepProgress
    | StageCompleted
    | StageFailed
    | BuildPaused
    | OperatorDecision
    | BuildResumed
    | RunInterrupted
    | FactRecorded
    | ArtifactRecorded
    | BuildSucceeded
    | BuildFailed
    | BuildAborted,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def event_payload(event: Event) -> dict[str, Any]:
    """The JSON-ready payload of an event, as stored (without its ``type``)."""
    data = event.model_dump(mode="json")
    del data["type"]
    return data


def parse_event(type_: str, payload: dict[str, Any]) -> Event:
    return EVENT_ADAPTER.validate_python({"type": type_, **payload})

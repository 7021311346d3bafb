"""From a build's events to its state: replay every event through the stage machine.

This lives beside the machine (not in ``events/``) because the fold *is* the grammar
check: a stream the machine refuses is corrupt, and the error names the seq.

The fold reads the stored payload dicts directly rather than re-validating each into
a pydantic model: events were validated when written and their hashes are checked
by ``verify``; this keeps replay well above 200,000 events/s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from events.chain import GENESIS_HASH
from events.errors import CorruptStreamError
from events.store import RecordedEvent
from states.machine import BuildModel, IllegalMove
from states.stages import PAUSED, REQUESTED, STAGE_NAMES, TERMINAL

# Step states in the projection.
RUNNING = "running"  # started, not finished: in doubt if no runner holds it
DONE = "done"  # succeeded or already done (check probe / operator skip)
FAILED_STEP = "failed"
RETRY = "retry"  # the operator said: run it again


@dataclass(slots=True)
class StepState:
    stage: str
    name: str
    status: str = RUNNING
    attempts: int = 0
    outcome: str = ""
    exit_code: int | None = None
    error: str = ""
    started_seq: int = 0
    duration_s: float = 0.0
    open_command_id: str = ""
    """The command id of an attempt that started and never finished (in doubt, or
    retried/skipped by an operator after a pause): its processes may survive it."""


@dataclass(slots=True)
class BuildState:
    build_id: str
    status: str = REQUESTED  # the machine's state
    stage: str = ""  # current stage, or the one a paused/failed build left
    stage_done: bool = False
    spec: dict[str, Any] = field(default_factory=dict)
    spec_sha256: str = ""
    spec_path: str = ""
    requested_by: str = ""
    tool_version: str = ""
    created_at: str = ""
    updated_at: str = ""
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    steps: dict[str, StepState] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    completed_stages: list[str] = field(default_factory=list)
    reason: str = ""  # why it paused, failed or was aborted
    paused_step: str = ""
    runs: int = 0
    events: int = 0
    progress: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per step id: the values of its last StepProgress checkpoints, merged."""
    open_attempt: tuple[str, str, int] | None = None
    """(stage, step, attempt) of the step or probe running now: the only one whose
    sub-commands and progress may be recorded."""
    open_subcommands: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def in_doubt(self) -> list[str]:
        return [sid for sid, s in self.steps.items() if s.status == RUNNING]


Handler = Callable[[BuildState, BuildModel, RecordedEvent], None]


def _fire(model: BuildModel, trigger: str) -> None:
    model.fire(trigger)


def _requested(st: BuildState, _m: BuildModel, ev: RecordedEvent) -> None:
    if ev.seq != 1:
        raise IllegalMove("BuildRequested", st.status, "only the first event may request a build")
    p = ev.payload
    st.spec, st.spec_sha256, st.spec_path = p["spec"], p["spec_sha256"], p["spec_path"]
    st.requested_by, st.tool_version, st.created_at = p["requested_by"], p["tool_version"], ev.at
    st.runs = 1


def _spec_changed(st: BuildState, _m: BuildModel, ev: RecordedEvent) -> None:
    st.spec, st.spec_sha256, st.spec_path = (
        ev.payload["spec"],
        ev.payload["spec_sha256"],
        ev.payload["spec_path"],
    )


def _stage_entered(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    stage = ev.payload["stage"]
    if stage not in STAGE_NAMES:
        raise IllegalMove("StageEntered", st.status, f"unknown stage {stage!r}")
    _fire(m, f"enter_{stage}")


def _stage_completed(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    _same_stage(m, ev)
    running = [s for s in st.steps.values() if s.stage == m.state and s.status == RUNNING]
    if running:
        raise IllegalMove("StageCompleted", m.state, f"step {running[0].name} is still running")
    _fire(m, "complete")
    st.completed_stages.append(m.state)


def _same_stage(m: BuildModel, ev: RecordedEvent) -> None:
    stage = ev.payload.get("stage", "")
    if stage != m.state:
        raise IllegalMove(ev.type, m.state, f"event is for stage {stage!r}")


def _clean_up_probe(m: BuildModel, ev: RecordedEvent) -> bool:
    """A probe recorded while a build is paused or failed: the clean-up an abort runs
    (e.g. removing the build VM), filed under the stage the build left."""
    return bool(ev.payload.get("probe")) and m.state in (PAUSED, "failed") and ev.payload["stage"] == m.stage


_HALTED = frozenset({PAUSED, "failed"})


def _open(st: BuildState, p: dict[str, Any]) -> None:
    st.open_attempt = (p["stage"], p["step"], p["attempt"])
    st.open_subcommands = 0


def _step_started(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    p = ev.payload
    if m.state in _HALTED and _clean_up_probe(m, ev):
        _open(st, p)
        return
    _same_stage(m, ev)
    if m.stage_done and not p.get("probe"):
        raise IllegalMove("StepStarted", m.state, "the stage is already complete")
    _open(st, p)
    if p.get("probe"):
        return
    sid = f"{p['stage']}/{p['step']}"
    step = st.steps.get(sid)
    if step is None:
        step = st.steps[sid] = StepState(p["stage"], p["step"])
    step.status, step.attempts, step.started_seq = RUNNING, p["attempt"], ev.seq
    step.open_command_id = p.get("command_id", "")


def _step_finished(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    p = ev.payload
    if st.open_attempt == (p["stage"], p["step"], p["attempt"]):
        st.open_attempt = None
    if m.state in _HALTED and _clean_up_probe(m, ev):
        return
    _same_stage(m, ev)
    if p.get("probe"):
        return
    sid = f"{p['stage']}/{p['step']}"
    step = st.steps.get(sid)
    if step is None or step.status != RUNNING or step.attempts != p["attempt"]:
        raise IllegalMove("StepFinished", m.state, f"step {sid} attempt {p['attempt']} was not running")
    outcome = p["outcome"]
    step.outcome, step.exit_code, step.error = outcome, p.get("exit_code"), p.get("error", "")
    step.duration_s += p.get("duration_s", 0.0)
    step.status = DONE if outcome in ("succeeded", "already_done") else FAILED_STEP
    step.open_command_id = ""


def _within_open_attempt(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    p = ev.payload
    if st.open_attempt != (p["stage"], p["step"], p["attempt"]):
        raise IllegalMove(
            ev.type, m.state, f"step {p['stage']}/{p['step']} attempt {p['attempt']} is not running"
        )


def _subcommand_started(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    _within_open_attempt(st, m, ev)
    if ev.payload["index"] != st.open_subcommands + 1:
        raise IllegalMove(ev.type, m.state, f"sub-command {ev.payload['index']} is out of order")
    st.open_subcommands += 1


def _subcommand_finished(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    _within_open_attempt(st, m, ev)
    if not 1 <= ev.payload["index"] <= st.open_subcommands:
        raise IllegalMove(ev.type, m.state, f"sub-command {ev.payload['index']} was not started")


def _progress(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    _within_open_attempt(st, m, ev)
    p = ev.payload
    st.progress.setdefault(f"{p['stage']}/{p['step']}", {}).update(p["values"])


def _stage_failed(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    _same_stage(m, ev)
    st.reason = ev.payload["reason"]
    _fire(m, "fail")


def _build_failed(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    st.reason = ev.payload["reason"]
    _fire(m, "fail")


def _paused(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    _same_stage(m, ev)
    st.reason, st.paused_step = ev.payload["reason"], f"{ev.payload['stage']}/{ev.payload['step']}"
    _fire(m, "pause")


def _decision(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    if m.state != PAUSED:
        raise IllegalMove("OperatorDecision", m.state, "only a paused build takes a decision")
    p = ev.payload
    sid = f"{p['stage']}/{p['step']}"
    step = st.steps.get(sid)
    if p["decision"] == "abort":
        return  # BuildAborted follows and moves the machine
    if step is not None:
        # open_command_id stays: the attempt never finished, so what it started may
        # still run; the engine stops it before anything else happens to the step.
        step.status = DONE if p["decision"] == "skip" else RETRY
        if p["decision"] == "skip":
            step.outcome = "skipped"
    _fire(m, "resume")
    st.paused_step = ""


def _resumed(st: BuildState, m: BuildModel, _ev: RecordedEvent) -> None:
    st.runs += 1
    if m.state == PAUSED:
        raise IllegalMove("BuildResumed", m.state, "a paused build needs an OperatorDecision")
    if m.state in TERMINAL:
        raise IllegalMove("BuildResumed", m.state, "the build has ended")
    if m.state == "failed":
        _fire(m, "resume")
        st.reason = ""


def _aborted(st: BuildState, m: BuildModel, ev: RecordedEvent) -> None:
    st.reason = ev.payload["reason"]
    _fire(m, "abort")


def _succeeded(_st: BuildState, m: BuildModel, _ev: RecordedEvent) -> None:
    _fire(m, "succeed")


def _fact(st: BuildState, _m: BuildModel, ev: RecordedEvent) -> None:
    st.facts[ev.payload["key"]] = ev.payload["value"]


def _artifact(st: BuildState, _m: BuildModel, ev: RecordedEvent) -> None:
    st.artifacts[ev.payload["name"]] = ev.payload


def _interrupted(_st: BuildState, _m: BuildModel, _ev: RecordedEvent) -> None:
    return


HANDLERS: dict[str, Handler] = {
    "BuildRequested": _requested,
    "SpecChanged": _spec_changed,
    "StageEntered": _stage_entered,
    "StepStarted": _step_started,
    "StepFinished": _step_finished,
    "SubcommandStarted": _subcommand_started,
    "SubcommandFinished": _subcommand_finished,
    "StepProgress": _progress,
    "StageCompleted": _stage_completed,
    "StageFailed": _stage_failed,
    "BuildPaused": _paused,
    "OperatorDecision": _decision,
    "BuildResumed": _resumed,
    "RunInterrupted": _interrupted,
    "FactRecorded": _fact,
    "ArtifactRecorded": _artifact,
    "BuildSucceeded": _succeeded,
    "BuildFailed": _build_failed,
    "BuildAborted": _aborted,
}


class Projector:
    """Folds events one at a time: the engine keeps one while it appends."""

    def __init__(self, build_id: str) -> None:
        self._state = BuildState(build_id)
        self._model = BuildModel()
        self._last: RecordedEvent | None = None

    def apply(self, ev: RecordedEvent) -> None:
        st, model = self._state, self._model
        expected = st.events + 1
        if ev.seq != expected:
            raise CorruptStreamError(st.build_id, expected, f"seq {expected} is missing")
        handler = HANDLERS.get(ev.type)
        if handler is None:
            raise CorruptStreamError(st.build_id, ev.seq, f"unknown event type {ev.type!r}")
        if ev.seq == 1 and ev.type != "BuildRequested":
            raise CorruptStreamError(st.build_id, 1, "a build must begin with BuildRequested")
        try:
            handler(st, model, ev)
        except IllegalMove as exc:
            raise CorruptStreamError(st.build_id, ev.seq, str(exc)) from None
        except (KeyError, TypeError) as exc:
            raise CorruptStreamError(st.build_id, ev.seq, f"malformed {ev.type}: {exc}") from None
        st.events = ev.seq
        self._last = ev

    @property
    def state(self) -> BuildState:
        st, model, last = self._state, self._model, self._last
        st.status, st.stage, st.stage_done = model.state, model.stage, model.stage_done
        if last is not None:
            st.head_seq, st.head_hash, st.updated_at = last.seq, last.hash, last.at
        return st


def fold(build_id: str, events: Iterable[RecordedEvent]) -> BuildState:
    """Replay ``events`` (in seq order) through the machine; raise
    :class:`CorruptStreamError` at the first event the grammar refuses."""
    projector = Projector(build_id)
    for ev in events:
        projector.apply(ev)
    return projector.state

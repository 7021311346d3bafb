"""The stage machine: the grammar of a build's event stream.

Kept thin and synchronous on purpose (transitions' AsyncMachine swallows
cancellation): the engine awaits the work under its own timeouts, then fires quick
triggers here. The machine does no I/O; an illegal move raises
:class:`IllegalMove`.
"""

from __future__ import annotations

from typing import Any

from transitions import Machine, MachineError

from states.stages import (
    ABORTED,
    FAILED,
    FIRST_STAGE,
    LAST_STAGE,
    PAUSED,
    REQUESTED,
    STAGE_NAMES,
    SUCCEEDED,
)

MACHINE_STATES: tuple[str, ...] = (REQUESTED, *STAGE_NAMES, PAUSED, FAILED, ABORTED, SUCCEEDED)


class IllegalMove(Exception):
    def __init__(self, trigger: str, state: str, detail: str = "") -> None:
        reason = f"'{trigger}' is not allowed in state '{state}'"
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.trigger = trigger
        self.state = state


class BuildModel:
    """The machine's model: where the build is, and the two facts the grammar needs
    besides (whether the current stage is complete, and which stage a paused or
    failed build returns to)."""

    state: str

    def __init__(self, state: str = REQUESTED, *, stage_done: bool = False, stage: str = "") -> None:
        self.stage_done = stage_done
        # The stage the build is in, or was in when it paused or failed.
        self.stage = stage
        self._machine = _build(self, state)

    # conditions -------------------------------------------------------------------
    def is_stage_done(self) -> bool:
        return self.stage_done

    def is_stage_open(self) -> bool:
        return not self.stage_done

    # callbacks --------------------------------------------------------------------
    def on_enter_stage(self) -> None:
        self.stage = self.state
        self.stage_done = False

    def mark_done(self) -> None:
        self.stage_done = True

    def fire(self, trigger: str, **kwargs: Any) -> None:
        """Fire ``trigger``; raise :class:`IllegalMove` if the grammar refuses it."""
        before = self.state
        try:
            moved = getattr(self, trigger)(**kwargs)
        except (MachineError, AttributeError) as exc:
            raise IllegalMove(trigger, before, str(getattr(exc, "value", exc))) from None
        if not moved:
            raise IllegalMove(trigger, before, _why_refused(trigger, self))


def _why_refused(trigger: str, model: BuildModel) -> str:
    if trigger.startswith("enter_"):
        return f"stage '{model.state}' is not complete"
    if trigger == "complete":
        return f"stage '{model.state}' is already complete"
    if trigger == "succeed":
        return "the last stage is not complete"
    if trigger == "resume":
        return f"no stage '{model.stage}' to return to"
    return "a condition refused it"


def _build(model: BuildModel, initial: str) -> Machine:
    m = Machine(
        model=model,
        states=list(MACHINE_STATES),
        initial=initial,
        auto_transitions=False,
        ignore_invalid_triggers=False,
        model_override=False,
    )
    previous = REQUESTED
    for stage in STAGE_NAMES:
        m.add_transition(
            f"enter_{stage}",
            previous,
            stage,
            conditions=None if previous == REQUESTED else "is_stage_done",
            after="on_enter_stage",
        )
        previous = stage
    stages: list[Any] = list(STAGE_NAMES)
    m.add_transition("complete", stages, None, conditions="is_stage_open", after="mark_done")
    m.add_transition("pause", stages, PAUSED)
    m.add_transition("fail", [REQUESTED, *stages], FAILED)
    # A paused or failed build returns to the stage it left, whichever that was.
    for stage in STAGE_NAMES:
        m.add_transition("resume", [PAUSED, FAILED], stage, conditions=lambda s=stage: model.stage == s)
    m.add_transition("resume", [PAUSED, FAILED], REQUESTED, conditions=lambda: not model.stage)
    m.add_transition("abort", [REQUESTED, *stages, PAUSED, FAILED], ABORTED)
    m.add_transition("succeed", LAST_STAGE, SUCCEEDED, conditions="is_stage_done")
    return m


def mermaid_diagram() -> str:
    """The stage graph as Mermaid text (no graphviz needed)."""
    from transitions.extensions import GraphMachine  # noqa: PLC0415 - only for `graph`

    class _Model:
        stage = ""

    model = _Model()
    gm = GraphMachine(
        model=model,
        states=list(MACHINE_STATES),
        initial=REQUESTED,
        auto_transitions=False,
        graph_engine="mermaid",
        show_conditions=False,
        title="gmi-fsm build",
    )
    previous = REQUESTED
    for stage in STAGE_NAMES:
        gm.add_transition(f"enter_{stage}", previous, stage)
        previous = stage
    gm.add_transition("pause", list(STAGE_NAMES), PAUSED)
    gm.add_transition("fail", [REQUESTED, *STAGE_NAMES], FAILED)
    for stage in STAGE_NAMES:
        gm.add_transition("resume", [PAUSED, FAILED], stage)
    gm.add_transition("abort", [REQUESTED, *STAGE_NAMES, PAUSED, FAILED], ABORTED)
    gm.add_transition("succeed", LAST_STAGE, SUCCEEDED)
    return str(gm.get_graph().draw(None))


__all__ = ["FIRST_STAGE", "MACHINE_STATES", "BuildModel", "IllegalMove", "mermaid_diagram"]

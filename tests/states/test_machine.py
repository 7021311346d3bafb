"""The stage machine: the legal moves, the illegal ones (IllegalMove, with a reason),
and the Mermaid diagram of `gmi-fsm graph`."""

from __future__ import annotations

import re

import pytest
from support.cli import run_cli

from states.machine import MACHINE_STATES, BuildModel, IllegalMove, mermaid_diagram
from states.stages import ABORTED, FAILED, FIRST_STAGE, LAST_STAGE, PAUSED, REQUESTED, STAGE_NAMES, SUCCEEDED


def walk_to(stage: str) -> BuildModel:
    """A model that has entered ``stage`` (every earlier stage completed)."""
    m = BuildModel()
    for name in STAGE_NAMES:
        m.fire(f"enter_{name}")
        if name == stage:
            return m
        m.fire("complete")
    raise AssertionError(stage)


def test_happy_path_through_every_stage() -> None:
    m = BuildModel()
    assert m.state == REQUESTED
    for name in STAGE_NAMES:
        m.fire(f"enter_{name}")
        assert (m.state, m.stage, m.stage_done) == (name, name, False)
        m.fire("complete")
        assert m.stage_done
    m.fire("succeed")
    assert m.state == SUCCEEDED


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_next_stage_needs_the_current_one_complete(stage: str) -> None:
    m = walk_to(stage)
    nxt = STAGE_NAMES.index(stage) + 1
    if nxt < len(STAGE_NAMES):
        with pytest.raises(IllegalMove, match=f"stage '{stage}' is not complete"):
            m.fire(f"enter_{STAGE_NAMES[nxt]}")
    else:
        with pytest.raises(IllegalMove, match="the last stage is not complete"):
            m.fire("succeed")
    assert m.state == stage  # a refused move changes nothing


def test_stages_cannot_be_skipped_or_revisited() -> None:
    m = walk_to("update")
    m.fire("complete")
    with pytest.raises(IllegalMove, match="'enter_hyperv_integration' is not allowed in state 'update'"):
        m.fire("enter_hyperv_integration")
    with pytest.raises(IllegalMove, match="'enter_provision' is not allowed in state 'update'"):
        m.fire("enter_provision")
    with pytest.raises(IllegalMove, match="'enter_update' is not allowed in state 'update'"):
        m.fire("enter_update")
    with pytest.raises(IllegalMove, match="stage 'update' is already complete"):
        m.fire("complete")
    with pytest.raises(IllegalMove, match="'succeed' is not allowed in state 'update'"):
        m.fire("succeed")


def test_requested_can_only_enter_the_first_stage_fail_or_abort() -> None:
    for trigger in (f"enter_{STAGE_NAMES[1]}", "complete", "pause", "resume", "succeed"):
        with pytest.raises(IllegalMove, match=f"'{trigger}' is not allowed in state 'requested'"):
            BuildModel().fire(trigger)
    m = BuildModel()
    m.fire(f"enter_{FIRST_STAGE}")
    assert m.state == FIRST_STAGE
    m = BuildModel()
    m.fire("fail")
    assert m.state == FAILED
    m.fire("resume")  # a build that failed before any stage returns to requested
    assert m.state == REQUESTED


def test_pause_and_resume_return_to_the_stage_left() -> None:
    m = walk_to("cleanup")
    m.fire("pause")
    assert (m.state, m.stage) == (PAUSED, "cleanup")
    for trigger in ("complete", "pause", "enter_seal", "succeed", "fail"):
        with pytest.raises(IllegalMove, match=f"'{trigger}' is not allowed in state 'paused'"):
            m.fire(trigger)
    m.fire("resume")
    assert (m.state, m.stage, m.stage_done) == ("cleanup", "cleanup", False)


def test_failed_build_resumes_in_its_stage_with_its_progress() -> None:
    m = walk_to("export")
    m.fire("complete")
    m.fire("fail")
    assert m.state == FAILED
    m.fire("resume")
    assert (m.state, m.stage_done) == ("export", True)
    m.fire("enter_document")


def test_abort_from_anywhere_but_the_end() -> None:
    for start in (BuildModel(), walk_to("seal")):
        start.fire("abort")
        assert start.state == ABORTED
    m = walk_to("seal")
    m.fire("pause")
    m.fire("abort")
    assert m.state == ABORTED
    for trigger in ("resume", "abort", "enter_provision", "fail", "complete"):
        with pytest.raises(IllegalMove, match=f"'{trigger}' is not allowed in state 'aborted'"):
            m.fire(trigger)


def test_succeeded_is_final() -> None:
    m = walk_to(LAST_STAGE)
    m.fire("complete")
    m.fire("succeed")
    for trigger in ("resume", "abort", "fail", "pause", "complete", "succeed", f"enter_{FIRST_STAGE}"):
        with pytest.raises(IllegalMove, match=f"'{trigger}' is not allowed in state 'succeeded'"):
            m.fire(trigger)


def test_unknown_trigger_is_an_illegal_move() -> None:
    with pytest.raises(IllegalMove, match="'teleport' is not allowed in state 'requested'"):
        BuildModel().fire("teleport")


def test_restoring_a_model_at_a_folded_state() -> None:
    m = BuildModel("compact", stage_done=True, stage="compact")
    m.fire("enter_export")
    assert m.state == "export"


def test_mermaid_diagram_has_every_state_and_move() -> None:
    text = mermaid_diagram()
    assert "stateDiagram-v2" in text
    for state in MACHINE_STATES:
        assert re.search(rf'state "{state}" as {state}\b', text), state
    for a, b in zip(STAGE_NAMES, STAGE_NAMES[1:], strict=False):
        assert f"{a} --> {b}: enter_{b}" in text
    assert f"{LAST_STAGE} --> {SUCCEEDED}: succeed" in text


def test_graph_command_prints_the_diagram() -> None:
    proc = run_cli("graph", db=None)
    assert proc.returncode == 0, proc.stderr
    assert "stateDiagram-v2" in proc.stdout
    for stage in STAGE_NAMES:
        assert f'state "{stage}" as {stage}' in proc.stdout

"""The fold: a hand-made stream becomes a build's state; a corrupt stream is refused at
its first bad event, and the error names that seq."""

from __future__ import annotations

from typing import Any

import pytest

from events.chain import GENESIS_HASH
from events.errors import CorruptStreamError
from events.memory_store import InMemoryEventStore
from events.model import (
    BuildPaused,
    BuildRequested,
    BuildResumed,
    BuildSucceeded,
    Event,
    FactRecorded,
    OperatorDecision,
    StageCompleted,
    StageEntered,
    StageFailed,
    StepFinished,
    StepStarted,
    event_payload,
)
from events.store import NewEvent, RecordedEvent, stamp
from states.projection import DONE, RETRY, RUNNING, Projector, fold
from states.stages import STAGE_NAMES

BID = "b-1"


def requested() -> BuildRequested:
    return BuildRequested(
        spec={"name": "x"},
        spec_sha256="a" * 64,
        spec_path="/s.yaml",
        tool_version="0",
        requested_by="me",
        hostname="h",
    )


def started(stage: str, step: str, attempt: int = 1) -> StepStarted:
    return StepStarted(
        stage=stage, step=step, attempt=attempt, target="local", command="true", idempotent=False, timeout_s=1
    )


def finished(
    stage: str, step: str, attempt: int = 1, outcome: str = "succeeded", code: int | None = 0
) -> StepFinished:
    return StepFinished(
        stage=stage, step=step, attempt=attempt, outcome=outcome, exit_code=code, duration_s=0.5
    )  # type: ignore[arg-type]


def stream(*events: Event | NewEvent) -> list[RecordedEvent]:
    news = [e if isinstance(e, NewEvent) else NewEvent(e.type, event_payload(e)) for e in events]
    return stamp(BID, 0, GENESIS_HASH, news)


def whole_build() -> list[Event]:
    out: list[Event] = [requested()]
    for stage in STAGE_NAMES:
        out.append(StageEntered(stage=stage))
        if stage == "update":
            out += [
                started(stage, "a"),
                finished(stage, "a"),
                FactRecorded(key="kernel", value="6.1", source="update/a"),
            ]
        out.append(StageCompleted(stage=stage))
    out.append(BuildSucceeded())
    return out


def test_fold_of_a_whole_build() -> None:
    events = stream(*whole_build())
    st = fold(BID, events)
    assert st.status == "succeeded"
    assert st.terminal
    assert st.completed_stages == list(STAGE_NAMES)
    assert st.steps["update/a"].status == DONE
    assert st.steps["update/a"].duration_s == 0.5
    assert st.facts == {"kernel": "6.1"}
    assert st.spec == {"name": "x"}
    assert st.requested_by == "me"
    assert st.events == st.head_seq == len(events)
    assert st.head_hash == events[-1].hash
    assert st.in_doubt == []
    assert st.runs == 1


def test_projector_applied_one_by_one_equals_fold_at_every_prefix() -> None:
    events = stream(*whole_build())
    projector = Projector(BID)
    for i, ev in enumerate(events, start=1):
        projector.apply(ev)
        expected = fold(BID, events[:i])
        assert (projector.state.status, projector.state.stage, projector.state.stage_done) == (
            expected.status,
            expected.stage,
            expected.stage_done,
        )


def test_step_started_but_not_finished_is_in_doubt() -> None:
    st = fold(BID, stream(requested(), StageEntered(stage="provision"), started("provision", "mk")))
    assert st.status == "provision"
    assert st.in_doubt == ["provision/mk"]
    assert st.steps["provision/mk"].status == RUNNING
    assert st.steps["provision/mk"].started_seq == 3


def test_pause_decision_and_resume() -> None:
    base: list[Event] = [
        requested(),
        StageEntered(stage="provision"),
        BuildResumed(resumed_by="me", hostname="h", tool_version="0", from_status="provision"),
        BuildPaused(stage="provision", step="mk", reason="in doubt"),
    ]
    base.insert(2, started("provision", "mk"))
    st = fold(BID, stream(*base))
    assert (st.status, st.stage, st.paused_step, st.reason) == (
        "paused",
        "provision",
        "provision/mk",
        "in doubt",
    )
    assert st.runs == 2
    retry = fold(
        BID, stream(*base, OperatorDecision(stage="provision", step="mk", decision="retry", operator="op"))
    )
    assert retry.status == "provision"
    assert retry.steps["provision/mk"].status == RETRY
    assert retry.paused_step == ""
    skip = fold(
        BID, stream(*base, OperatorDecision(stage="provision", step="mk", decision="skip", operator="op"))
    )
    assert skip.steps["provision/mk"].status == DONE
    assert skip.steps["provision/mk"].outcome == "skipped"


def test_failed_stage_then_resume() -> None:
    events: list[Event] = [
        requested(),
        StageEntered(stage="provision"),
        started("provision", "mk"),
        finished("provision", "mk", outcome="failed", code=2),
        StageFailed(stage="provision", step="mk", reason="exit 2"),
    ]
    st = fold(BID, stream(*events))
    assert (st.status, st.stage, st.reason) == ("failed", "provision", "exit 2")
    events += [
        BuildResumed(resumed_by="me", hostname="h", tool_version="0", from_status="failed"),
        started("provision", "mk", 2),
        finished("provision", "mk", 2),
    ]
    st = fold(BID, stream(*events))
    assert (st.status, st.reason) == ("provision", "")
    assert st.steps["provision/mk"].attempts == 2
    assert st.steps["provision/mk"].status == DONE


def _corrupt(events: list[RecordedEvent]) -> CorruptStreamError:
    with pytest.raises(CorruptStreamError) as info:
        fold(BID, events)
    return info.value


def _raw(type_: str, payload: dict[str, Any]) -> NewEvent:
    return NewEvent(type_, payload)


@pytest.mark.parametrize(
    ("events", "seq", "reason"),
    [
        ([StageEntered(stage="provision")], 1, "a build must begin with BuildRequested"),
        ([requested(), requested()], 2, "only the first event may request a build"),
        (
            [requested(), StageEntered(stage="update")],
            2,
            "'enter_update' is not allowed in state 'requested'",
        ),
        ([requested(), StageEntered(stage="mars")], 2, "unknown stage 'mars'"),
        (
            [requested(), StageEntered(stage="provision"), StageEntered(stage="install_os")],
            3,
            "stage 'provision' is not complete",
        ),
        ([requested(), StageEntered(stage="provision"), finished("provision", "x")], 3, "was not running"),
        (
            [
                requested(),
                StageEntered(stage="provision"),
                started("provision", "x"),
                finished("provision", "x", 2),
            ],
            4,
            "step provision/x attempt 2 was not running",
        ),
        (
            [
                requested(),
                StageEntered(stage="provision"),
                started("provision", "x"),
                StageCompleted(stage="provision"),
            ],
            4,
            "step x is still running",
        ),
        (
            [requested(), StageEntered(stage="provision"), started("update", "x")],
            3,
            "event is for stage 'update'",
        ),
        ([requested(), StageEntered(stage="provision"), BuildSucceeded()], 3, "'succeed' is not allowed"),
        (
            [requested(), OperatorDecision(stage="provision", step="x", decision="skip", operator="o")],
            2,
            "only a paused build takes a decision",
        ),
        (
            [*whole_build(), BuildResumed(resumed_by="m", hostname="h", tool_version="0", from_status="x")],
            len(whole_build()) + 1,
            "the build has ended",
        ),
        ([requested(), _raw("Teleported", {})], 2, "unknown event type 'Teleported'"),
        ([requested(), _raw("StageEntered", {})], 2, "malformed StageEntered"),
        ([requested(), _raw("StepStarted", {"stage": "requested"})], 2, "malformed StepStarted"),
    ],
)
def test_corrupt_streams_name_the_first_bad_seq(
    events: list[Event | NewEvent], seq: int, reason: str
) -> None:
    err = _corrupt(stream(*events))
    assert err.seq == seq
    assert err.build_id == BID
    assert reason in err.reason
    assert f"build {BID}: event seq {seq} is not a legal move" in str(err)


def test_a_missing_seq_is_named() -> None:
    events = stream(requested(), StageEntered(stage="provision"), StageCompleted(stage="provision"))
    err = _corrupt([events[0], events[2]])
    assert (err.seq, err.reason) == (2, "seq 2 is missing")


def test_fold_reads_from_any_store() -> None:
    store = InMemoryEventStore()
    events = whole_build()
    news = [NewEvent(e.type, event_payload(e)) for e in events]
    store.append(BID, 0, GENESIS_HASH, news[:5])
    head = store.head(BID)
    assert head is not None
    store.append(BID, head[0], head[1], news[5:])
    st = fold(BID, store.read(BID))
    assert st.status == "succeeded"
    assert fold(BID, store.read(BID, until_seq=6)).status == "update"

"""The engine is the only writer: a host operation's programs and checkpoints are
reported through the attempt's journal and recorded by the engine (real SQLite file,
real programs, a worker thread like a real host operation's)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest

from events.errors import CorruptStreamError
from events.store import SqliteEventStore
from orchestrator import builds
from orchestrator.audit import audit_markdown, audit_report
from orchestrator.engine import Engine, Outcome
from orchestrator.qemu._run import QemuToolError, run_tool
from orchestrator.recorder import BuildRecorder
from orchestrator.secrets import REDACTOR
from orchestrator.stepcontext import current_attempt
from orchestrator.targets.base import CommandResult, OutputSink, Target
from orchestrator.targets.local import LocalTarget
from orchestrator.view import BuildView
from states.projection import fold
from states.steps import Step, operation_step
from tests.support.cli import write_spec

SECRET = "s3cr3t-in-argv-9f2c"


class OperationsHost:
    """A host whose only steps are in-process operations on the ``host`` target, like
    the QEMU host's (a test double of the Host port, not of the outside world)."""

    kind = "test"

    def __init__(self, view: BuildView, ops: Mapping[str, object], stage: str = "provision") -> None:
        self.view = view
        self.stage = stage
        self._target = LocalTarget(name="host", operations=ops)  # type: ignore[arg-type]
        self.names = list(ops)

    def plan(self, stage: str) -> list[Step]:
        if stage != self.stage:
            return []
        return [operation_step(stage, name, f"test operation {name}", target="host") for name in self.names]

    def target(self, name: str) -> Target:
        return self._target

    def session_step(self, step: Step) -> Step | None:
        return None

    def abort_steps(self, stage: str) -> list[Step]:
        return []

    def closing_steps(self, stage: str) -> list[Step]:
        return []

    async def close(self) -> None:
        return


async def make_disk(_params: Mapping[str, object], sink: OutputSink) -> CommandResult:
    def work() -> None:
        run_tool(["sh", "-c", 'echo "made $1"; echo note >&2', "gmi", SECRET], what="making a disk")
        attempt = current_attempt()
        assert attempt is not None
        attempt.journal.progress({"bytes_done": "1048576"})
        run_tool(["true"], what="a second program")

    await asyncio.to_thread(work)
    return CommandResult(0)


async def failing_tool(_params: Mapping[str, object], sink: OutputSink) -> CommandResult:
    try:
        await asyncio.to_thread(run_tool, ["sh", "-c", "exit 3"], what="a failing tool")
    except QemuToolError as exc:
        return CommandResult(1, error=str(exc))
    return CommandResult(0)


def _new_build(tmp_path: Path) -> tuple[SqliteEventStore, str, BuildRecorder]:
    store = SqliteEventStore(tmp_path / "events.db")
    spec = write_spec(tmp_path / "w")
    build_id = builds.request(store, builds.prepare(spec))
    return store, build_id, BuildRecorder(store, build_id)


def test_programs_and_checkpoints_of_an_operation_are_recorded_by_the_engine(tmp_path: Path) -> None:
    REDACTOR.add(SECRET)
    store, build_id, recorder = _new_build(tmp_path)
    host = OperationsHost(BuildView(recorder), {"disk.make": make_disk})
    result = asyncio.run(Engine(recorder, host).run())
    assert result.outcome is Outcome.SUCCEEDED

    events = list(store.read(build_id))
    started = next(e for e in events if e.type == "StepStarted" and e.payload["step"] == "disk.make")
    subs = [e for e in events if e.type.startswith("Subcommand") or e.type == "StepProgress"]
    assert [e.type for e in subs] == [
        "SubcommandStarted",
        "SubcommandFinished",
        "StepProgress",
        "SubcommandStarted",
        "SubcommandFinished",
    ]
    first_start, first_end = subs[0].payload, subs[1].payload
    assert first_start["argv"][1:] == ["-c", 'echo "made $1"; echo note >&2', "gmi", "***"], "secret masked"
    assert first_start["argv"][0].endswith("/sh")
    assert (first_start["stage"], first_start["step"], first_start["attempt"]) == (
        "provision",
        "disk.make",
        1,
    )
    assert first_end["exit_code"] == 0
    assert first_end["stdout"]["head"] == "made ***\n"
    assert first_end["stderr"]["head"] == "note\n"
    assert subs[2].payload["values"] == {"bytes_done": "1048576"}
    assert started.seq < subs[0].seq and subs[-1].seq < next(
        e.seq for e in events if e.type == "StepFinished" and e.payload["step"] == "disk.make"
    )
    assert started.payload["command_id"], "each attempt carries a command id"
    assert SECRET not in (tmp_path / "events.db").read_bytes().decode("latin-1")

    state = fold(build_id, store.read(build_id))
    assert state.progress == {"provision/disk.make": {"bytes_done": "1048576"}}
    text = audit_markdown(audit_report(state, store.read(build_id), store.verify(build_id)))
    assert "program 1: exit 0" in text and "program 2: exit 0" in text
    assert "made $1" in text and SECRET not in text


def test_a_failing_program_is_recorded_with_its_status(tmp_path: Path) -> None:
    store, build_id, recorder = _new_build(tmp_path)
    host = OperationsHost(BuildView(recorder), {"tool.fail": failing_tool})
    result = asyncio.run(Engine(recorder, host).run())
    assert result.outcome is Outcome.FAILED
    (finished,) = [e.payload for e in store.read(build_id) if e.type == "SubcommandFinished"]
    assert finished["exit_code"] == 3


def test_a_program_outside_an_open_attempt_is_refused_by_the_grammar(tmp_path: Path) -> None:
    store, build_id, recorder = _new_build(tmp_path)
    host = OperationsHost(BuildView(recorder), {"disk.make": make_disk})
    asyncio.run(Engine(recorder, host).run())
    events = list(store.read(build_id))
    # Move the checkpoint after its step finished: the fold must refuse the stream.
    i = next(i for i, e in enumerate(events) if e.type == "StepProgress")
    j = next(j for j, e in enumerate(events) if e.type == "StepFinished" and j > i)
    moved = events[:i] + events[i + 1 : j + 1] + [events[i]] + events[j + 1 :]
    renumbered = [e._replace(seq=n) for n, e in enumerate(moved, start=1)]
    with pytest.raises(CorruptStreamError, match=r"provision/disk\.make attempt 1 is not running"):
        fold(build_id, renumbered)


def test_the_view_gives_hosts_no_way_to_write(tmp_path: Path) -> None:
    _, build_id, recorder = _new_build(tmp_path)
    view = BuildView(recorder)
    assert not hasattr(view, "record") and not hasattr(view, "store")
    snapshot = view.state
    snapshot.facts["planted"] = "x"
    assert "planted" not in recorder.state.facts
    with pytest.raises(ValueError, match="this view shows build"):
        list(view.read("another-build"))

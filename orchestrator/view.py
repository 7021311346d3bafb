"""What hosts and their operations may know of a build: its state and its events,
read-only. Only the engine writes to the log (through its recorder); a host that needs
something recorded returns it in its result (facts, artifacts) or reports it through
the attempt's journal (``orchestrator/stepcontext.py``)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from events.store import ChainRow, RecordedEvent
    from orchestrator.recorder import BuildRecorder
    from states.projection import BuildState


class EventReader(Protocol):
    """Reading a build's events (the subset of the store's port that packaging uses)."""

    def read(
        self, build_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> Iterator[RecordedEvent]: ...

    def chain_rows(self, build_id: str) -> Iterator[ChainRow]: ...


class BuildView:
    """A read-only window on one build, as the engine's recorder sees it now."""

    def __init__(self, recorder: BuildRecorder) -> None:
        self._recorder = recorder
        self.build_id = recorder.build_id

    @property
    def state(self) -> BuildState:
        """A snapshot of the folded state: changing it changes nothing."""
        return copy.deepcopy(self._recorder.state)

    @property
    def facts(self) -> dict[str, str]:
        return dict(self._recorder.state.facts)

    def read(
        self, build_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> Iterator[RecordedEvent]:
        self._same(build_id)
        return self._recorder.store.read(build_id, after_seq=after_seq, until_seq=until_seq)

    def chain_rows(self, build_id: str) -> Iterator[ChainRow]:
        self._same(build_id)
        return self._recorder.store.chain_rows(build_id)

    def _same(self, build_id: str) -> None:
        if build_id != self.build_id:
            msg = f"this view shows build {self.build_id}, not {build_id}"
            raise ValueError(msg)

"""Appends a build's events and keeps its folded state current.

Every new event is first applied to the projection (so an illegal move never
reaches the log), then written; if the write fails the projection is rebuilt from
the store.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from events.blobs import BlobStore
from events.errors import StoreError
from events.model import Event, event_payload
from events.store import NewEvent, RecordedEvent, SqliteEventStore, stamp
from states.projection import BuildState, Projector

FAULT_KILL_AFTER_SEQ = "GMI_FSM_FAULT_KILL_AFTER_SEQ"


def fault_kill_after_seq() -> int:
    """Fault injection for the crash tests (docs/testing.md): kill this process with
    SIGKILL right after the event with this seq is committed; 0 (unset) is off.
    Raises StoreError for a value that is not a whole number, before anything is written
    (``builds.open_store`` calls it too, before it creates a database)."""
    raw = os.environ.get(FAULT_KILL_AFTER_SEQ, "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise StoreError(
            f"{FAULT_KILL_AFTER_SEQ}={raw!r} is not a whole number (an event seq, for the crash tests)",
            hint=f"unset {FAULT_KILL_AFTER_SEQ} (it is for tests only), or set it to a seq like 12",
        )
    return int(raw)


class BuildRecorder:
    def __init__(self, store: SqliteEventStore, build_id: str) -> None:
        self._kill_after_seq = fault_kill_after_seq()
        self.store = store
        self.build_id = build_id
        self.blobs = BlobStore(store.conn)
        self.listeners: list[Callable[[RecordedEvent], None]] = []
        self._projector = self._load()

    def _load(self) -> Projector:
        projector = Projector(self.build_id)
        for ev in self.store.read(self.build_id):
            projector.apply(ev)
        return projector

    @property
    def state(self) -> BuildState:
        return self._projector.state

    def record(self, *events: Event, sync: bool = True) -> list[RecordedEvent]:
        """Append ``events`` (one transaction). ``sync=False``: see SqliteEventStore.insert."""
        st = self.state
        stamped = stamp(
            self.build_id,
            st.head_seq,
            st.head_hash,
            [NewEvent(e.type, event_payload(e)) for e in events],
        )
        try:
            for ev in stamped:
                self._projector.apply(ev)
            self.store.insert(stamped, sync=sync)
        except BaseException:
            self._projector = self._load()
            raise
        for ev in stamped:
            for listener in self.listeners:
                listener(ev)
        if self._kill_after_seq and any(ev.seq >= self._kill_after_seq for ev in stamped):
            os.kill(os.getpid(), signal.SIGKILL)
        return stamped

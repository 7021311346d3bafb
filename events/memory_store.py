"""An in-memory adapter of the :class:`~events.store.EventStore` port.

Same semantics as :class:`~events.store.SqliteEventStore` (the contract suite in
``tests/events/test_store_contract.py`` runs against both): optimistic concurrency on
``(build_id, seq)``, all-or-nothing batches, the same hash chain and the same
:func:`~events.store.verify_chain`. Payloads are kept as canonical JSON text, so a
reader can never change what was stored. Useful for fast tests of code that only
needs the port; nothing survives the process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence

from events.chain import GENESIS_HASH, canonical_json
from events.errors import ConcurrencyError, StoreError
from events.store import BuildSummary, ChainReport, ChainRow, NewEvent, RecordedEvent, stamp, verify_chain

_Row = tuple[int, RecordedEvent, str]  # (position, event, payload as canonical JSON)


class InMemoryEventStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, list[_Row]] = {}
        self._position = 0

    def append(
        self, build_id: str, expected_seq: int, prev_hash: str, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        stamped = stamp(build_id, expected_seq, prev_hash, events)
        if not stamped:
            return stamped
        texts = [canonical_json(ev.payload) for ev in stamped]
        with self._lock:
            rows = self._rows.get(build_id, [])
            head_seq, head_hash = (rows[-1][1].seq, rows[-1][1].hash) if rows else (0, GENESIS_HASH)
            first = stamped[0]
            if first.seq <= head_seq:
                raise ConcurrencyError(
                    f"build {build_id}: another runner appended event seq {first.seq} "
                    "first; nothing was written by this run",
                    hint="only one `gmi-fsm run` may drive a build at a time; check "
                    f"`gmi-fsm status {build_id}`",
                )
            if first.seq != head_seq + 1 or first.prev_hash != head_hash:
                raise StoreError(
                    f"build {build_id}: event seq {first.seq} does not continue the chain "
                    f"(head is seq {head_seq}); nothing was written",
                    hint="append after the current head (a bug in the caller)",
                )
            out: list[RecordedEvent] = []
            new_rows: list[_Row] = []
            position = self._position
            for ev, text in zip(stamped, texts, strict=True):
                position += 1
                recorded = RecordedEvent(
                    ev.build_id, ev.seq, ev.type, ev.at, json.loads(text), ev.prev_hash, ev.hash, position
                )
                new_rows.append((position, recorded, text))
                out.append(recorded)
            self._rows.setdefault(build_id, []).extend(new_rows)
            self._position = position
        return out

    def read(
        self, build_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> Iterator[RecordedEvent]:
        until = until_seq if until_seq is not None else 2**62
        with self._lock:
            rows = list(self._rows.get(build_id, []))
        for position, ev, text in rows:
            if after_seq < ev.seq <= until:
                yield RecordedEvent(
                    ev.build_id, ev.seq, ev.type, ev.at, json.loads(text), ev.prev_hash, ev.hash, position
                )

    def builds(self) -> list[BuildSummary]:
        with self._lock:
            items = [rows for rows in self._rows.values() if rows]
        items.sort(key=lambda rows: rows[0][0])
        return [
            BuildSummary(
                rows[0][1].build_id, rows[0][1].at, rows[-1][1].at, rows[-1][1].seq, rows[-1][1].type
            )
            for rows in items
        ]

    def head(self, build_id: str) -> tuple[int, str] | None:
        with self._lock:
            rows = self._rows.get(build_id)
            return (rows[-1][1].seq, rows[-1][1].hash) if rows else None

    def chain_rows(self, build_id: str) -> Iterator[ChainRow]:
        with self._lock:
            rows = list(self._rows.get(build_id, []))
        for _pos, ev, text in rows:
            yield (ev.seq, ev.type, ev.at, text, ev.prev_hash, ev.hash)

    def verify(self, build_id: str) -> ChainReport:
        return verify_chain(build_id, self.chain_rows(build_id), self.head(build_id))

    def close(self) -> None:
        return

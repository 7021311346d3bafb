"""The one contract every EventStore adapter passes: SQLite (a real file) and in-memory.

Style after the eventsourcing library's recorder tests: one parametrized fixture,
one class of behaviours, each checked against both adapters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.chain import GENESIS_HASH, canonical_json, event_hash
from events.errors import ConcurrencyError, StoreError
from events.memory_store import InMemoryEventStore
from events.store import EventStore, NewEvent, SqliteEventStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    s: EventStore
    s = SqliteEventStore(tmp_path / "events.db") if request.param == "sqlite" else InMemoryEventStore()
    try:
        yield s
    finally:
        s.close()


def ev(n: int, type_: str = "FactRecorded") -> NewEvent:
    return NewEvent(type_, {"key": f"k{n}", "value": f"v{n} – ünïcode", "source": "test"})


def append_at_head(store: EventStore, build_id: str, *events: NewEvent) -> None:
    head = store.head(build_id) or (0, GENESIS_HASH)
    store.append(build_id, head[0], head[1], list(events))


class TestEventStoreContract:
    def test_new_store_is_empty(self, store: EventStore) -> None:
        assert store.builds() == []
        assert store.head("nope") is None
        assert list(store.read("nope")) == []
        assert store.verify("nope").ok

    def test_append_then_read_in_order(self, store: EventStore) -> None:
        out = store.append("b", 0, GENESIS_HASH, [ev(1), ev(2), ev(3)])
        assert [e.seq for e in out] == [1, 2, 3]
        read = list(store.read("b"))
        assert [(e.seq, e.type, e.payload) for e in read] == [(e.seq, e.type, e.payload) for e in out]
        assert [e.hash for e in read] == [e.hash for e in out]
        assert read[0].payload["value"] == "v1 – ünïcode"
        assert [e.seq for e in store.read("b", after_seq=1)] == [2, 3]
        assert [e.seq for e in store.read("b", until_seq=2)] == [1, 2]
        assert [e.seq for e in store.read("b", after_seq=1, until_seq=2)] == [2]

    def test_appends_continue_across_calls(self, store: EventStore) -> None:
        for n in range(1, 6):
            append_at_head(store, "b", ev(n))
        assert [e.payload["key"] for e in store.read("b")] == [f"k{n}" for n in range(1, 6)]
        assert store.verify("b").ok

    def test_empty_batch_writes_nothing(self, store: EventStore) -> None:
        assert store.append("b", 0, GENESIS_HASH, []) == []
        assert store.head("b") is None
        assert store.builds() == []

    def test_reading_returns_copies(self, store: EventStore) -> None:
        store.append("b", 0, GENESIS_HASH, [ev(1)])
        first = next(iter(store.read("b")))
        first.payload["value"] = "changed by a reader"
        assert next(iter(store.read("b"))).payload["value"] == "v1 – ünïcode"
        assert store.verify("b").ok

    def test_stale_append_raises_concurrency_error_and_writes_nothing(self, store: EventStore) -> None:
        store.append("b", 0, GENESIS_HASH, [ev(1), ev(2)])
        before = [(e.seq, e.hash) for e in store.read("b")]
        head = store.head("b")
        with pytest.raises(ConcurrencyError, match="another runner appended event seq 1"):
            store.append("b", 0, GENESIS_HASH, [ev(9)])
        assert [(e.seq, e.hash) for e in store.read("b")] == before
        assert store.head("b") == head
        assert store.verify("b").ok

    def test_failed_batch_is_all_or_nothing(self, store: EventStore) -> None:
        """A stale batch of three: its first event conflicts, its other two would land in
        free slots (seq 3 and 4). None of them may be written."""
        out = store.append("b", 0, GENESIS_HASH, [ev(1), ev(2)])
        with pytest.raises(ConcurrencyError):
            store.append("b", 1, out[0].hash, [ev(7), ev(8), ev(9)])
        assert [e.seq for e in store.read("b")] == [1, 2]
        assert store.head("b") == (2, out[1].hash)
        # The next correct append still works.
        append_at_head(store, "b", ev(3))
        assert [e.seq for e in store.read("b")] == [1, 2, 3]
        assert store.verify("b").ok

    def test_a_gap_or_a_wrong_prev_hash_is_refused(self, store: EventStore) -> None:
        out = store.append("b", 0, GENESIS_HASH, [ev(1)])
        with pytest.raises(StoreError, match="does not continue the chain"):
            store.append("b", 5, out[0].hash, [ev(2)])
        with pytest.raises(StoreError, match="does not continue the chain"):
            store.append("b", 1, "f" * 64, [ev(2)])
        with pytest.raises(StoreError, match="does not continue the chain"):
            store.append("fresh", 0, "f" * 64, [ev(1)])
        assert [e.seq for e in store.read("b")] == [1]
        assert store.head("fresh") is None
        assert store.verify("b").ok

    def test_hash_chain_links_every_event(self, store: EventStore) -> None:
        store.append("b", 0, GENESIS_HASH, [ev(1), ev(2)])
        append_at_head(store, "b", ev(3), ev(4))
        prev = GENESIS_HASH
        for e in store.read("b"):
            assert e.prev_hash == prev
            assert e.hash == event_hash("b", e.seq, e.type, e.at, canonical_json(e.payload), e.prev_hash)
            prev = e.hash
        report = store.verify("b")
        assert report.ok
        assert report.events == 4
        assert report.head_hash == prev

    def test_head_tracks_the_last_event(self, store: EventStore) -> None:
        assert store.head("b") is None
        out = store.append("b", 0, GENESIS_HASH, [ev(1)])
        assert store.head("b") == (1, out[0].hash)
        out = store.append("b", 1, out[0].hash, [ev(2), ev(3)])
        assert store.head("b") == (3, out[-1].hash)

    def test_several_builds_interleaved(self, store: EventStore) -> None:
        ids = ["alpha", "beta", "gamma"]
        for round_ in range(1, 5):
            for i, bid in enumerate(ids):
                type_ = "BuildRequested" if round_ == 1 else f"Type{i}"
                append_at_head(store, bid, NewEvent(type_, {"build": bid, "round": round_}))
        for bid in ids:
            events = list(store.read(bid))
            assert [e.seq for e in events] == [1, 2, 3, 4]
            assert all(e.build_id == bid and e.payload["build"] == bid for e in events)
            assert store.verify(bid).ok
        summaries = store.builds()
        assert [s.build_id for s in summaries] == ids  # in order of first appearance
        assert [s.head_seq for s in summaries] == [4, 4, 4]
        assert [s.last_type for s in summaries] == ["Type0", "Type1", "Type2"]
        assert all(s.first_at <= s.last_at for s in summaries)

    def test_the_same_events_hash_the_same_in_both_adapters(self, store: EventStore) -> None:
        """The chain is adapter-independent: re-hashing what one adapter read gives
        what it stored (so an export verifies anywhere)."""
        out = store.append("b", 0, GENESIS_HASH, [ev(1)])
        e = out[0]
        assert e.hash == event_hash("b", 1, e.type, e.at, canonical_json(e.payload), GENESIS_HASH)


class TestSqliteOnly:
    """What only the SQLite adapter can show: atomicity when the failure comes in the
    middle of a batch, and durability across connections."""

    def test_failure_in_the_middle_of_a_batch_rolls_back_the_whole_batch(self, tmp_path: Path) -> None:
        store = SqliteEventStore(tmp_path / "e.db")
        store.append("b", 0, GENESIS_HASH, [ev(1)])
        store.conn.execute(
            "CREATE TEMP TRIGGER fail_seq_3 BEFORE INSERT ON events WHEN NEW.seq = 3 "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        head = store.head("b")
        # A trigger's RAISE(ABORT) is an IntegrityError to sqlite3, like a unique-key clash.
        with pytest.raises((sqlite3.DatabaseError, StoreError)):
            append_at_head(store, "b", ev(2), ev(3), ev(4))
        assert [e.seq for e in store.read("b")] == [1]
        assert store.head("b") == head
        store.close()

    def test_a_second_connection_sees_committed_events_and_loses_the_race(self, tmp_path: Path) -> None:
        a = SqliteEventStore(tmp_path / "e.db")
        b = SqliteEventStore(tmp_path / "e.db")
        out = a.append("x", 0, GENESIS_HASH, [ev(1)])
        assert [e.seq for e in b.read("x")] == [1]
        with pytest.raises(ConcurrencyError):
            b.append("x", 0, GENESIS_HASH, [ev(1)])
        b.append("x", 1, out[0].hash, [ev(2)])
        assert a.head("x") == b.head("x")
        assert a.verify("x").ok
        a.close()
        b.close()

    def test_an_unsynced_commit_is_visible_at_once_and_the_connection_goes_back_to_full(
        self, tmp_path: Path
    ) -> None:
        from events.store import stamp  # noqa: PLC0415

        store = SqliteEventStore(tmp_path / "e.db")
        other = SqliteEventStore(tmp_path / "e.db")
        store.insert(stamp("b", 0, GENESIS_HASH, [ev(1)]), sync=False)
        assert [e.seq for e in other.read("b")] == [1]  # in the WAL: a process crash keeps it
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        # Also after a refused write: the race is lost, nothing written, FULL restored.
        with pytest.raises(ConcurrencyError):
            store.insert(stamp("b", 0, GENESIS_HASH, [ev(1)]), sync=False)
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        seq, hash_ = store.head("b") or (0, GENESIS_HASH)
        store.insert(stamp("b", seq, hash_, [ev(2)]))
        assert store.verify("b").ok
        store.close()
        other.close()

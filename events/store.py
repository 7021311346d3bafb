"""The event store port, and its SQLite adapter.

Every adapter must pass the one contract suite in ``tests/events/test_store_contract.py``
(``events.memory_store.InMemoryEventStore`` is the other adapter).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote

import orjson

from events.chain import GENESIS_HASH, canonical_json, event_hash
from events.errors import ConcurrencyError, DiskFullError, StoreError, TamperedError, UnknownBuildError
from events.filelock import NameConflict, claim_name, release_name
from events.schema import SCHEMA_VERSION, current_version, migrate


class RecordedEvent(NamedTuple):
    """An event as stored: envelope plus payload (a plain dict, parsed into the
    typed union by ``events.model.parse_event`` when needed). A NamedTuple because
    replay creates hundreds of thousands of them: a frozen dataclass is 3x slower."""

    build_id: str
    seq: int
    type: str
    at: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    position: int = 0


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BuildSummary:
    build_id: str
    first_at: str
    last_at: str
    head_seq: int
    last_type: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of checking one build's hash chain. ``first_bad_seq`` is None when
    the chain is intact."""

    build_id: str
    events: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventStore(Protocol):
    """The port: what the engine and the CLI need of a store of events."""

    def append(
        self, build_id: str, expected_seq: int, prev_hash: str, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        """Append ``events`` after ``expected_seq`` atomically, or raise
        :class:`ConcurrencyError` (someone else appended first) and write nothing."""
        ...

    def read(
        self, build_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> Iterator[RecordedEvent]: ...

    def builds(self) -> list[BuildSummary]: ...

    def head(self, build_id: str) -> tuple[int, str] | None: ...

    def verify(self, build_id: str) -> ChainReport: ...

    def close(self) -> None: ...


ChainRow = tuple[int, str, str, str, str, str]
"""(seq, type, at, payload as stored text, prev_hash, hash)"""


class ChainCheck:
    """Checks rows one at a time (in storage order): contiguous seqs, links, hashes;
    then, at the end, that the chain stops where the recorded head says. Shared by
    every adapter, by ``verify`` and by the verified read of ``status``."""

    def __init__(self, build_id: str) -> None:
        self.build_id = build_id
        self.expected_seq = 1
        self.prev = GENESIS_HASH
        self.count = 0

    def row(
        self, seq: int, type_: str, at: str, payload_json: str, prev_hash: str, hash_: str
    ) -> ChainReport | None:
        """None if the row continues the chain, else the report naming the bad seq."""
        self.count += 1
        if seq != self.expected_seq:
            return self._bad(
                self.expected_seq,
                f"expected seq {self.expected_seq}, found seq {seq} (a row was deleted, inserted or moved)",
            )
        if prev_hash != self.prev:
            return self._bad(
                seq,
                "its prev_hash does not match the previous event's hash (a row was "
                "replaced, inserted or reordered)",
            )
        if event_hash(self.build_id, seq, type_, at, payload_json, prev_hash) != hash_:
            return self._bad(seq, "its content does not match its hash (edited)")
        self.prev = hash_
        self.expected_seq += 1
        return None

    def end(self, recorded_head: tuple[int, str] | None) -> ChainReport:
        if recorded_head is not None:
            head_seq, head_hash = recorded_head
            last = self.expected_seq - 1
            if head_seq != last or head_hash != self.prev:
                return self._bad(
                    min(head_seq, self.expected_seq),
                    f"the log ends at seq {last} but its recorded head is seq "
                    f"{head_seq} (events were removed from the end, or the head was edited)",
                )
        return ChainReport(self.build_id, self.count, self.prev)

    def _bad(self, seq: int, reason: str) -> ChainReport:
        return ChainReport(self.build_id, self.count, self.prev, seq, reason)


def verify_chain(
    build_id: str, rows: Iterator[ChainRow], recorded_head: tuple[int, str] | None
) -> ChainReport:
    """Check contiguity, links and hashes of ``rows`` (in storage order), then that the
    chain ends where the recorded head says. Shared by every adapter."""
    check = ChainCheck(build_id)
    for row in rows:
        bad = check.row(*row)
        if bad is not None:
            return bad
    return check.end(recorded_head)


def stamp(
    build_id: str, expected_seq: int, prev_hash: str, events: Sequence[NewEvent]
) -> list[RecordedEvent]:
    """Give new events their seq, timestamp and chained hashes."""
    out: list[RecordedEvent] = []
    at = utc_now()
    prev = prev_hash
    for offset, new in enumerate(events, start=1):
        seq = expected_seq + offset
        h = event_hash(build_id, seq, new.type, at, canonical_json(new.payload), prev)
        out.append(RecordedEvent(build_id, seq, new.type, at, new.payload, prev, h))
        prev = h
    return out


_INSERT = (
    "INSERT INTO events (build_id, seq, type, at, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = (
    "SELECT position, build_id, seq, type, at, payload, prev_hash, hash FROM events "
    "WHERE build_id = ? AND seq > ? AND seq <= ? ORDER BY seq"
)


class SqliteEventStore:
    """Events in one SQLite file: WAL, ``synchronous=FULL`` (see :meth:`insert`), foreign keys on.

    Safe for several processes at once: writers serialise on SQLite's lock (with a
    busy timeout) and the unique ``(build_id, seq)`` index rejects a stale writer.
    """

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5000, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.conn, self._name_claim = _connect(self.path, busy_timeout_ms=busy_timeout_ms, readonly=readonly)

    # -- writing -------------------------------------------------------------------

    def append(
        self, build_id: str, expected_seq: int, prev_hash: str, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        stamped = stamp(build_id, expected_seq, prev_hash, events)
        self.insert(stamped)
        return stamped

    def insert(self, stamped: Sequence[RecordedEvent], *, sync: bool = True) -> None:
        """Write events already stamped by :func:`stamp`, atomically.

        ``sync=False`` commits without waiting for the disk (``synchronous=NORMAL``
        for this transaction): the events survive a crash of this process at once, and
        a power loss once the next synced commit has flushed the WAL, which holds them
        in order before it. The engine uses it only for a step's outcome, never for
        the write-ahead intent (see orchestrator/engine.py).
        """
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only", hint="run without --readonly to write")
        if not stamped:
            return
        rows = [
            (r.build_id, r.seq, r.type, r.at, canonical_json(r.payload), r.prev_hash, r.hash) for r in stamped
        ]
        try:
            if not sync:
                self.conn.execute("PRAGMA synchronous = NORMAL")
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    self._check_continues(stamped[0])
                    self.conn.executemany(_INSERT, rows)
                    self.conn.execute("COMMIT")
                except BaseException:
                    rollback(self.conn)
                    raise
            finally:
                if not sync:
                    self.conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.IntegrityError as exc:
            first = stamped[0]
            if "UNIQUE" not in str(exc):
                # Not the (build_id, seq) race: another constraint or a trigger refused.
                raise StoreError(
                    f"build {first.build_id}: the event database refused event seq {first.seq}: {exc}",
                    hint="`gmi-fsm verify --all` checks the log; the database may have been altered",
                ) from exc
            raise ConcurrencyError(
                f"build {first.build_id}: another runner appended event seq {first.seq} "
                "first; nothing was written by this run",
                hint="only one `gmi-fsm run` may drive a build at a time; check "
                f"`gmi-fsm status {first.build_id}`",
            ) from exc
        except sqlite3.OperationalError as exc:
            raise store_error(exc, self.path) from exc

    def _check_continues(self, first: RecordedEvent) -> None:
        """Under the write lock: ``first`` must follow the build's head exactly. A stale
        seq is left to the unique index (a ConcurrencyError); a gap or a wrong
        ``prev_hash`` would break the chain, so it is refused before anything is written."""
        sql = "SELECT seq, hash FROM heads WHERE build_id = ?"
        row = self.conn.execute(sql, (first.build_id,)).fetchone()
        head_seq, head_hash = (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)
        if first.seq > head_seq and (first.seq != head_seq + 1 or first.prev_hash != head_hash):
            raise StoreError(
                f"build {first.build_id}: event seq {first.seq} does not continue the chain "
                f"(head is seq {head_seq}); nothing was written",
                hint="append after the current head (a bug in the caller)",
            )

    # -- reading -------------------------------------------------------------------

    def read(
        self, build_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> Iterator[RecordedEvent]:
        # Replay speed matters (>= 200k events/s): orjson decodes about twice as fast
        # as json, and the tuples are built directly, skipping NamedTuple.__new__.
        decode = orjson.loads
        new = tuple.__new__
        until = until_seq if until_seq is not None else 2**62
        try:
            cursor = self.conn.execute(_SELECT, (build_id, after_seq, until))
            for pos, bid, seq, type_, at, payload, prev, h in cursor:
                yield new(RecordedEvent, (bid, seq, type_, at, decode(payload), prev, h, pos))
        except sqlite3.OperationalError as exc:
            raise store_error(exc, self.path) from exc

    def read_verified(self, build_id: str) -> Iterator[RecordedEvent]:
        """Like :meth:`read` (all of a build's events), checking the hash chain and the
        recorded head on the way: raises :class:`TamperedError` at the first bad seq,
        before that event is yielded. One pass, so ``status`` pays one sha256 per
        event over ``read`` (docs/performance.md). Rows are read in seq order (the
        index); a row moved out of storage order is caught by its position."""
        decode = orjson.loads
        new = tuple.__new__
        check = ChainCheck(build_id)
        last_position = 0
        sql = (
            "SELECT position, seq, type, at, payload, prev_hash, hash FROM events "
            "WHERE build_id = ? ORDER BY seq"
        )
        try:
            for pos, seq, type_, at, payload, prev, h in self.conn.execute(sql, (build_id,)):
                bad = check.row(seq, type_, at, payload, prev, h)
                if bad is None and pos < last_position:
                    bad = check._bad(seq - 1, "it is stored out of order (rows were moved)")
                if bad is not None:
                    raise TamperedError(build_id, bad.first_bad_seq or seq, bad.reason)
                last_position = pos
                yield new(RecordedEvent, (build_id, seq, type_, at, decode(payload), prev, h, pos))
            end = check.end(self.head(build_id))
        except sqlite3.OperationalError as exc:
            raise store_error(exc, self.path) from exc
        if not end.ok:
            raise TamperedError(build_id, end.first_bad_seq or 1, end.reason)

    def chain_rows(self, build_id: str) -> Iterator[ChainRow]:
        """Rows in the order they were written (by position), payload as stored text."""
        yield from self.conn.execute(
            "SELECT seq, type, at, payload, prev_hash, hash FROM events WHERE build_id = ? ORDER BY position",
            (build_id,),
        )

    def head(self, build_id: str) -> tuple[int, str] | None:
        row = self.conn.execute("SELECT seq, hash FROM heads WHERE build_id = ?", (build_id,)).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def require(self, build_id: str) -> tuple[int, str]:
        head = self.head(build_id)
        if head is None:
            raise UnknownBuildError(
                f"no build {build_id!r} in {self.path}",
                hint="`gmi-fsm list` shows the builds in this database; is --db right?",
            )
        return head

    def builds(self) -> list[BuildSummary]:
        rows = self.conn.execute(
            "SELECT h.build_id, f.at, l.at, h.seq, l.type FROM heads h "
            "JOIN events f ON f.build_id = h.build_id AND f.seq = 1 "
            "JOIN events l ON l.build_id = h.build_id AND l.seq = h.seq "
            "ORDER BY f.position"
        ).fetchall()
        return [BuildSummary(*r) for r in rows]

    def build_ids(self) -> list[str]:
        """Every build id present, from the events themselves (not the heads table)."""
        return [
            r[0]
            for r in self.conn.execute("SELECT build_id FROM events GROUP BY build_id ORDER BY MIN(position)")
        ]

    def verify(self, build_id: str) -> ChainReport:
        return verify_chain(build_id, self.chain_rows(build_id), self.head(build_id))

    def close(self) -> None:
        self.conn.close()
        claim, self._name_claim = self._name_claim, None
        if claim is not None:
            release_name(*claim)


NameClaim = tuple[tuple[int, int, int], str]


def _claim(path: Path, name: str) -> NameClaim | None:
    """One database, one name: see :func:`events.filelock.claim_name`. A file with
    more than one hard link is refused outright (after a crash, its write-ahead log
    sits beside whichever name the crashed process used)."""
    try:
        links = os.stat(path).st_nlink
    except (FileNotFoundError, NotADirectoryError):
        return None  # not there (yet): SQLite creates it, or says why it cannot
    if links > 1:
        raise StoreError(
            f"the event database {path} has {links} hard links: SQLite keeps its write-ahead log "
            "beside the name a database is opened by, so two names for one database can lose "
            "events (sqlite.org/howtocorrupt.html, section 2.5); nothing was read or changed",
            hint=f"remove the other links (`find / -xdev -samefile {path}` lists them) and use one path",
        )
    try:
        return claim_name(path, name), name
    except NameConflict as exc:
        raise StoreError(
            f"the event database {path} is open in another process under another name ({exc}: "
            "a hard link, or a bind mount of the file); SQLite keeps its write-ahead log beside "
            "the name it is given, so two names would lose events; nothing was read or changed",
            hint=f"use one path to the database everywhere (here it is {name}), or wait for the "
            "other process to finish",
        ) from None
    except IsADirectoryError:
        return None  # not a regular file: SQLite says what is wrong with it
    except OSError as exc:
        raise StoreError(f"event database {path} cannot be opened ({exc.strerror})", hint="") from exc


def _connect(
    path: Path, *, busy_timeout_ms: int, readonly: bool
) -> tuple[sqlite3.Connection, NameClaim | None]:
    if readonly and not path.exists():
        raise StoreError(
            f"event database {path} does not exist",
            hint="give the right --db (or GMI_FSM_DB), or start a build with `gmi-fsm run`",
        )
    # SQLite names the WAL after the path it is given: give it the real one, so a
    # symlink or a relative path reaches the same log.
    name = os.path.realpath(path)
    claim = _claim(path, name)
    try:
        conn = _open(path, name, busy_timeout_ms=busy_timeout_ms, readonly=readonly)
    except BaseException:
        if claim is not None:
            release_name(*claim)
        raise
    if claim is None:  # a new database: created just now
        try:
            claim = _claim(path, name)
        except BaseException:
            conn.close()
            raise
    return conn, claim


def _open(path: Path, name: str, *, busy_timeout_ms: int, readonly: bool) -> sqlite3.Connection:
    if not readonly:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            why = f"{blocker} is a file, not a folder" if blocker else exc.strerror
            raise StoreError(
                f"cannot create the folder for the event database {path}: {why}",
                hint="choose a writable location with --db or GMI_FSM_DB",
            ) from exc
    uri = f"file:{quote(name)}" + ("?mode=ro" if readonly else "")
    try:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a write takes
        # the lock up front and never fails halfway on a lock upgrade.
        conn = sqlite3.connect(
            uri,
            uri=True,
            isolation_level=None,
            timeout=busy_timeout_ms / 1000,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        _refuse_foreign(conn, path)
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            if current_version(conn) != SCHEMA_VERSION:
                raise StoreError(
                    f"{path} has schema version {current_version(conn)}, expected {SCHEMA_VERSION}",
                    hint="open it once without --readonly so it is migrated",
                )
        elif current_version(conn) != SCHEMA_VERSION:
            migrate(conn)
    except sqlite3.DatabaseError as exc:
        raise store_error(exc, path) from exc
    except RuntimeError as exc:
        raise StoreError(str(exc), hint="upgrade gmi-fsm") from exc
    return conn


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """Never migrate (nor switch to WAL) another tool's SQLite database: a file with
    tables but no schema version of ours is not ours."""
    if current_version(conn) != 0:
        return
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    if tables:
        conn.close()
        raise StoreError(
            f"{path} is not a gmi-fsm event database (it holds other tables: {', '.join(tables[:5])}); "
            "nothing was changed",
            hint="point --db at the right file; do not reuse another tool's database",
        )


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back after an error, if SQLite has not done it already: on SQLITE_FULL
    (and a few other errors) it rolls the transaction back itself, and a second
    ROLLBACK would raise "no transaction is active" over the real error."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


_SQLITE_FULL = 13


def store_error(exc: sqlite3.DatabaseError, path: Path) -> StoreError:
    text = str(exc)
    if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or "database or disk is full" in text:
        folder = path.parent
        return DiskFullError(
            f"disk full: the event database {path} could not be written ({text}); the transaction "
            "was rolled back whole, the log is consistent",
            hint=f"free space on the filesystem that holds {folder} (`df -h {folder}`), then "
            "`gmi-fsm run --resume ID` continues the build",
        )
    if "locked" in text or "busy" in text:
        return StoreError(
            f"event database {path} is locked by another process ({text})",
            hint="wait for the other gmi-fsm (or sqlite3 shell) to finish, or raise GMI_FSM_BUSY_TIMEOUT_MS",
        )
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return StoreError(
            f"event database {path} cannot be written or opened ({text})",
            hint="check the file's and its folder's permissions (SQLite also needs to "
            "create -wal and -shm files beside it), or choose another --db",
        )
    if "not a database" in text or "malformed" in text:
        return StoreError(
            f"{path} is not a gmi-fsm event database ({text})",
            hint="point --db at the right file; do not reuse another tool's database",
        )
    return StoreError(f"event database {path}: {text}", hint="")

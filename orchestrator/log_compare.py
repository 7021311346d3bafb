"""``verify --against FILE``: a build against an exported event log (the
``.events.jsonl`` a package carries), event by event, naming the first divergence."""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from events.store import ChainCheck, ChainRow, SqliteEventStore


@dataclass(frozen=True, slots=True)
class Divergence:
    seq: int
    kind: str  # missing (in the file, not the database) | extra (the reverse) | different
    detail: str


@dataclass(frozen=True, slots=True)
class LogComparison:
    file: str
    events: int  # the file's events
    first_divergence: Divergence | None
    database_head: int
    last_hash: str  # the file's last event's hash


class WrongLog(ValueError):
    """The file is not an event log of this build (or not an event log at all)."""


def _db_rows(store: SqliteEventStore, build_id: str) -> sqlite3.Cursor:
    """A cursor, not a generator: the caller closes it even when it stops early."""
    return store.conn.execute(
        "SELECT seq, type, at, payload, prev_hash, hash FROM events WHERE build_id = ? ORDER BY seq",
        (build_id,),
    )


def _file_rows(path: Path, build_id: str) -> Generator[ChainRow, None, None]:
    from orchestrator.gmi.eventlog import EventLogError, parse_lines  # noqa: PLC0415

    with path.open(encoding="utf-8", errors="replace") as f:
        last = 0
        try:
            for number, (bid, row) in enumerate(parse_lines(f), start=1):
                if bid != build_id:
                    raise WrongLog(f"{path} is the event log of build {bid}, not {build_id}")
                if row[0] <= last:
                    raise WrongLog(
                        f"{path}: record {number} has seq {row[0]}, after seq {last}: not a log in order"
                    )
                last = row[0]
                yield row
        except EventLogError as exc:
            raise WrongLog(f"{path}: {exc}") from None


def compare_with_log(store: SqliteEventStore, build_id: str, path: Path) -> LogComparison:
    """The build against an exported event log (``.events.jsonl``), by seq: the first
    event the file has and the database lacks (missing), the reverse within the file's
    range (extra), or that differs. The database going on past the file's last event is
    normal for a package's log (exported at the document stage). Raises
    :class:`WrongLog` for another build's log or a file that is not one."""
    db = _db_rows(store, build_id)
    rows = _file_rows(path, build_id)
    try:
        return _compare(store, build_id, path, db, rows)
    finally:
        rows.close()
        db.close()


def _compare(
    store: SqliteEventStore, build_id: str, path: Path, db: sqlite3.Cursor, rows: Iterator[ChainRow]
) -> LogComparison:
    check = ChainCheck(build_id)
    file_chain_broken: int | None = None
    d = next(db, None)
    first: Divergence | None = None
    count = 0
    last: ChainRow | None = None
    for f in rows:
        count += 1
        last = f
        if file_chain_broken is None:
            bad = check.row(*f)
            if bad is not None:
                file_chain_broken = bad.first_bad_seq
        while first is None and d is not None and d[0] < f[0]:
            first = Divergence(d[0], "extra", f"seq {d[0]} is in the database but not in {path}")
            d = next(db, None)
        while d is not None and d[0] < f[0]:
            d = next(db, None)
        if first is not None:
            continue
        if d is None or d[0] != f[0]:
            first = Divergence(f[0], "missing", f"seq {f[0]} is in {path} but not in the database")
            continue
        fields = [
            name
            for name, a, b in zip(("type", "at", "payload", "prev_hash", "hash"), d[1:], f[1:], strict=True)
            if a != b
        ]
        if fields:
            first = Divergence(f[0], "different", f"seq {f[0]} differs from {path} (its {', '.join(fields)})")
        d = next(db, None)
    if count == 0:
        raise WrongLog(f"{path} holds no event")
    last_hash = last[5] if last else ""
    if first is not None:
        own = (
            f"; the file's own hash chain breaks at seq {file_chain_broken}: the file was edited"
            if file_chain_broken is not None
            else "; the file's own hash chain is intact"
        )
        first = Divergence(first.seq, first.kind, first.detail + own)
    head = store.head(build_id)
    return LogComparison(str(path), count, first, head[0] if head else 0, last_hash)

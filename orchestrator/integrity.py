"""Verify a build beyond its hash chain: its stored outputs, and the records of its
head kept outside the database.

The chain (``events.store``) finds any edited, inserted, reordered or deleted event,
and the ``heads`` row finds events deleted from the end. Two kinds of tampering get
past both, and are caught here:

- a rewritten output: the bytes of a command's output live in ``blob_chunks``,
  addressed by their sha256, and the events carry only that digest. Every blob an
  event references is re-hashed; a blob that no longer hashes to its name (or is
  gone) is reported with the events that reference it.
- a rewound head: delete the last events *and* move the ``heads`` row back, and what
  is left is a valid chain. But the build may have left records of its later head:
  its package's exported event log (every event, up to the head the manifest pins),
  the provenance statement (that head's seq and hash) and the manifest or its
  sidecar ``gmi-metadata.yml`` (``event_log_seq``/``event_log_head_hash``, in either
  file). They are looked for where the build wrote them: the paths its
  ``ArtifactRecorded`` events name, and the output folder of its frozen spec. A
  record of this build naming a seq the database does not reach means events were
  deleted; one naming another hash at a seq it does reach means the history was
  rewritten (and re-hashed). Records of other builds are ignored. Facts carry no seq,
  so they record no head. What no record survives cannot be told: deleting the last
  events *and* every record of them is not detectable from the build alone.

``compare_with_log`` is ``verify --against FILE``: the build against an exported
event log, event by event, naming the first divergence.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.blobs import INLINE_LIMIT, BlobStore
from events.errors import TamperedError
from events.store import ChainCheck, ChainReport, ChainRow, RecordedEvent, SqliteEventStore

RECORD_MAX_BYTES = 16 << 20  # a manifest or a provenance statement is a few KiB


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # chain | blob | rewound | record
    seq: int
    detail: str


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


@dataclass(slots=True)
class BuildVerification:
    build_id: str
    chain: ChainReport
    problems: list[Problem] = field(default_factory=list)
    consulted: list[str] = field(default_factory=list)
    blobs_checked: int = 0
    against: LogComparison | None = None

    @property
    def first(self) -> Problem | None:
        found = [*self.problems]
        if self.against is not None and self.against.first_divergence is not None:
            d = self.against.first_divergence
            found.append(Problem("against", d.seq, f"{d.kind}: {d.detail}"))
        return min(found, key=lambda p: p.seq, default=None)

    @property
    def ok(self) -> bool:
        return self.first is None

    @property
    def first_bad_seq(self) -> int | None:
        first = self.first
        return first.seq if first else None

    @property
    def reason(self) -> str:
        first = self.first
        return first.detail if first else ""


def verify_build(
    store: SqliteEventStore, build_id: str, *, against: Path | None = None, records: bool = True
) -> BuildVerification:
    """Chain, blobs and records of one build (and, with ``against``, the comparison)."""
    chain = store.verify(build_id)
    out = BuildVerification(build_id, chain)
    if not chain.ok:
        out.problems.append(Problem("chain", chain.first_bad_seq or 1, chain.reason))
    events = list(store.read(build_id))
    out.blobs_checked = _check_blobs(store, events, out.problems)
    if records:
        _check_records(store, build_id, events, out)
    if against is not None:
        out.against = compare_with_log(store, build_id, against)
    return out


def require_intact(store: SqliteEventStore, build_id: str) -> None:
    """Raise :class:`TamperedError` unless ``verify`` would pass (nothing may run or be
    written on a log that fails it)."""
    result = verify_build(store, build_id)
    first = result.first
    if first is not None:
        raise TamperedError(build_id, first.seq, first.detail)


# -- blobs ---------------------------------------------------------------------------------


def _digests(value: Any, where: str, depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every output digest (``{sha256, size, head, ...}``) in a payload, with its place."""
    if depth > 8:
        return
    if isinstance(value, dict):
        if isinstance(value.get("sha256"), str) and isinstance(value.get("size"), int) and "head" in value:
            yield where, value
            return
        for k, v in value.items():
            yield from _digests(v, f"{where}.{k}" if where else str(k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _digests(v, f"{where}[{i}]", depth + 1)


def _check_blobs(store: SqliteEventStore, events: list[RecordedEvent], problems: list[Problem]) -> int:
    refs: dict[str, list[tuple[int, str, int]]] = {}
    for ev in events:
        for where, d in _digests(ev.payload, ""):
            if d["size"] > INLINE_LIMIT:  # smaller ones are whole in their event: no blob
                refs.setdefault(d["sha256"], []).append((ev.seq, where, d["size"]))
    blobs = BlobStore(store.conn)
    for sha, uses in refs.items():
        wrong = blobs.verify(sha, uses[0][2])
        if wrong is None:
            continue
        seq, where, _size = uses[0]
        also = [u[0] for u in uses[1:]]
        more = f", also referenced by seq {', '.join(map(str, also[:10]))}" if also else ""
        problems.append(
            Problem("blob", seq, f"the output blob {sha[:16]}… ({where} of seq {seq}{more}) {wrong}")
        )
    return len(refs)


# -- records of the head -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    path: Path
    kind: str  # event log | provenance | manifest | metadata


def _record_paths(events: list[RecordedEvent]) -> list[_Found]:
    """Where the build's package records are: the paths its artifacts name, then the
    output folder of its (latest) frozen spec."""
    from orchestrator.gmi.naming import METADATA, GmiNames  # noqa: PLC0415

    spec: dict[str, Any] = {}
    spec_path = ""
    found: list[_Found] = []
    kinds = {
        "gmi.event_log": "event log",
        "gmi.provenance": "provenance",
        "gmi.manifest": "manifest",
        "gmi.metadata": "metadata",
    }
    for ev in events:
        p = ev.payload
        if ev.type in ("BuildRequested", "SpecChanged"):
            spec, spec_path = p.get("spec") or {}, str(p.get("spec_path") or "")
        elif ev.type == "ArtifactRecorded" and p.get("kind") in kinds and isinstance(p.get("path"), str):
            found.append(_Found(Path(p["path"]), kinds[p["kind"]]))
    try:
        names = GmiNames(str(spec["os"]["name"]), str(spec["os"]["version"]))
        out = Path(str((spec.get("output") or {}).get("dir") or "out"))
    except (KeyError, TypeError):
        return found
    if not out.is_absolute() and spec_path:
        out = Path(spec_path).parent / out
    found += [
        _Found(out / names.events, "event log"),
        _Found(out / names.provenance, "provenance"),
        _Found(out / names.manifest, "manifest"),
        _Found(out / METADATA, "metadata"),
    ]
    seen: set[str] = set()
    unique = []
    for f in found:
        key = os.path.realpath(f.path)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _check_records(
    store: SqliteEventStore, build_id: str, events: list[RecordedEvent], out: BuildVerification
) -> None:
    head = events[-1].seq if events else 0
    for rec in _record_paths(events):
        if not rec.path.is_file():
            continue
        try:
            if rec.kind == "event log":
                _check_exported_log(store, build_id, rec, head, out)
                continue
            point = _point_record(rec, build_id)
        except (OSError, ValueError) as exc:
            out.consulted.append(f"{rec.path} ({rec.kind}): unreadable, skipped: {exc}")
            continue
        if point is None:
            out.consulted.append(f"{rec.path} ({rec.kind}): no head of this build in it")
            continue
        seq, hash_ = point
        out.consulted.append(f"{rec.path} ({rec.kind}): head seq {seq}")
        _compare_point(store, build_id, rec, seq, hash_, head, out.problems)


def _rewound(rec: _Found, seq: int, hash_: str, head: int) -> Problem:
    return Problem(
        "rewound",
        head + 1,
        f"{rec.path} ({rec.kind}) records seq {seq} (head {hash_[:16]}…), but the database ends at seq "
        f"{head}: events after seq {head} were deleted and the head moved back",
    )


def _compare_point(
    store: SqliteEventStore,
    build_id: str,
    rec: _Found,
    seq: int,
    hash_: str,
    head: int,
    problems: list[Problem],
) -> None:
    if seq > head:
        problems.append(_rewound(rec, seq, hash_, head))
        return
    row = store.conn.execute(
        "SELECT hash FROM events WHERE build_id = ? AND seq = ?", (build_id, seq)
    ).fetchone()
    if row is None or row[0] != hash_:
        problems.append(
            Problem(
                "record",
                seq,
                f"{rec.path} ({rec.kind}) records head {hash_[:16]}… at seq {seq}, the database has "
                f"{str(row[0])[:16] if row else 'no event'}… there: the history was rewritten",
            )
        )


def _point_record(rec: _Found, build_id: str) -> tuple[int, str] | None:
    """(seq, hash) of this build's head in a provenance statement, manifest or
    metadata file; None if the file is another build's or names no head."""
    from orchestrator.small_file import read_small_file  # noqa: PLC0415

    text = read_small_file(rec.path, RECORD_MAX_BYTES).decode("utf-8")
    if rec.kind == "provenance":
        doc = json.loads(text)
        run = ((doc.get("predicate") or {}).get("runDetails") or {}) if isinstance(doc, dict) else {}
        if (run.get("metadata") or {}).get("invocationId") != build_id:
            return None
        for b in run.get("byproducts") or []:
            a = (b.get("annotations") or {}) if isinstance(b, dict) else {}
            if isinstance(a.get("head_seq"), int) and isinstance(a.get("head_hash"), str):
                return a["head_seq"], a["head_hash"]
        return None
    import yaml  # noqa: PLC0415

    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or doc.get("build_id") != build_id:
        return None
    seq, hash_ = doc.get("event_log_seq"), doc.get("event_log_head_hash")
    if isinstance(seq, int) and isinstance(hash_, str):
        return seq, hash_
    return None


def _check_exported_log(
    store: SqliteEventStore, build_id: str, rec: _Found, head: int, out: BuildVerification
) -> None:
    try:
        cmp = compare_with_log(store, build_id, rec.path)
    except WrongLog:
        out.consulted.append(f"{rec.path} ({rec.kind}): another build's")
        return
    out.consulted.append(f"{rec.path} ({rec.kind}): seq 1 to {cmp.events}")
    d = cmp.first_divergence
    if d is None:
        return
    if d.kind == "missing" and d.seq == head + 1:
        last_hash = _last_hash(rec.path)
        out.problems.append(_rewound(rec, cmp.events, last_hash, head))
    else:
        out.problems.append(Problem("record", d.seq, f"{rec.path} ({rec.kind}): {d.detail}"))


def _last_hash(path: Path) -> str:
    last = ""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                last = line
    return str(json.loads(last).get("hash", "")) if last else ""


# -- verify --against ----------------------------------------------------------------------


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
    for f in rows:
        count += 1
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
    if first is not None:
        own = (
            f"; the file's own hash chain breaks at seq {file_chain_broken}: the file was edited"
            if file_chain_broken is not None
            else "; the file's own hash chain is intact"
        )
        first = Divergence(first.seq, first.kind, first.detail + own)
    head = store.head(build_id)
    return LogComparison(str(path), count, first, head[0] if head else 0)

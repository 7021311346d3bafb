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

The records are read by ``orchestrator/head_records.py``; ``verify --against FILE``
(the build against an exported event log, event by event) is
``orchestrator/log_compare.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from events.blobs import INLINE_LIMIT, BlobStore
from events.errors import TamperedError
from events.store import ChainReport, RecordedEvent, SqliteEventStore

if TYPE_CHECKING:
    from orchestrator.log_compare import LogComparison


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # chain | blob | rewound | record
    seq: int
    detail: str


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
        from orchestrator.head_records import check_records  # noqa: PLC0415

        out.consulted = check_records(store, build_id, events, out.problems)
    if against is not None:
        from orchestrator.log_compare import compare_with_log  # noqa: PLC0415

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

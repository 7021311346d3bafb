"""Records of a build's head kept outside the database, and whether the database
still agrees with them (see orchestrator/integrity.py for why)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.store import RecordedEvent, SqliteEventStore
from orchestrator.integrity import Problem
from orchestrator.log_compare import WrongLog, compare_with_log

RECORD_MAX_BYTES = 16 << 20  # a manifest or a provenance statement is a few KiB


@dataclass(frozen=True, slots=True)
class _Found:
    path: Path
    kind: str  # event log | provenance | manifest | metadata


def _record_paths(events: list[RecordedEvent]) -> list[_Found]:
    """Where the build's package records are: the paths its artifacts name, then the
    output folder of its (latest) frozen spec."""
    from orchestrator.gmi.naming import DISK_ONLY, HYPERV_EXPORT, METADATA, GmiNames  # noqa: PLC0415

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
        os_name, version = str(spec["os"]["name"]), str(spec["os"]["version"])
        out = Path(str((spec.get("output") or {}).get("dir") or "out"))
    except (KeyError, TypeError):
        return found
    if not out.is_absolute() and spec_path:
        out = Path(spec_path).parent / out
    # A build packages either variant (a host without Hyper-V makes a disk-only one).
    for variant in (HYPERV_EXPORT, DISK_ONLY):
        names = GmiNames(os_name, version, variant)
        found += [
            _Found(out / names.events, "event log"),
            _Found(out / names.provenance, "provenance"),
            _Found(out / names.manifest, "manifest"),
        ]
    found.append(_Found(out / METADATA, "metadata"))
    seen: set[str] = set()
    unique = []
    for f in found:
        key = os.path.realpath(f.path)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def check_records(
    store: SqliteEventStore, build_id: str, events: list[RecordedEvent], problems: list[Problem]
) -> list[str]:
    """Compare the build with every record of its head that can be found; append what
    disagrees to ``problems``; return what was consulted (for ``verify --json``)."""
    consulted: list[str] = []
    head = events[-1].seq if events else 0
    for rec in _record_paths(events):
        if not rec.path.is_file():
            continue
        where = f"{rec.path} ({rec.kind})"
        try:
            if rec.kind == "event log":
                consulted.append(_check_exported_log(store, build_id, rec, head, problems))
                continue
            point = _point_record(rec, build_id)
        except (OSError, ValueError) as exc:
            consulted.append(f"{where}: unreadable, skipped: {exc}")
            continue
        if point is None:
            consulted.append(f"{where}: no head of this build in it")
            continue
        seq, hash_ = point
        consulted.append(f"{where}: head seq {seq}")
        _compare_point(store, build_id, rec, seq, hash_, head, problems)
    return consulted


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
    if not isinstance(doc, dict):
        return None
    # The sidecar (gmi-metadata.yml) keeps them as build.id and event_log.{seq,head_hash};
    # packages from before it kept flat keys in the manifest or the sidecar: read both.
    build, log = doc.get("build"), doc.get("event_log")
    if isinstance(build, dict) and isinstance(log, dict):
        owner, seq, hash_ = build.get("id"), log.get("seq"), log.get("head_hash")
    else:
        owner, seq, hash_ = doc.get("build_id"), doc.get("event_log_seq"), doc.get("event_log_head_hash")
    if owner == build_id and isinstance(seq, int) and isinstance(hash_, str):
        return seq, hash_
    return None


def _check_exported_log(
    store: SqliteEventStore, build_id: str, rec: _Found, head: int, problems: list[Problem]
) -> str:
    where = f"{rec.path} ({rec.kind})"
    try:
        cmp = compare_with_log(store, build_id, rec.path)
    except WrongLog as exc:
        return f"{where}: not compared: {exc}"
    d = cmp.first_divergence
    if d is not None and d.kind == "missing" and d.seq == head + 1:
        problems.append(_rewound(rec, cmp.events, cmp.last_hash, head))
    elif d is not None:
        problems.append(Problem("record", d.seq, f"{where}: {d.detail}"))
    return f"{where}: seq 1 to {cmp.events}"

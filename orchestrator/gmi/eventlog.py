"""A build's event log as JSON lines, so anyone can re-verify its hash chain offline.

One event per line: ``build_id, seq, at, type, payload, prev_hash, hash``. The hash
covers the payload's canonical JSON (``events.chain.canonical_json``), which is
exactly how the store keeps it, so ``verify_jsonl`` re-derives every hash with
``events.store.verify_chain`` and no database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.chain import canonical_json
from events.store import ChainReport, ChainRow, RecordedEvent, verify_chain
from orchestrator.gmi.atomic import atomic_writer
from orchestrator.view import EventReader


@dataclass(frozen=True, slots=True)
class EventLogInfo:
    path: Path
    sha256: str
    size: int
    events: int
    head_seq: int
    head_hash: str
    first_at: str
    last_at: str


def event_line(build_id: str, seq: int, type_: str, at: str, payload: Any, prev: str, hash_: str) -> str:
    record = {
        "build_id": build_id,
        "seq": seq,
        "at": at,
        "type": type_,
        "payload": payload,
        "prev_hash": prev,
        "hash": hash_,
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def export_jsonl(store: EventReader, build_id: str, until_seq: int, dest: Path) -> EventLogInfo:
    """Write events 1..``until_seq`` of ``build_id`` to ``dest`` (atomically: a
    crash leaves no partial file under the final name)."""
    rows = (r for r in store.chain_rows(build_id) if r[0] <= until_seq)
    return write_jsonl(build_id, rows, dest)


def write_jsonl(build_id: str, rows: Iterable[ChainRow], dest: Path) -> EventLogInfo:
    h = hashlib.sha256()
    count, size, head_seq, head_hash, first_at, last_at = 0, 0, 0, "", "", ""
    with atomic_writer(dest) as out:
        for seq, type_, at, payload_json, prev, hash_ in rows:
            payload = json.loads(payload_json)
            if canonical_json(payload) != payload_json:
                # Cannot happen for events the store wrote; refuse rather than export
                # a line whose hash no one could reproduce.
                msg = f"event seq {seq} of {build_id} is not stored in canonical JSON"
                raise ValueError(msg)
            data = event_line(build_id, seq, type_, at, payload, prev, hash_).encode("utf-8")
            out.write(data)
            h.update(data)
            size += len(data)
            count += 1
            head_seq, head_hash, last_at = seq, hash_, at
            first_at = first_at or at
    return EventLogInfo(dest, h.hexdigest(), size, count, head_seq, head_hash, first_at, last_at)


class EventLogError(ValueError):
    pass


def parse_lines(lines: Iterable[str]) -> Iterator[tuple[str, ChainRow]]:
    """(build_id, chain row) per line; raise :class:`EventLogError` naming the line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            row: ChainRow = (
                int(rec["seq"]),
                str(rec["type"]),
                str(rec["at"]),
                canonical_json(rec["payload"]),
                str(rec["prev_hash"]),
                str(rec["hash"]),
            )
            yield str(rec["build_id"]), row
        except (ValueError, KeyError, TypeError) as exc:
            raise EventLogError(f"line {number} is not an event record: {exc}") from None


def verify_jsonl(lines: Iterable[str], recorded_head: tuple[int, str] | None) -> ChainReport:
    """Check the chain of an exported log; ``recorded_head`` (seq, hash) is what the
    manifest says the log ends with, so a truncated log is caught too."""
    parsed = list(parse_lines(lines))
    if not parsed:
        return ChainReport("", 0, "", 1, "the event log is empty")
    build_id = parsed[0][0]
    others = {b for b, _ in parsed if b != build_id}
    if others:
        return ChainReport(build_id, len(parsed), "", 1, f"lines from other builds: {sorted(others)[:3]}")
    return verify_chain(build_id, iter([row for _, row in parsed]), recorded_head)


def verify_file(path: Path, recorded_head: tuple[int, str] | None) -> ChainReport:
    with path.open(encoding="utf-8") as f:
        return verify_jsonl(f, recorded_head)


def recorded_events(path: Path) -> Iterator[RecordedEvent]:
    """The exported events back as :class:`RecordedEvent` (for the readme)."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                yield RecordedEvent(
                    r["build_id"], r["seq"], r["type"], r["at"], r["payload"], r["prev_hash"], r["hash"]
                )

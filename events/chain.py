"""The hash chain: each event's hash covers its envelope, its payload and its
predecessor's hash, so editing, deleting, inserting or reordering a row breaks it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_json(payload: dict[str, Any]) -> str:
    """The one text form of a payload: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(build_id: str, seq: int, type_: str, at: str, payload_json: str, prev_hash: str) -> str:
    # Newline-separated fields: none of the envelope fields may contain a newline
    # (ids, types and timestamps are generated), so the encoding is unambiguous.
    material = f"{build_id}\n{seq}\n{type_}\n{at}\n{prev_hash}\n{payload_json}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()

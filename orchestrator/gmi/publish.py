"""Publish: add or update a GMI's entry in a vmgenie-style repository index
(``gmi-repository.yml``), keyed ``<Os>-<Ver>``.

``crc64nvme`` is written as vmgenie's own index writes it: the CRC-64/NVME of the zip
as 8 big-endian bytes in base64 (the form S3 reports as ``x-amz-checksum-crc64nvme``),
e.g. ``OyXSsOe/cuI=``. ``last_modified`` is ISO 8601 with ``+00:00``.
"""

from __future__ import annotations

import base64
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from orchestrator.gmi.atomic import write_text_atomic
from orchestrator.gmi.hashing import crc64nvme_file
from orchestrator.gmi.manifest import Manifest, parse_manifest
from orchestrator.gmi.naming import ZIP_NAME_RE, GmiNames


class PublishError(Exception):
    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def crc64nvme_base64(value: int) -> str:
    return base64.b64encode(value.to_bytes(8, "big")).decode("ascii")


@dataclass(frozen=True, slots=True)
class PublishResult:
    index: Path
    key: str
    entry: dict[str, Any]
    replaced: bool


def manifest_of_zip(zip_path: Path, names: GmiNames) -> Manifest:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            text = zf.read(names.manifest).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise PublishError(
            f"cannot read {names.manifest} from {zip_path}: {exc}",
            hint=f"`gmi-fsm validate {zip_path}` says what is wrong with it",
        ) from None
    return parse_manifest(text)


def index_entry(manifest: Manifest, url: str, crc: int, last_modified: datetime) -> dict[str, Any]:
    return {
        "name": manifest.vm_name,
        "version": manifest.version,
        "url": url,
        "crc64nvme": crc64nvme_base64(crc),
        "last_modified": last_modified.astimezone(UTC).isoformat(timespec="seconds"),
        "maintainer": manifest.maintainer,
        "maintainer_email": manifest.maintainer_email,
        "source_url": manifest.source_url,
        "description": manifest.description,
        "hyperv_generation": manifest.hyperv_generation,
    }


def publish(zip_path: Path, index: Path, url: str) -> PublishResult:
    """Compute the zip's CRC-64/NVME (streamed) and write its entry into ``index``
    (created if absent). An entry with the same name and version is replaced, so
    publishing again is idempotent; other entries and keys are kept as they are."""
    m = ZIP_NAME_RE.match(zip_path.name)
    if m is None:
        raise PublishError(
            f"{zip_path.name} is not named GMI-<os>-<ver>.zip", hint="vmgenie refuses other names"
        )
    names = GmiNames(m.group("os"), m.group("ver"))
    if url.endswith("/"):
        url += zip_path.name  # a base URL: the zip's own name goes at its end
    manifest = manifest_of_zip(zip_path, names)
    data = _load_index(index)
    crc = crc64nvme_file(zip_path)
    mtime = datetime.fromtimestamp(zip_path.stat().st_mtime, UTC)
    entry = index_entry(manifest, url, crc, mtime)
    entries = data.setdefault(names.key, [])
    if not isinstance(entries, list):
        raise PublishError(f"{index}: {names.key} is not a list of entries")
    kept = [
        e
        for e in entries
        if not (
            isinstance(e, dict)
            and e.get("name") == entry["name"]
            and str(e.get("version")) == entry["version"]
        )
    ]
    replaced = len(kept) != len(entries)
    data[names.key] = [*kept, entry]
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    write_text_atomic(index, text)
    return PublishResult(index, names.key, entry, replaced)


def _load_index(index: Path) -> dict[str, Any]:
    if not index.exists():
        return {}
    try:
        data = yaml.safe_load(index.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise PublishError(f"cannot read the index {index}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PublishError(f"{index} is not a mapping of <Os>-<Ver> to entries")
    return data

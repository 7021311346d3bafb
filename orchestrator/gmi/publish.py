"""Publish: put a GMI's entry into a vmgenie repository index (``gmi-repository.yml``),
keyed ``<Os>-<Ver>``, FIRST in its list (vmgenie's lookup takes the first entry).

The index is read and written as vmgenie's YamlDotNet binds it (``GmiPackage``: exactly
ten keys, one unknown key anywhere breaks loading the whole index): existing entries are
kept with their values as written, and every string is written quoted. ``crc64nvme`` is
the zip's CRC-64/NVME as S3 reports it (``x-amz-checksum-crc64nvme``): 8 big-endian
bytes in base64, e.g. ``OyXSsOe/cuI=``. ``last_modified`` is ISO 8601 with ``+00:00``.
vmgenie saves a download under the URL's last segment and imports that file, so the
last segment must be the zip's own name.
"""

from __future__ import annotations

import base64
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.gmi.atomic import write_text_atomic
from orchestrator.gmi.hashing import crc64nvme_file
from orchestrator.gmi.manifest import Manifest, parse_manifest
from orchestrator.gmi.naming import DISK_ONLY_PREFIX, ZIP_NAME_RE, GmiNames
from orchestrator.gmi.yamldotnet import (
    BindError,
    Map,
    Problem,
    Scalar,
    Seq,
    Target,
    Value,
    bind_mapping,
    parse_document,
    quote,
    scalar_text,
)

# vmgenie src/Artifacts/GmiPackage.cs: ten properties named by YamlMember aliases.
INDEX_KEYS: tuple[str, ...] = (
    "name",
    "version",
    "url",
    "crc64nvme",
    "last_modified",
    "maintainer",
    "maintainer_email",
    "source_url",
    "description",
    "hyperv_generation",
)
PACKAGE_TARGET = Target(
    "VmGenie.Artifacts.GmiPackage",
    {k: ("int32" if k == "hyperv_generation" else "string") for k in INDEX_KEYS},
)

Entry = dict[str, Value]
Index = dict[str, list[Entry]]


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
    entry: Entry
    replaced: int  # entries with the same URL that this one replaced


def manifest_of_zip(zip_path: Path, names: GmiNames) -> Manifest:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            text = zf.read(names.manifest).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError) as exc:
        raise PublishError(
            f"cannot read {names.manifest} from {zip_path}: {exc}",
            hint=f"`gmi-fsm validate {zip_path}` says what is wrong with it",
        ) from None
    return parse_manifest(text)


def index_entry(manifest: Manifest, url: str, crc: int, last_modified: datetime) -> Entry:
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


def download_url(url: str, zip_name: str) -> str:
    """``url`` with the zip's name appended when it ends in ``/``; refuse a URL whose
    last segment (what vmgenie saves the download as, and then imports) is not
    ``zip_name``."""
    if url.endswith("/"):
        url += zip_name
    if "?" in url or "#" in url:
        raise PublishError(
            f"the URL {url!r} has a query or fragment: vmgenie saves the download under the URL's last "
            "segment, query included, and refuses that file name",
            hint=f"publish the zip at a plain URL ending in /{zip_name}",
        )
    last = url.replace("\\", "/").rsplit("/", 1)[-1]
    if last != zip_name:
        raise PublishError(
            f"the URL's last segment is {last!r}, not {zip_name!r}: vmgenie saves the download under that "
            "name and imports it, so the name it parses the OS and version from must be the zip's",
            hint=f"use a URL ending in /{zip_name} (or a base URL ending in / to have it appended)",
        )
    return url


def publish(zip_path: Path, index: Path, url: str) -> PublishResult:
    """Compute the zip's CRC-64/NVME (streamed) and put its entry FIRST in ``index``'s
    list for ``<Os>-<Ver>`` (the file is created if absent). An entry with the same URL
    is replaced (vmgenie's own update matches entries by URL, case-insensitively), so
    publishing again is idempotent; every other entry (another mirror, another
    maintainer's build) is kept after it, as written."""
    if zip_path.name.startswith(DISK_ONLY_PREFIX):
        raise PublishError(
            f"{zip_path.name} is a disk-only GMI: vmgenie cannot import it (no Hyper-V VM configuration)",
            hint="finish it on a Hyper-V host into GMI-<os>-<ver>.zip and publish that (docs/package.md)",
        )
    m = ZIP_NAME_RE.match(zip_path.name)
    if m is None:
        raise PublishError(
            f"{zip_path.name} is not named GMI-<os>-<ver>.zip", hint="vmgenie refuses other names"
        )
    names = GmiNames(m.group("os"), m.group("ver"))
    url = download_url(url, zip_path.name)
    manifest = manifest_of_zip(zip_path, names)
    data = load_index(index)
    crc = crc64nvme_file(zip_path)
    mtime = datetime.fromtimestamp(zip_path.stat().st_mtime, UTC)
    entry = index_entry(manifest, url, crc, mtime)
    entries = data.get(names.key, [])
    kept = [e for e in entries if str(e.get("url") or "").lower() != url.lower()]
    data[names.key] = [entry, *kept]
    write_text_atomic(index, index_yaml(data))
    return PublishResult(index, names.key, entry, len(entries) - len(kept))


def load_index(index: Path) -> Index:
    """The index as vmgenie binds it (``Dictionary<string, List<GmiPackage>>``), values
    as written; raise :class:`PublishError` naming every problem vmgenie would throw on."""
    if not index.exists():
        return {}
    try:
        root = parse_document(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PublishError(f"cannot read the index {index}: {exc}") from None
    except BindError as exc:
        raise PublishError(f"{index}: {exc}") from None
    if root is None:
        return {}
    problems: list[Problem] = []
    data: Index = {}
    if not isinstance(root, Map):
        raise PublishError(f"{index} is not a mapping of <Os>-<Ver> to lists of entries")
    for key_node, value in root.pairs:
        key = key_node.value if isinstance(key_node, Scalar) else ""
        if not key or not isinstance(value, Seq):
            problems.append(Problem(key_node.line, key or "?", "", "not '<Os>-<Ver>:' followed by a list"))
            continue
        entries = data.setdefault(key, [])
        for item in value.items:
            bound, item_problems = bind_mapping(item, PACKAGE_TARGET, where=key)
            problems += item_problems
            entries.append(bound.values)
    if problems:
        raise PublishError(
            f"{index} already holds entries vmgenie cannot load (one bad entry breaks the whole index): "
            + "; ".join(str(p) for p in problems[:8]),
            hint="fix or remove those entries first",
        )
    return data


def index_yaml(data: Index) -> str:
    """The index in vmgenie's own layout, every string quoted."""
    lines = ["# vmgenie GMI repository index (gmi-repository.yml); entries written by gmi-fsm publish"]
    for key, entries in data.items():
        lines.append(f"{quote(key)}:")
        for entry in entries:
            # vmgenie's order first, then (never, for a loadable index) anything else.
            ordered = [k for k in INDEX_KEYS if k in entry] + [k for k in entry if k not in INDEX_KEYS]
            for i, k in enumerate(ordered):
                lines.append(f"  {'- ' if i == 0 else '  '}{k}: {scalar_text(entry[k])}")
            if not ordered:
                lines.append("  - {}")
        lines.append("")
    return "\n".join(lines)

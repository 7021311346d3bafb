"""The provenance statement ``GMI-<Os>-<Ver>.intoto.json``: an in-toto Statement v1
whose predicate is SLSA Provenance v1.

subject: the zip (and tar.gz) and the VHDX; resolvedDependencies: the ISO or base
image, and the parent package when the build finished a disk-only GMI; byproducts: the
event log with its head. A verifier checks the subject digests against the files, the
statement's build id, variant and event-log head against the sidecar
``gmi-metadata.yml``, then re-verifies the event log's hash chain (``gmi-fsm validate``
does all of it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# No public home yet: URNs are valid TypeURIs and promise no web page. Change both
# here (and in docs/package.md) once the project has a canonical URL.
BUILD_TYPE = "urn:gmi-fsm:buildtype:gmi:v1"
BUILDER_ID_PREFIX = "urn:gmi-fsm:builder:"


@dataclass(frozen=True, slots=True)
class Subject:
    name: str
    sha256: str


@dataclass(frozen=True, slots=True)
class ProvenanceInputs:
    subjects: tuple[Subject, ...]
    spec: dict[str, Any]
    spec_sha256: str
    build_id: str
    host_kind: str
    tool_version: str
    started_on: str
    finished_on: str
    package_variant: str
    source_uri: str
    source_sha256: str
    event_log_name: str
    event_log_sha256: str
    event_log_head_seq: int
    event_log_head_hash: str
    # The package this build started from (a disk-only GMI finished on Hyper-V).
    parent_name: str = ""
    parent_sha256: str = ""
    parent_event_log_head_hash: str = ""


def _uri(path: str) -> str:
    if "://" in path or path.startswith(("urn:", "file:")):
        return path
    p = PurePosixPath(path)
    return f"file://{p}" if p.is_absolute() else path


def statement(inp: ProvenanceInputs) -> dict[str, Any]:
    deps: list[dict[str, Any]] = []
    if inp.source_sha256 or inp.source_uri:
        dep: dict[str, Any] = {"name": "source"}
        if inp.source_uri:
            dep["uri"] = _uri(inp.source_uri)
        if inp.source_sha256:
            dep["digest"] = {"sha256": inp.source_sha256}
        deps.append(dep)
    if inp.parent_name:
        parent: dict[str, Any] = {
            "name": "parent-package",
            "uri": inp.parent_name,
            "digest": {"sha256": inp.parent_sha256},
        }
        if inp.parent_event_log_head_hash:
            parent["annotations"] = {"event_log_head_hash": inp.parent_event_log_head_hash}
        deps.append(parent)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": s.name, "digest": {"sha256": s.sha256}} for s in inp.subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"spec": inp.spec},
                "internalParameters": {
                    "spec_sha256": inp.spec_sha256,
                    "host_kind": inp.host_kind,
                    "package_variant": inp.package_variant,
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": f"{BUILDER_ID_PREFIX}{inp.host_kind}",
                    "version": {"gmi-fsm": inp.tool_version},
                },
                "metadata": {
                    "invocationId": inp.build_id,
                    "startedOn": inp.started_on,
                    "finishedOn": inp.finished_on,
                },
                "byproducts": [
                    {
                        "name": inp.event_log_name,
                        "digest": {"sha256": inp.event_log_sha256},
                        "mediaType": "application/jsonl",
                        "annotations": {
                            "head_seq": inp.event_log_head_seq,
                            "head_hash": inp.event_log_head_hash,
                        },
                    }
                ],
            },
        },
    }


def statement_json(inp: ProvenanceInputs) -> str:
    return json.dumps(statement(inp), indent=2, ensure_ascii=False) + "\n"


def subject_digests(doc: Any) -> dict[str, str]:
    """name -> sha256 of a statement's subjects; raise ValueError when it is not an
    in-toto v1 statement with an SLSA v1 predicate."""
    if not isinstance(doc, dict):
        msg = "not a JSON object"
        raise ValueError(msg)  # noqa: TRY004 - a malformed document is a value problem
    if doc.get("_type") != STATEMENT_TYPE:
        msg = f"_type is {doc.get('_type')!r}, expected {STATEMENT_TYPE}"
        raise ValueError(msg)
    if doc.get("predicateType") != PREDICATE_TYPE:
        msg = f"predicateType is {doc.get('predicateType')!r}, expected {PREDICATE_TYPE}"
        raise ValueError(msg)
    out: dict[str, str] = {}
    for s in doc.get("subject") or []:
        digest = (s.get("digest") or {}).get("sha256") if isinstance(s, dict) else None
        if not isinstance(digest, str) or not isinstance(s.get("name"), str):
            msg = f"subject {s!r} has no name or sha256 digest"
            raise ValueError(msg)  # noqa: TRY004 - a malformed document is a value problem
        out[s["name"]] = digest
    if not out:
        msg = "the statement has no subject"
        raise ValueError(msg)
    return out


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What a statement says about its build, for comparing with the sidecar."""

    invocation_id: str
    package_variant: str
    event_log_name: str
    event_log_head_seq: int | None
    event_log_head_hash: str


def run_facts(doc: Any) -> RunFacts:
    """Read the build id, variant and event-log head from a statement (call
    :func:`subject_digests` first: it checks the statement's type)."""
    pred = doc.get("predicate") or {}
    run = pred.get("runDetails") or {}
    internal = (pred.get("buildDefinition") or {}).get("internalParameters") or {}
    byproducts = run.get("byproducts") or [{}]
    log = byproducts[0] if isinstance(byproducts[0], dict) else {}
    notes = log.get("annotations") or {}
    seq = notes.get("head_seq")
    return RunFacts(
        invocation_id=str((run.get("metadata") or {}).get("invocationId", "")),
        package_variant=str(internal.get("package_variant", "")),
        event_log_name=str(log.get("name", "")),
        event_log_head_seq=seq if isinstance(seq, int) else None,
        event_log_head_hash=str(notes.get("head_hash", "")),
    )

"""The GMI manifest ``GMI-<Os>-<Ver>.yml``: exactly the twelve keys vmgenie's
``GmiMetadata`` class has, nothing else.

vmgenie binds it with YamlDotNet and no ``IgnoreUnmatchedProperties()``, so one extra
key makes its import throw: everything else gmi-fsm knows about a build goes in the
sidecar ``gmi-metadata.yml`` (:mod:`orchestrator.gmi.sidecar`) and the provenance
statement. Reading goes through :mod:`orchestrator.gmi.yamldotnet` (what vmgenie would
throw on), then through gmi-fsm's own rules (every key present, formats); writing
quotes every string, so ``24.10`` stays the text ``24.10``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.gmi.yamldotnet import (
    BindError,
    Bound,
    Problem,
    PropertyType,
    Target,
    bind_mapping,
    parse_document,
    scalar_text,
)

GMI_VERSION = "1.0"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # vmgenie's yyyy-MM-ddTHH:mm:ssZ, always UTC
TIMESTAMP_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
VMGENIE_TYPE = "VmGenie.Artifacts.GmiMetadata"

# GmiMetadata's properties in declaration order, as UnderscoredNamingConvention names
# them (vmgenie src/Artifacts/GmiMetadata.cs lines 11-22).
VMGENIE_KEYS: tuple[str, ...] = (
    "gmi_version",
    "os",
    "version",
    "created",
    "updated",
    "vm_name",
    "hyperv_generation",
    "maintainer",
    "maintainer_email",
    "source_url",
    "description",
    "checksum_sha256",
)
_TYPES: dict[str, PropertyType] = {
    k: ("int32" if k == "hyperv_generation" else "string") for k in VMGENIE_KEYS
}
MANIFEST_TARGET = Target(VMGENIE_TYPE, _TYPES)

Timestamp = Annotated[str, Field(pattern=TIMESTAMP_RE)]
# vmgenie compares case-insensitively (GmiMetadata.cs MatchesVhdx); gmi-fsm writes lowercase.
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


class Manifest(BaseModel):
    """``GMI-<Os>-<Ver>.yml``: vmgenie's twelve keys, each required by gmi-fsm (vmgenie
    itself requires none, but a GMI that omits one is not what the checklist asks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gmi_version: Literal["1.0"]
    os: Annotated[str, Field(min_length=1)]
    version: Annotated[str, Field(min_length=1)]
    created: Timestamp
    updated: Timestamp
    vm_name: Annotated[str, Field(min_length=1)]
    hyperv_generation: Literal[2]
    maintainer: str
    maintainer_email: str
    source_url: str
    description: str
    checksum_sha256: Sha256

    @property
    def disk_sha256(self) -> str:
        return self.checksum_sha256.lower()


class ManifestError(ValueError):
    """A manifest could not be read. ``vmgenie_throws`` is True when vmgenie's own
    import would throw on it (a binding problem), False when only gmi-fsm's rules
    (every key present, formats) refuse it."""

    def __init__(self, problems: list[str], *, vmgenie_throws: bool) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.vmgenie_throws = vmgenie_throws


def utc_timestamp(when: datetime | str | None = None) -> str:
    """``yyyy-MM-ddTHH:mm:ssZ`` for ``when`` (a datetime, an event's ``at`` text, or
    now)."""
    if when is None:
        when = datetime.now(UTC)
    elif isinstance(when, str):
        # Event times are ``...T..:..:..ffffffZ``; fromisoformat reads the Z in 3.11.
        when = datetime.fromisoformat(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


@dataclass(frozen=True, slots=True)
class ManifestInputs:
    """What the manifest is made of, gathered by the caller from the spec and the
    build's state (kept apart so the format can be tested without a build)."""

    os: str
    version: str
    vm_name: str
    maintainer: str
    maintainer_email: str
    source_url: str
    description: str
    checksum_sha256: str
    created: str
    updated: str
    os_pretty_name: str = ""  # only for the default description


def make_manifest(inputs: ManifestInputs) -> Manifest:
    description = inputs.description or (
        f"{inputs.os_pretty_name or f'{inputs.os} {inputs.version}'} golden image for Hyper-V "
        "(generation 2, cloud-init NoCloud), built by gmi-fsm"
    )
    return Manifest(
        gmi_version=GMI_VERSION,
        os=inputs.os,
        version=inputs.version,
        created=inputs.created,
        updated=inputs.updated,
        vm_name=inputs.vm_name,
        hyperv_generation=2,
        maintainer=inputs.maintainer,
        maintainer_email=inputs.maintainer_email,
        source_url=inputs.source_url,
        description=description,
        checksum_sha256=inputs.checksum_sha256.lower(),
    )


def manifest_yaml(manifest: Manifest) -> str:
    """The manifest as YAML: the twelve keys in vmgenie's order, every string in double
    quotes (``"12"``, ``"24.10"``, timestamps), ``hyperv_generation`` a plain integer."""
    data = manifest.model_dump()
    lines = [
        "# GMI manifest (vmgenie format 1.0), written by gmi-fsm. vmgenie reads exactly these",
        "# twelve keys and refuses any other: facts about the build are in gmi-metadata.yml.",
    ]
    lines += [f"{key}: {scalar_text(data[key])}" for key in VMGENIE_KEYS]
    return "\n".join(lines) + "\n"


def bind_manifest(text: str) -> Bound:
    """Bind ``text`` as vmgenie's ``GmiMetadata.Load`` would; raise
    :class:`ManifestError` (``vmgenie_throws``) with each problem and vmgenie's message."""
    try:
        bound, problems = bind_mapping(parse_document(text), MANIFEST_TARGET)
    except BindError as exc:
        problems = exc.problems
        bound = Bound()
    if problems:
        raise ManifestError([str(p) for p in problems], vmgenie_throws=True)
    return bound


def vmgenie_view(bound: Bound) -> dict[str, str | int | None]:
    """The values vmgenie works with after binding: its property defaults for absent
    keys, then ``EnsureDefaults`` (GmiMetadata.cs lines 37-45): a blank ``gmi_version``
    is "1.0", a 0 generation is 2, a blank ``vm_name`` is ``GMI <os> <version>``. The
    time defaults (now) are shown as "(import time)"."""
    v: dict[str, str | int | None] = {k: ("" if k != "hyperv_generation" else 2) for k in VMGENIE_KEYS}
    v["gmi_version"] = "1.0"
    v.update(bound.values)

    def blank(key: str) -> bool:
        value = v[key]
        return value is None or (isinstance(value, str) and not value.strip())

    if blank("gmi_version"):
        v["gmi_version"] = "1.0"
    for key in ("created", "updated"):
        if blank(key):
            v[key] = "(import time)"
    if v["hyperv_generation"] == 0:
        v["hyperv_generation"] = 2
    if blank("vm_name") and not blank("os") and not blank("version"):
        v["vm_name"] = f"GMI {v['os']} {v['version']}"
    return v


def check_manifest(bound: Bound) -> Manifest:
    """gmi-fsm's rules on a bound manifest: all twelve keys present and not null,
    ``gmi_version`` "1.0", generation 2, UTC timestamps, a sha256. Raise
    :class:`ManifestError` (not ``vmgenie_throws``) naming each problem."""
    try:
        return Manifest.model_validate(bound.values)
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors(include_url=False):
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "missing":
                problems.append(
                    f"{key}: required key is missing (vmgenie would not refuse it, but a GMI states it)"
                )
            elif err.get("input") is None:
                problems.append(f"{key}: is null; write a value (quoted text)")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ManifestError(problems, vmgenie_throws=False) from None


def parse_manifest(text: str) -> Manifest:
    """Bind (as vmgenie) and check (as gmi-fsm) a manifest's text."""
    return check_manifest(bind_manifest(text))


__all__ = [
    "GMI_VERSION",
    "MANIFEST_TARGET",
    "TIMESTAMP_FORMAT",
    "VMGENIE_KEYS",
    "Manifest",
    "ManifestError",
    "ManifestInputs",
    "Problem",
    "bind_manifest",
    "check_manifest",
    "make_manifest",
    "manifest_yaml",
    "parse_manifest",
    "utc_timestamp",
    "vmgenie_view",
]

"""The sidecar ``gmi-metadata.yml``: every fact about a GMI that vmgenie's manifest has
no key for (the seed checklist's "OS, kernel, cloud-init and integration-services
versions, creation date, maintainer, default users"), plus what ties the package to
its build: the build id, the event log's head, the manifest's digest, the variant.

vmgenie never reads this file (it is extracted and ignored), so it is free to grow; it
is versioned (``format``) and marked (``generator: gmi-fsm``) so ``gmi-fsm validate``
checks a gmi-fsm sidecar strictly and leaves a hand-written one alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.gmi.naming import Variant

GENERATOR: Literal["gmi-fsm"] = "gmi-fsm"
FORMAT: Literal[1] = 1
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntegrationServices(_Strict):
    daemons: list[str] | None = None
    source: str | None = None  # "package" | "source" (built from the kernel's tools/hv)
    version: str | None = None


class PackageInfo(_Strict):
    name: str  # the zip's file name, e.g. disk-only-GMI-Debian-12.zip
    variant: Variant
    manifest: str  # the manifest's file name inside
    manifest_sha256: Sha256


class SourceInfo(_Strict):
    uri: str | None = None
    sha256: str | None = None


class BuildInfo(_Strict):
    id: str
    gmi_fsm_version: str
    host_kind: str


class EventLogHead(_Strict):
    name: str  # the exported log's file name, in the package and beside it
    seq: int
    head_hash: Sha256


class ParentPackage(_Strict):
    """The package a build started from (a disk-only GMI finished on Hyper-V)."""

    package: str
    sha256: Sha256
    event_log_head_hash: Sha256 | None = None


class SealedInfo(_Strict):
    """What the sealed-image checks need to know of the build (docs/sealed-image.md):
    whose key and sudo rule must be gone, whether the user itself must be, and the
    hostname the image must not carry."""

    build_user: str
    build_user_removed: bool
    build_hostname: str | None = None


class Sidecar(_Strict):
    generator: Literal["gmi-fsm"] = GENERATOR
    format: Literal[1] = FORMAT
    os: str
    version: str
    os_pretty_name: str | None = None
    kernel: str | None = None
    cloud_init: str | None = None
    integration_services: IntegrationServices = IntegrationServices()
    package_count: int | None = None
    default_users: list[str] | None = None
    locale: str | None = None
    created: str
    maintainer: str
    maintainer_email: str
    checksum_sha256: Sha256  # the VHDX's, as in the manifest
    package: PackageInfo
    source: SourceInfo = SourceInfo()
    build: BuildInfo
    event_log: EventLogHead
    parent: ParentPackage | None = None
    sealed: SealedInfo | None = None


class SidecarError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class SidecarInputs:
    """What the sidecar is made of (gathered by the document stage)."""

    os: str
    version: str
    created: str
    maintainer: str
    maintainer_email: str
    checksum_sha256: str
    facts: Mapping[str, str]
    package_name: str
    variant: Variant
    manifest_name: str
    manifest_sha256: str
    build_id: str
    gmi_fsm_version: str
    host_kind: str
    event_log_name: str
    event_log_seq: int
    event_log_head_hash: str
    source_uri: str = ""
    source_sha256: str = ""
    locale_default: str = ""
    parent: ParentPackage | None = None


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    digits = re.sub(r"\s", "", value)
    return int(digits) if digits.isdigit() else None


def _sealed(f: Mapping[str, str]) -> SealedInfo | None:
    if not f.get("guest.user"):
        return None
    return SealedInfo(
        build_user=f["guest.user"],
        build_user_removed=f.get("guest.user_removed_at_seal") == "true",
        build_hostname=f.get("guest.hostname") or None,
    )


def make_sidecar(inp: SidecarInputs) -> Sidecar:
    f = inp.facts
    return Sidecar(
        os=inp.os,
        version=inp.version,
        os_pretty_name=f.get("os.pretty_name"),
        kernel=f.get("kernel.release"),
        cloud_init=f.get("cloud_init.version"),
        integration_services=IntegrationServices(
            daemons=_split(f.get("hyperv.daemons")),
            source=f.get("hyperv.daemons.source"),
            version=f.get("hyperv.daemons.version"),
        ),
        package_count=_int(f.get("packages.count")),
        default_users=_split(f.get("users.default")),
        locale=f.get("locale") or inp.locale_default or None,
        created=inp.created,
        maintainer=inp.maintainer,
        maintainer_email=inp.maintainer_email,
        checksum_sha256=inp.checksum_sha256.lower(),
        package=PackageInfo(
            name=inp.package_name,
            variant=inp.variant,
            manifest=inp.manifest_name,
            manifest_sha256=inp.manifest_sha256,
        ),
        source=SourceInfo(
            uri=f.get("source.path") or inp.source_uri or None,
            sha256=f.get("source.sha256") or inp.source_sha256 or None,
        ),
        build=BuildInfo(id=inp.build_id, gmi_fsm_version=inp.gmi_fsm_version, host_kind=inp.host_kind),
        event_log=EventLogHead(
            name=inp.event_log_name, seq=inp.event_log_seq, head_hash=inp.event_log_head_hash
        ),
        parent=inp.parent,
        sealed=_sealed(f),
    )


def sidecar_yaml(sidecar: Sidecar) -> str:
    header = (
        "# gmi-metadata.yml: facts about this GMI that vmgenie's manifest has no key for, and\n"
        "# what ties the package to its build (docs/package.md). vmgenie does not read it.\n"
    )
    data = sidecar.model_dump(mode="json")
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def is_gmi_fsm(text: str) -> bool:
    """True when ``text`` claims to be a gmi-fsm sidecar (and must then pass
    :func:`parse_sidecar`); a hand-written ``gmi-metadata.yml`` is left alone."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and data.get("generator") == GENERATOR


def parse_sidecar(text: str) -> Sidecar:
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SidecarError([f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise SidecarError(["the top level is not a mapping of keys"])
    try:
        return Sidecar.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "missing":
                problems.append(f"{key}: required key is missing")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise SidecarError(problems) from None

"""The GMI manifest ``GMI-<Os>-<Ver>.yml``: every key vmgenie reads, plus the facts
gmi-fsm recorded, and the seed checklist's ``gmi-metadata.yml`` sidecar.

The pydantic model is the one definition of the format: the document stage writes
through it and ``gmi-fsm validate`` reads through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

GMI_VERSION = "1.0"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # vmgenie's yyyy-MM-ddTHH:mm:ssZ, always UTC
TIMESTAMP_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"

Variant = Literal["hyperv-export", "disk-only"]
HYPERV_EXPORT: Variant = "hyperv-export"
DISK_ONLY: Variant = "disk-only"


def _scalar_text(value: Any) -> Any:
    # An unquoted `version: 12` or `version: 24.04` is a number to YAML but a string
    # to vmgenie (YamlDotNet binds scalars to its string properties): accept both.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


def _timestamp_text(value: Any) -> Any:
    # PyYAML turns an unquoted timestamp into a datetime; vmgenie reads the text.
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime(TIMESTAMP_FORMAT)
    return value


Text = Annotated[str, BeforeValidator(_scalar_text)]
Timestamp = Annotated[str, BeforeValidator(_timestamp_text), Field(pattern=TIMESTAMP_RE)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Manifest(BaseModel):
    """``GMI-<Os>-<Ver>.yml``. The first block is what vmgenie requires; the rest are
    gmi-fsm's extensions (vmgenie ignores keys it does not know), optional so that a
    GMI made by hand still validates against the vmgenie part."""

    # Unknown keys are kept, not refused: vmgenie ignores them, so must we.
    model_config = ConfigDict(extra="allow", frozen=True)

    gmi_version: Annotated[Literal["1.0"], BeforeValidator(_scalar_text)]
    os: Text
    version: Text
    created: Timestamp
    updated: Timestamp
    vm_name: Text
    hyperv_generation: Literal[2]
    maintainer: Text
    maintainer_email: Text
    source_url: Text
    description: Text
    checksum_sha256: Sha256

    os_pretty_name: str | None = None
    kernel: str | None = None
    cloud_init_version: str | None = None
    hyperv_daemons: list[str] | None = None
    hyperv_daemons_source: str | None = None
    hyperv_daemons_version: str | None = None
    package_count: int | None = None
    default_users: list[str] | None = None
    locale: str | None = None
    source_sha256: str | None = None
    build_id: str | None = None
    event_log_seq: int | None = None
    event_log_head_hash: Sha256 | None = None
    gmi_fsm_version: str | None = None
    package_variant: Variant | None = None

    @property
    def is_gmi_fsm(self) -> bool:
        """True when the manifest claims gmi-fsm provenance (so the event log and the
        provenance statement must be there and must match)."""
        return self.build_id is not None

    @property
    def variant(self) -> Variant:
        # vmgenie's own format is the Hyper-V export; only gmi-fsm writes disk-only.
        return self.package_variant or HYPERV_EXPORT


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
    facts: dict[str, str]
    build_id: str
    event_log_seq: int
    event_log_head_hash: str
    gmi_fsm_version: str
    package_variant: Variant
    locale_default: str = ""
    source_sha256_default: str = ""


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    digits = re.sub(r"\s", "", value)
    return int(digits) if digits.isdigit() else None


def make_manifest(inputs: ManifestInputs) -> Manifest:
    f = inputs.facts
    pretty = f.get("os.pretty_name")
    description = inputs.description or (
        f"{pretty or f'{inputs.os} {inputs.version}'} golden image for Hyper-V "
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
        os_pretty_name=pretty,
        kernel=f.get("kernel.release"),
        cloud_init_version=f.get("cloud_init.version"),
        hyperv_daemons=_split(f.get("hyperv.daemons")),
        hyperv_daemons_source=f.get("hyperv.daemons.source"),
        hyperv_daemons_version=f.get("hyperv.daemons.version"),
        package_count=_int(f.get("packages.count")),
        default_users=_split(f.get("users.default")),
        locale=f.get("locale") or inputs.locale_default or None,
        source_sha256=f.get("source.sha256") or inputs.source_sha256_default or None,
        build_id=inputs.build_id,
        event_log_seq=inputs.event_log_seq,
        event_log_head_hash=inputs.event_log_head_hash,
        gmi_fsm_version=inputs.gmi_fsm_version,
        package_variant=inputs.package_variant,
    )


def manifest_yaml(manifest: Manifest) -> str:
    """The manifest as YAML, keys in the model's order. PyYAML quotes every string
    that would read back as another type (``'12'``, timestamps), so vmgenie and we
    read back exactly what was written."""
    data = manifest.model_dump(mode="json")
    header = "# GMI manifest (vmgenie format 1.0), written by gmi-fsm. Do not edit: checksum and\n"
    header += "# event_log_head_hash tie it to the disk and to the build's event log.\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def metadata_yaml(manifest: Manifest) -> str:
    """The seed checklist's ``gmi-metadata.yml``: OS, kernel, cloud-init and
    integration-services versions, creation date, maintainer, default users."""
    data: dict[str, Any] = {
        "os": manifest.os,
        "version": manifest.version,
        "os_pretty_name": manifest.os_pretty_name,
        "kernel": manifest.kernel,
        "cloud_init": manifest.cloud_init_version,
        "integration_services": {
            "daemons": manifest.hyperv_daemons,
            "source": manifest.hyperv_daemons_source,
            "version": manifest.hyperv_daemons_version,
        },
        "created": manifest.created,
        "maintainer": manifest.maintainer,
        "maintainer_email": manifest.maintainer_email,
        "default_users": manifest.default_users,
        "locale": manifest.locale,
        "build_id": manifest.build_id,
        "checksum_sha256": manifest.checksum_sha256,
    }
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


class ManifestError(ValueError):
    """A manifest could not be read; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_manifest(text: str) -> Manifest:
    """Read and check a manifest; raise :class:`ManifestError` naming every missing
    or wrong key."""
    from pydantic import ValidationError  # noqa: PLC0415

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError([f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ManifestError(["the top level is not a mapping of keys"])
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "missing":
                problems.append(f"{key}: required key is missing")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ManifestError(problems) from None

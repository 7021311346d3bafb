"""Finishing a prepared disk on Hyper-V: the source is a disk-only GMI (or a bare VHDX).

A QEMU build cannot make the VM configuration (``.vmcx``) an importable GMI holds:
only Hyper-V can. A build whose ``source`` is ``gmi_package`` (``disk-only-GMI-<Os>-<Ver>.zip``)
or ``vhdx`` skips the install and the guest preparation (the disk is prepared and
sealed), puts the disk on the host, makes the generation 2 VM from it, boots it with a
fresh NoCloud seed, checks it there (KVP address, integration services, a login), seals
it again, and exports and packages it like any Hyper-V build. The package names its
parent: the disk-only zip's name, sha256 and event-log head (``PARENT_FACTS``).

Here: what is checked before a build is requested (:func:`check_source`, cheap), what
the ``provision/source.prepare`` step checks and records (:func:`prepare_source`: the
whole ``gmi-fsm validate`` of the package), the fresh seed, and which guest steps a
finishing build keeps (:data:`FINISH_GUEST_STAGES`).
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from orchestrator.gmi.naming import DISK_ONLY, METADATA, names_from_archive
from orchestrator.spec import BuildSpec
from orchestrator.spec_errors import SpecError, SpecIssue
from states.steps import Step

VHDX_SIGNATURE = b"vhdxfile"  # the first 8 bytes of every VHDX (MS-VHDX 2.2.1, file type identifier)

GuestRule = Literal["all", "facts", "none"]

FINISH_GUEST_STAGES: Mapping[str, GuestRule] = {
    # The fresh seed's first boot: wait for cloud-init (this is the login with the build
    # user's key) and record the OS facts.
    "install_os": "all",
    # The disk is prepared already: only read what the sidecar reports.
    "update": "none",
    "cloud_init": "facts",
    "hyperv_integration": "facts",
    # The fresh boot left its traces (instance data, logs, host keys): clean and seal again.
    "cleanup": "all",
    "seal": "all",
}
"""Which of the OS family's guest steps a finishing build runs, per stage: all of them,
only the ``facts-*`` steps (they only read), or none. Stages not named have no guest steps."""


def finish_guest_steps(stage: str, steps: list[Step]) -> list[Step]:
    rule = FINISH_GUEST_STAGES.get(stage, "none")
    if rule == "all":
        return steps
    if rule == "facts":
        return [s for s in steps if s.name.startswith("facts-")]
    return []


class SourceError(Exception):
    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def source_path(spec: BuildSpec, base_dir: Path) -> Path:
    assert spec.source is not None
    assert spec.source.finishes_disk
    p = Path(spec.source.gmi_package or spec.source.vhdx or "").expanduser()
    return p if p.is_absolute() else base_dir / p


def _field(spec: BuildSpec) -> str:
    assert spec.source is not None
    return "source.gmi_package" if spec.source.gmi_package is not None else "source.vhdx"


def check_source(spec: BuildSpec, base_dir: Path, shown: str) -> None:
    """Before a build is requested (nothing written yet): a finishing build's source
    must be there and be what it claims. Cheap: names, the zip's directory, the VHDX
    signature. The whole package is validated by the build's first step."""
    if spec.source is None or not spec.source.finishes_disk:
        return
    try:
        _check(spec, source_path(spec, base_dir))
    except SourceError as exc:
        raise SpecError(shown, [SpecIssue(field=_field(spec), message=str(exc))], hint=exc.hint) from None


def _check(spec: BuildSpec, path: Path) -> None:
    if not path.is_file():
        raise SourceError(
            f"{path} does not exist or is not a file", hint="check the path (relative to the spec)"
        )
    assert spec.source is not None
    if spec.source.vhdx is not None:
        with path.open("rb") as fh:
            if fh.read(len(VHDX_SIGNATURE)) != VHDX_SIGNATURE:
                raise SourceError(
                    f"{path} is not a VHDX (no 'vhdxfile' signature)", hint="qemu-img convert -O vhdx"
                )
        return
    names = names_from_archive(path.name)
    if names is None:
        raise SourceError(
            f"{path.name} is not a GMI package name (disk-only-GMI-<Os>-<Ver>.zip)",
            hint="give the disk-only package a QEMU build made, or a VHDX as source.vhdx",
        )
    if not names.is_disk_only:
        raise SourceError(
            f"{path.name} is a full GMI: it has its Hyper-V VM configuration and nothing is left to finish",
            hint="import it as it is (`gmi-fsm validate` it first); only disk-only-GMI-*.zip is finished",
        )
    if (names.os, names.version) != (spec.os.name, spec.os.version):
        raise SourceError(
            f"{path.name} holds {names.os} {names.version}, the spec builds {spec.os.name} {spec.os.version}",
            hint=f"set os.name: {names.os} and os.version: '{names.version}'",
        )
    try:
        with zipfile.ZipFile(path) as zf:
            members = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path.name} is not a readable zip: {exc}") from None
    for needed in (names.manifest, METADATA, names.disk_entry):
        if needed not in members:
            raise SourceError(f"{path.name} has no {needed}: not a disk-only GMI made by gmi-fsm")


# -- the build's first step ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedSource:
    """What ``provision/source.prepare`` found: the disk to upload and the facts to record."""

    disk: Path
    disk_sha256: str
    facts: dict[str, str] = field(default_factory=dict)
    report: str = ""


# Sidecar keys carried over as the facts the document stage reads, so the finished
# package describes the disk as its parent did (the fresh boot's facts steps replace
# what they read again).
def _inherited(sidecar: Mapping[str, object]) -> dict[str, str]:
    ics = sidecar.get("integration_services") or {}
    src = sidecar.get("source") or {}
    assert isinstance(ics, dict)
    assert isinstance(src, dict)
    pairs: dict[str, object] = {
        "os.pretty_name": sidecar.get("os_pretty_name"),
        "kernel.release": sidecar.get("kernel"),
        "cloud_init.version": sidecar.get("cloud_init"),
        "hyperv.daemons": ",".join(_strings(ics.get("daemons"))) or None,
        "hyperv.daemons.source": ics.get("source"),
        "hyperv.daemons.version": ics.get("version"),
        "packages.count": sidecar.get("package_count"),
        "users.default": ",".join(_strings(sidecar.get("default_users"))) or None,
        "locale": sidecar.get("locale"),
        "source.path": src.get("uri"),
        "source.sha256": src.get("sha256"),
    }
    return {k: str(v) for k, v in pairs.items() if v not in (None, "")}


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def prepare_source(spec: BuildSpec, base_dir: Path, work_dir: Path) -> PreparedSource:
    """Check the source for real and put its disk where the upload reads it. For a
    package: ``gmi-fsm validate`` must find a valid disk-only GMI (exit 15), and its
    VHDX is extracted to ``work_dir`` (kept when already there with the manifest's
    sha256: a rerun does not extract again). Raises SourceError."""
    path = source_path(spec, base_dir)
    _check(spec, path)
    assert spec.source is not None
    if spec.source.vhdx is not None:
        digest = _sha256(path)
        return PreparedSource(
            path, digest, {"source.path": str(path), "source.sha256": digest, "source.kind": "vhdx"}
        )
    from orchestrator.gmi.validate import validate  # noqa: PLC0415

    report = validate(path)
    if not report.ok or report.variant != DISK_ONLY:
        bad = [c for c in report.checks if not c.ok]
        detail = "; ".join(f"{c.name}: {c.evidence}" for c in bad[:5]) or "not a disk-only GMI"
        raise SourceError(
            f"{path.name} is not a valid disk-only GMI: {detail}",
            hint=f"`gmi-fsm validate {path}` shows every check",
        )
    names = names_from_archive(path.name)
    assert names is not None
    with zipfile.ZipFile(path) as zf:
        sidecar = yaml.safe_load(zf.read(METADATA).decode("utf-8"))
        assert isinstance(sidecar, dict)
        disk_sha = str(sidecar["checksum_sha256"])
        log = sidecar["event_log"]
        build = sidecar["build"]
        facts = _inherited(sidecar)
        facts.update(
            {
                "source.kind": "gmi_package",
                "parent.package": path.name,
                "parent.sha256": _sha256(path),
                "parent.build_id": str(build["id"]),
                "parent.event_log_seq": str(log["seq"]),
                "parent.event_log_head_hash": str(log["head_hash"]),
                "parent.vhdx_sha256": disk_sha,
            }
        )
        disk = work_dir / "source.vhdx"
        if not (disk.is_file() and _sha256(disk) == disk_sha):
            work_dir.mkdir(parents=True, exist_ok=True)
            part = disk.with_name(disk.name + ".part")
            with zf.open(names.disk_entry) as src, part.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            if _sha256(part) != disk_sha:
                part.unlink()
                raise SourceError(f"the VHDX extracted from {path.name} does not have the manifest's sha256")
            part.replace(disk)
    return PreparedSource(disk, disk_sha, facts, report.to_text())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# -- the fresh seed --------------------------------------------------------------------------


def first_boot_seed(spec: BuildSpec, build_id: str, public_key: str) -> dict[str, str]:
    """NoCloud ``user-data`` and ``meta-data`` for the finishing boot: a new instance id
    (cloud-init runs its first boot again), the build user with the spec's key and
    password-less sudo, so the build logs in as a vmgenie clone's owner would."""
    user = spec.guest.user if spec.guest else "genie"
    hostname = "gmi-finish"
    user_data = "#cloud-config\n" + yaml.safe_dump(
        {
            "hostname": hostname,
            # Only the build user: "default" would also create the distribution's user
            # (debian, cloud-user...), which the seal does not know to remove.
            "users": [
                {
                    "name": user,
                    "ssh_authorized_keys": [public_key.strip()],
                    "sudo": "ALL=(ALL) NOPASSWD:ALL",
                    "shell": "/bin/bash",
                    "lock_passwd": True,
                },
            ],
            "ssh_pwauth": False,
        },
        sort_keys=False,
    )
    meta = yaml.safe_dump({"instance-id": f"gmi-fsm-finish-{build_id}", "local-hostname": hostname})
    return {"user-data": user_data, "meta-data": meta}

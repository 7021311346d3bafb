"""The document, package and publish stages as local operations for the engine.

``make_operations(store, build_id, spec)`` returns ``{"gmi.document": ..., "gmi.package":
..., "gmi.publish": ...}``: async callables ``(params, sink) -> CommandResult`` that a
:class:`~orchestrator.targets.local.LocalTarget` runs for ``kind="operation"``
commands. Each reads the build's current state from the store when called (facts
and artifacts recorded by earlier stages) and returns its files as artifacts, which
the engine records as ``ArtifactRecorded`` events.

The hashing and zipping are blocking file work: they run in a worker thread so the
engine's event loop (timeouts, Ctrl-C) stays responsive.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.gmi import eventlog
from orchestrator.gmi.atomic import write_text_atomic
from orchestrator.gmi.hashing import sha256_file
from orchestrator.gmi.manifest import (
    Manifest,
    ManifestInputs,
    make_manifest,
    manifest_yaml,
    parse_manifest,
    utc_timestamp,
)
from orchestrator.gmi.naming import METADATA, SUMS, GmiNames
from orchestrator.gmi.package import (
    DEFAULT_DISK_COMPRESSION,
    DiskCompression,
    PackageError,
    check_disk,
    plan_entries,
    root_files,
    variant_for,
    write_sums,
    write_tar,
    write_zip,
)
from orchestrator.gmi.provenance import ProvenanceInputs, Subject, statement_json
from orchestrator.gmi.publish import PublishError, publish
from orchestrator.gmi.readme import render_readme
from orchestrator.gmi.report import Check
from orchestrator.gmi.sidecar import (
    ParentPackage,
    Sidecar,
    SidecarError,
    SidecarInputs,
    make_sidecar,
    parse_sidecar,
    sidecar_yaml,
)
from orchestrator.spec import BuildSpec
from orchestrator.targets.base import Artifact, CommandResult, OutputSink
from orchestrator.targets.local import Operation
from orchestrator.view import EventReader
from states.projection import BuildState, fold
from states.sealed_image import BuildFacts

TOOL_VERSION = "0.1.0"  # kept equal to orchestrator.builds.TOOL_VERSION (not imported: heavy)


@dataclass(frozen=True, slots=True)
class GmiContext:
    """What the operations need: the store to read the build from, and its spec.
    ``base_dir`` resolves a relative ``output.dir`` and relative artifact paths (the
    spec file's folder, as for hooks)."""

    store: EventReader
    build_id: str
    spec: BuildSpec
    base_dir: Path

    def names(self, export_dir: Path | None) -> GmiNames:
        """The names of this build's package: a full GMI when there is an Export-VM
        folder, the disk-only variant otherwise."""
        return GmiNames(self.spec.os.name, self.spec.os.version, variant_for(export_dir))

    def state(self) -> BuildState:
        return fold(self.build_id, self.store.read(self.build_id))

    def path(self, value: str | Path) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p

    def out_dir(self, params: Mapping[str, object]) -> Path:
        return self.path(str(params.get("out_dir") or self.spec.output.dir))


def _artifact(name: str, path: Path, kind: str, digest: str | None = None) -> Artifact:
    sha, size = (digest, path.stat().st_size) if digest else sha256_file(path)
    return Artifact(name=name, path=str(path), sha256=sha, size=size, kind=kind)


def _disk_and_export(
    ctx: GmiContext, st: BuildState, params: Mapping[str, object]
) -> tuple[Path, Path | None]:
    disk = params.get("vhdx") or st.artifacts.get("vhdx", {}).get("path")
    if not disk:
        raise PackageError(
            "no VHDX: the build recorded no `vhdx` artifact",
            hint="the compact stage records the compacted disk",
        )
    export = params.get("export_dir") or st.artifacts.get("export_dir", {}).get("path")
    return ctx.path(str(disk)), ctx.path(str(export)) if export else None


# A build that finishes another package (a disk-only GMI finished on Hyper-V) records
# these facts when it reads its source; the sidecar and the statement name the parent.
PARENT_FACTS = ("parent.package", "parent.sha256", "parent.event_log_head_hash")


def parent_of(facts: Mapping[str, str]) -> ParentPackage | None:
    name, sha, head = (facts.get(k, "") for k in PARENT_FACTS)
    if not name:
        return None
    return ParentPackage(package=name, sha256=sha, event_log_head_hash=head or None)


# -- document --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Documented:
    manifest: Manifest
    sidecar: Sidecar
    artifacts: tuple[Artifact, ...]


def document(ctx: GmiContext, params: Mapping[str, object] | None = None) -> Documented:
    """Hash the disk, write the manifest (vmgenie's twelve keys), the sidecar
    ``gmi-metadata.yml`` (every other fact) and the readme into the output folder. The
    sidecar pins the event log at the build's head *now* (``event_log.seq`` /
    ``head_hash``): the package exports exactly those events, so the sidecar and the
    log it names always agree."""
    params = params or {}
    st = ctx.state()
    disk, export_dir = _disk_and_export(ctx, st, params)
    names = ctx.names(export_dir)
    digest, _ = sha256_file(disk)
    recorded = st.artifacts.get("vhdx", {}).get("sha256")
    if recorded and recorded != digest and "vhdx" not in params:
        raise PackageError(
            f"the VHDX {disk} changed since it was recorded: sha256 {digest}, recorded {recorded}",
            hint="something modified the disk after the compact stage; rebuild from compact",
        )
    spec = ctx.spec
    source = spec.source
    created = utc_timestamp(st.created_at or None)
    manifest = make_manifest(
        ManifestInputs(
            os=spec.os.name,
            version=spec.os.version,
            vm_name=names.vm_name,
            maintainer=spec.manifest.maintainer,
            maintainer_email=spec.manifest.maintainer_email,
            source_url=spec.manifest.source_url,
            description=spec.manifest.description,
            checksum_sha256=digest,
            created=created,
            updated=utc_timestamp(),
            os_pretty_name=st.facts.get("os.pretty_name", ""),
        )
    )
    manifest_text = manifest_yaml(manifest)
    sidecar = make_sidecar(
        SidecarInputs(
            os=spec.os.name,
            version=spec.os.version,
            created=created,
            maintainer=spec.manifest.maintainer,
            maintainer_email=spec.manifest.maintainer_email,
            checksum_sha256=digest,
            facts=dict(st.facts),
            package_name=names.zip,
            variant=names.variant,
            manifest_name=names.manifest,
            manifest_sha256=hashlib.sha256(manifest_text.encode("utf-8")).hexdigest(),
            build_id=ctx.build_id,
            gmi_fsm_version=st.tool_version or TOOL_VERSION,
            host_kind=spec.host.kind,
            event_log_name=names.events,
            event_log_seq=st.head_seq,
            event_log_head_hash=st.head_hash,
            source_uri=source.uri if source else "",
            source_sha256=(source.sha256 or "") if source else "",
            locale_default=spec.prepare.locale,
            parent=parent_of(st.facts),
        )
    )
    out = ctx.out_dir(params)
    out.mkdir(parents=True, exist_ok=True)
    events = ctx.store.read(ctx.build_id, until_seq=st.head_seq)
    files = {
        "manifest": (out / names.manifest, manifest_text),
        "metadata": (out / METADATA, sidecar_yaml(sidecar)),
        "readme": (out / names.readme, render_readme(manifest, sidecar, names, events)),
    }
    for path, text in files.values():
        write_text_atomic(path, text)
    artifacts = tuple(_artifact(name, path, f"gmi.{name}") for name, (path, _) in files.items())
    return Documented(manifest, sidecar, artifacts)


# -- package ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Packaged:
    zip_path: Path
    artifacts: tuple[Artifact, ...]


def package(ctx: GmiContext, params: Mapping[str, object] | None = None) -> Packaged:
    """Export the event log the manifest names, write the zip (and tar.gz if the spec
    asks), the provenance statement, and ``SHA256SUMS`` last."""
    params = params or {}
    st = ctx.state()
    disk, export_dir = _disk_and_export(ctx, st, params)
    names = ctx.names(export_dir)
    out = ctx.out_dir(params)
    manifest_path, sidecar_path = out / names.manifest, out / METADATA
    for path in (manifest_path, sidecar_path):
        if not path.is_file():
            raise PackageError(f"no {path}", hint="the document stage writes it first")
    manifest_bytes = manifest_path.read_bytes()
    manifest = parse_manifest(manifest_bytes.decode("utf-8"))
    try:
        sidecar = parse_sidecar(sidecar_path.read_text(encoding="utf-8"))
    except SidecarError as exc:
        raise PackageError(f"{sidecar_path}: {exc}", hint="run the document stage again") from None
    if sidecar.build.id != ctx.build_id or sidecar.package.name != names.zip:
        raise PackageError(
            f"{sidecar_path} is of build {sidecar.build.id} and package {sidecar.package.name}, not "
            f"{ctx.build_id} and {names.zip}",
            hint="run the document stage of this build again",
        )
    if hashlib.sha256(manifest_bytes).hexdigest() != sidecar.package.manifest_sha256:
        raise PackageError(
            f"{manifest_path} changed after the document stage wrote it ({METADATA} has its digest)",
            hint="run the document stage again rather than editing the manifest by hand",
        )
    # An interrupted earlier run must not leave a SHA256SUMS or statement that seems
    # to vouch for files about to be replaced.
    for stale in (out / SUMS, out / names.provenance):
        stale.unlink(missing_ok=True)
    log = eventlog.export_jsonl(ctx.store, ctx.build_id, sidecar.event_log.seq, out / names.events)
    if log.head_hash != sidecar.event_log.head_hash:
        raise PackageError(
            f"the event log ends at {log.head_hash}, {METADATA} says {sidecar.event_log.head_hash}",
            hint="`gmi-fsm verify ID`: the database may have been altered",
        )
    entries = plan_entries(names, disk, export_dir, root_files(names, out))
    compression = str(params.get("disk_compression") or DEFAULT_DISK_COMPRESSION)
    disk_compression: DiskCompression = "deflated" if compression == "deflated" else "stored"
    formats = [str(f) for f in params.get("formats") or ctx.spec.output.formats]  # type: ignore[attr-defined]
    archives = []
    zipped = write_zip(
        out / names.zip, entries, timestamp=manifest.updated, disk_compression=disk_compression
    )
    check_disk(manifest, zipped, names)
    archives.append(zipped)
    if "tar.gz" in formats:
        tarred = write_tar(out / names.tar, entries, timestamp=manifest.updated)
        check_disk(manifest, tarred, names)
        archives.append(tarred)
    subjects = [Subject(a.path.name, a.sha256) for a in archives]
    subjects.append(Subject(names.disk_entry, manifest.disk_sha256))
    stmt = ProvenanceInputs(
        subjects=tuple(subjects),
        spec=st.spec,
        spec_sha256=st.spec_sha256,
        build_id=ctx.build_id,
        host_kind=ctx.spec.host.kind,
        tool_version=sidecar.build.gmi_fsm_version,
        started_on=st.created_at,
        finished_on=utc_timestamp(),
        package_variant=names.variant,
        source_uri=sidecar.source.uri or "",
        source_sha256=sidecar.source.sha256 or "",
        event_log_name=names.events,
        event_log_sha256=log.sha256,
        event_log_head_seq=log.head_seq,
        event_log_head_hash=log.head_hash,
        parent_name=sidecar.parent.package if sidecar.parent else "",
        parent_sha256=sidecar.parent.sha256 if sidecar.parent else "",
        parent_event_log_head_hash=(sidecar.parent.event_log_head_hash or "") if sidecar.parent else "",
    )
    prov_path = out / names.provenance
    write_text_atomic(prov_path, statement_json(stmt))
    covered = [a.path for a in archives] + [out / arc for arc, _ in root_files(names, out)] + [prov_path]
    sums = write_sums(out, covered)
    artifacts = [
        Artifact("package_zip", str(zipped.path), zipped.sha256, zipped.size, "gmi.package"),
        _artifact("event_log", log.path, "gmi.event_log", log.sha256),
        _artifact("provenance", prov_path, "gmi.provenance"),
        _artifact("sha256sums", sums, "gmi.sha256sums"),
    ]
    if len(archives) > 1:
        t = archives[1]
        artifacts.append(Artifact("package_tar", str(t.path), t.sha256, t.size, "gmi.package"))
    return Packaged(zipped.path, tuple(artifacts))


def _zip_to_publish(ctx: GmiContext, params: Mapping[str, object]) -> Path:
    if params.get("zip"):
        return ctx.path(str(params["zip"]))
    _, export_dir = _disk_and_export(ctx, ctx.state(), params)
    return ctx.out_dir(params) / ctx.names(export_dir).zip


# -- engine glue -----------------------------------------------------------------------


def checks_result(checks: Sequence[Check], sink: OutputSink) -> CommandResult:
    """A validate step's result: each check a recorded fact ``validate.<name>`` and a line
    of output; any failed check fails the step, naming it."""
    for c in checks:
        _say(sink, f"{c.status:4} {c.name}: {c.evidence}")
    bad = [f"{c.name}: {c.evidence}" for c in checks if not c.ok]
    facts = {f"validate.{c.name}": f"{c.status}: {c.evidence}" for c in checks}
    return CommandResult(1 if bad else 0, error="; ".join(bad), facts=facts)


def _say(sink: OutputSink, text: str) -> None:
    sink("stdout", (text + "\n").encode())


def _error(sink: OutputSink, exc: Exception) -> CommandResult:
    hint = getattr(exc, "hint", "")
    sink("stderr", f"{exc}\n{f'hint: {hint}' if hint else ''}\n".encode())
    return CommandResult(1, error=str(exc) + (f" (hint: {hint})" if hint else ""))


_EXPECTED = (PackageError, PublishError, OSError, ValueError)


def make_operations(
    store: EventReader, build_id: str, spec: BuildSpec, *, base_dir: Path | None = None
) -> dict[str, Operation]:
    """The ``gmi.*`` operations for one build, ready for ``LocalTarget(operations=...)``."""
    ctx = GmiContext(store, build_id, spec, base_dir or Path.cwd())

    async def op_document(params: Mapping[str, object], sink: OutputSink) -> CommandResult:
        try:
            done = await asyncio.to_thread(document, ctx, params)
        except _EXPECTED as exc:
            return _error(sink, exc)
        for a in done.artifacts:
            _say(sink, f"wrote {a.path} ({a.size} bytes)")
        return CommandResult(
            0, facts={"gmi.vhdx_sha256": done.manifest.checksum_sha256}, artifacts=done.artifacts
        )

    async def op_package(params: Mapping[str, object], sink: OutputSink) -> CommandResult:
        try:
            done = await asyncio.to_thread(package, ctx, params)
        except _EXPECTED as exc:
            return _error(sink, exc)
        for a in done.artifacts:
            _say(sink, f"wrote {a.path} sha256={a.sha256}")
        return CommandResult(0, artifacts=done.artifacts)

    async def op_publish(params: Mapping[str, object], sink: OutputSink) -> CommandResult:
        try:
            zip_path = _zip_to_publish(ctx, params)
            index = ctx.path(str(params["index"]))
            result = await asyncio.to_thread(publish, zip_path, index, str(params["url"]))
        except KeyError as exc:
            return _error(sink, ValueError(f"gmi.publish needs the parameter {exc}"))
        except _EXPECTED as exc:
            return _error(sink, exc)
        _say(sink, f"{'updated' if result.replaced else 'added'} {result.key} in {result.index}")
        return CommandResult(
            0,
            facts={"gmi.crc64nvme": str(result.entry["crc64nvme"]), "gmi.url": str(result.entry["url"])},
            artifacts=(_artifact("repository_index", result.index, "gmi.index"),),
        )

    async def op_inspect(params: Mapping[str, object], sink: OutputSink) -> CommandResult:
        from orchestrator.gmi.inspect import inspect_disk, unavailable_reason  # noqa: PLC0415

        reason = unavailable_reason()
        if reason:
            # Not a failure: the boot checks still ran; the fact says what was not checked.
            _say(sink, f"skipped: {reason}")
            return CommandResult(0, facts={"validate.inspect": f"skipped: {reason}"})
        st = ctx.state()
        try:
            disk, _export = _disk_and_export(ctx, st, params)
        except PackageError as exc:
            return _error(sink, exc)
        facts = BuildFacts.from_facts(st.facts, ctx.spec.guest.user if ctx.spec.guest else "")
        return checks_result(await asyncio.to_thread(inspect_disk, disk, facts), sink)

    return {
        "gmi.document": op_document,
        "gmi.package": op_package,
        "gmi.publish": op_publish,
        "gmi.inspect": op_inspect,
    }

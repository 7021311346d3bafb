"""Static validation of a GMI package: name, layout, manifest, checksums, provenance
and the event log's hash chain, each a named check with its evidence. ``inspect``
adds an offline look inside the disk (``orchestrator.gmi.inspect``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from orchestrator.gmi import eventlog
from orchestrator.gmi.archive import Scan, kind_of, scan
from orchestrator.gmi.hashing import parse_sha256sums, sha256_file
from orchestrator.gmi.manifest import DISK_ONLY, Manifest, ManifestError, parse_manifest
from orchestrator.gmi.naming import (
    BASE_NAME_RE,
    DISK_DIR,
    SNAPSHOT_DIR,
    SUMS,
    TAR_NAME_RE,
    VM_DIR,
    ZIP_NAME_RE,
    GmiNames,
)
from orchestrator.gmi.provenance import subject_digests
from orchestrator.gmi.report import Check, Report, check, failed, passed, skipped


def validate(
    path: Path, *, inspect: bool = False, inspector: Callable[[Path], list[Check]] | None = None
) -> Report:
    """Validate the package at ``path``. With ``inspect``, also look inside the disk
    (``inspector`` defaults to libguestfs; tests may pass their own)."""
    report = Report(str(path))
    if not path.exists():
        report.add(failed("exists", f"{path} does not exist"))
        return report
    if kind_of(path) is None:
        report.add(failed("name", f"{path.name}: not a .zip, .tar.gz or folder"))
        return report
    names = _check_name(report, path)
    sc = scan(path)
    report.add(
        check(
            "archive.readable",
            not sc.error,
            f"{sc.kind}: {len(sc.files)} files read, checksums intact",
            sc.error,
        )
    )
    report.add(
        check(
            "archive.safe_paths",
            not sc.unsafe,
            "no absolute paths, no '..', no links",
            "unsafe entries: " + "; ".join(sc.unsafe[:5]),
        )
    )
    if sc.error:
        return report
    if names is None:
        names = _names_from_contents(sc)
        if names is None:
            report.add(failed("manifest.present", "no GMI-<os>-<ver>.yml at the root"))
            return report
    manifest = _check_manifest(report, sc, names)
    _check_layout(report, sc, names, manifest)
    if manifest is None:
        return report
    _check_disk_checksum(report, sc, names, manifest)
    sidecars = path if sc.kind == "folder" else path.parent
    archive_digest = _ArchiveDigest(path if sc.kind != "folder" else None)
    _check_sums(report, sidecars, path, archive_digest)
    _check_provenance(report, sidecars / names.provenance, path, sc, names, manifest, archive_digest)
    _check_event_log(report, sc, sidecars, names, manifest)
    if inspect:
        from orchestrator.gmi import inspect as inspect_mod  # noqa: PLC0415

        checks = inspect_mod.inspect_package(sc, names, inspector)
        report.inspect_unavailable = any(c.name == "inspect.available" and not c.ok for c in checks)
        report.add(*checks)
    return report


def _check_name(report: Report, path: Path) -> GmiNames | None:
    kind = kind_of(path)
    pattern = {"zip": ZIP_NAME_RE, "tar.gz": TAR_NAME_RE, "folder": BASE_NAME_RE}[kind or "zip"]
    m = pattern.match(path.name)
    if m is None:
        if kind == "folder":
            report.add(skipped("name", f"folder {path.name!r}: the name is taken from the manifest inside"))
        else:
            report.add(failed("name", f"{path.name!r} does not match {pattern.pattern} (vmgenie refuses it)"))
        return None
    names = GmiNames(m.group("os"), m.group("ver"))
    report.add(passed("name", f"{path.name}: os {names.os!r}, version {names.version!r}"))
    return names


def _names_from_contents(sc: Scan) -> GmiNames | None:
    found = [
        n
        for n in sc.files
        if "/" not in n and BASE_NAME_RE.match(n.removesuffix(".yml")) and n.endswith(".yml")
    ]
    if len(found) != 1:
        return None
    m = BASE_NAME_RE.match(found[0].removesuffix(".yml"))
    return GmiNames(m.group("os"), m.group("ver")) if m else None


def _check_manifest(report: Report, sc: Scan, names: GmiNames) -> Manifest | None:
    text = sc.texts.get(names.manifest)
    if text is None:
        report.add(failed("manifest.present", f"{names.manifest} is not at the archive root"))
        return None
    report.add(passed("manifest.present", names.manifest))
    try:
        manifest = parse_manifest(text.decode("utf-8"))
    except (ManifestError, UnicodeDecodeError) as exc:
        problems = exc.problems if isinstance(exc, ManifestError) else [str(exc)]
        report.add(failed("manifest.schema", "; ".join(problems)))
        return None
    report.add(
        passed("manifest.schema", "every vmgenie key present with the right type; hyperv_generation 2")
    )
    wrong = []
    if manifest.os != names.os or manifest.version != names.version:
        wrong.append(
            f"os/version {manifest.os!r}/{manifest.version!r} differ from "
            f"the name's {names.os!r}/{names.version!r}"
        )
    if manifest.vm_name != names.vm_name:
        wrong.append(f"vm_name {manifest.vm_name!r} is not {names.vm_name!r}")
    report.add(check("manifest.identity", not wrong, f"vm_name {manifest.vm_name!r}", "; ".join(wrong)))
    if manifest.is_gmi_fsm:
        missing = [
            k
            for k in ("event_log_seq", "event_log_head_hash", "package_variant")
            if getattr(manifest, k) is None
        ]
        report.add(
            check(
                "manifest.provenance_keys",
                not missing,
                f"build {manifest.build_id}",
                f"a gmi-fsm manifest (build_id {manifest.build_id}) lacks {', '.join(missing)}",
            )
        )
    return manifest


def _check_layout(report: Report, sc: Scan, names: GmiNames, manifest: Manifest | None) -> None:
    report.add(
        check("layout.readme", names.readme in sc.files, names.readme, f"{names.readme} is not at the root")
    )
    disks = sorted(n for n in sc.files if n.startswith(f"{DISK_DIR}/"))
    ok = disks == [names.disk_entry]
    report.add(
        check(
            "layout.disk",
            ok,
            names.disk_entry,
            f"'{DISK_DIR}/' must hold exactly '{names.vm_name}.vhdx'; found: {', '.join(disks) or 'nothing'}",
        )
    )
    report.add(
        check(
            "layout.snapshots",
            SNAPSHOT_DIR in sc.dirs,
            f"{SNAPSHOT_DIR}/ present",
            f"no {SNAPSHOT_DIR}/ folder (Export-VM always makes one; it may be empty)",
        )
    )
    avhdx = [n for n in sc.files if n.lower().endswith(".avhdx")]
    report.add(
        check(
            "layout.no_avhdx",
            not avhdx,
            "no differencing disks",
            f"differencing disks must be merged first: {', '.join(avhdx[:5])}",
        )
    )
    vmcx = sorted(n for n in sc.files if n.lower().endswith(".vmcx"))
    if manifest is not None and manifest.variant == DISK_ONLY:
        vm_files = [n for n in sc.files if n.startswith(f"{VM_DIR}/")]
        report.add(
            check(
                "layout.vm_config",
                not vmcx and not vm_files and VM_DIR not in sc.dirs,
                "disk-only package: no Virtual Machines/ (import with New-VM -VHDPath, not vmgenie)",
                f"a disk-only package must not have {VM_DIR}/ or .vmcx files: "
                + ", ".join((vmcx or vm_files)[:5]),
            )
        )
        return
    outside = [n for n in vmcx if not n.startswith(f"{VM_DIR}/")]
    report.add(
        check(
            "layout.vm_config",
            len(vmcx) == 1 and not outside,
            f"exactly one .vmcx: {vmcx[0] if vmcx else ''}",
            f"'{VM_DIR}/' must hold exactly one .vmcx (vmgenie's Import-VM fails otherwise); found "
            f"{len(vmcx)}: {', '.join(vmcx[:5]) or 'none'}",
        )
    )


def _check_disk_checksum(report: Report, sc: Scan, names: GmiNames, manifest: Manifest) -> None:
    disk = sc.files.get(names.disk_entry)
    if disk is None:
        report.add(skipped("manifest.checksum", "no VHDX to hash"))
        return
    report.add(
        check(
            "manifest.checksum",
            disk.sha256 == manifest.checksum_sha256,
            f"VHDX sha256 {disk.sha256} matches ({disk.size} bytes)",
            f"Checksum mismatch: the VHDX's sha256 is {disk.sha256}, the manifest says "
            f"{manifest.checksum_sha256} (corrupted or tampered with; vmgenie refuses it)",
        )
    )


class _ArchiveDigest:
    """The archive's own sha256, computed once and only if a check needs it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._digest: str | None = None

    def get(self) -> str | None:
        if self.path is None:
            return None
        if self._digest is None:
            self._digest = sha256_file(self.path)[0]
        return self._digest


def _check_sums(report: Report, folder: Path, path: Path, archive: _ArchiveDigest) -> None:
    sums = folder / SUMS
    if not sums.is_file():
        report.add(
            skipped("sha256sums", f"no {SUMS} in {folder}: the files beside the package are not checked")
        )
        return
    try:
        entries = parse_sha256sums(sums.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        report.add(failed("sha256sums", f"{sums}: {exc}"))
        return
    bad: list[str] = []
    ok: list[str] = []
    missing: list[str] = []
    for digest, name in entries:
        target = folder / name
        if name == path.name and archive.path is not None:
            got = archive.get()
        elif target.is_file():
            got = sha256_file(target)[0]
        else:
            missing.append(name)
            continue
        (ok if got == digest else bad).append(name)
    listed = {n for _, n in entries}
    if archive.path is not None and path.name not in listed:
        bad.append(f"{path.name} (not listed)")
    note = f"; not present here: {', '.join(missing)}" if missing else ""
    report.add(
        check(
            "sha256sums",
            not bad,
            f"{len(ok)} file(s) match{note}",
            f"mismatch: {', '.join(bad)}{note}",
        )
    )


def _check_provenance(
    report: Report,
    stmt: Path,
    path: Path,
    sc: Scan,
    names: GmiNames,
    manifest: Manifest,
    archive: _ArchiveDigest,
) -> None:
    if not stmt.is_file():
        if manifest.is_gmi_fsm and sc.kind != "folder":
            report.add(
                failed(
                    "provenance", f"{stmt.name} is missing beside the package (gmi-fsm packages carry one)"
                )
            )
        else:
            report.add(skipped("provenance", f"no {stmt.name} beside the package"))
        return
    try:
        subjects = subject_digests(json.loads(stmt.read_text(encoding="utf-8")))
    except (ValueError, OSError) as exc:
        report.add(failed("provenance", f"{stmt.name}: {exc}"))
        return
    problems = []
    disk = sc.files.get(names.disk_entry)
    if names.disk_entry not in subjects:
        problems.append(f"the VHDX {names.disk_entry!r} is not a subject")
    elif disk is not None and subjects[names.disk_entry] != disk.sha256:
        problems.append("the VHDX digest differs from the subject's")
    if archive.path is not None:
        if path.name not in subjects:
            problems.append(f"{path.name} is not a subject")
        elif subjects[path.name] != archive.get():
            problems.append(f"{path.name}'s sha256 differs from the subject's")
    report.add(
        check(
            "provenance",
            not problems,
            f"in-toto v1 / SLSA v1: {len(subjects)} subject digest(s) match",
            "; ".join(problems),
        )
    )


def _check_event_log(report: Report, sc: Scan, folder: Path, names: GmiNames, manifest: Manifest) -> None:
    data = sc.texts.get(names.events)
    where = f"{names.events} in the package"
    if data is None and (folder / names.events).is_file():
        data, where = (folder / names.events).read_bytes(), f"{names.events} beside the package"
    if data is None:
        if manifest.is_gmi_fsm:
            report.add(
                failed(
                    "event_log",
                    f"{names.events} not found (a gmi-fsm manifest names build {manifest.build_id})",
                )
            )
        else:
            report.add(skipped("event_log", "no event log (not a gmi-fsm package)"))
        return
    head = None
    if manifest.event_log_seq is not None and manifest.event_log_head_hash is not None:
        head = (manifest.event_log_seq, manifest.event_log_head_hash)
    try:
        chain = eventlog.verify_jsonl(data.decode("utf-8").splitlines(), head)
    except (eventlog.EventLogError, UnicodeDecodeError) as exc:
        report.add(failed("event_log", f"{where}: {exc}"))
        return
    if not chain.ok:
        report.add(
            failed("event_log", f"{where}: hash chain broken at seq {chain.first_bad_seq}: {chain.reason}")
        )
        return
    problems = []
    if manifest.build_id is not None and chain.build_id != manifest.build_id:
        problems.append(f"the log is of build {chain.build_id}, the manifest names {manifest.build_id}")
    if manifest.event_log_head_hash is not None and chain.head_hash != manifest.event_log_head_hash:
        problems.append(f"its head {chain.head_hash} is not the manifest's event_log_head_hash")
    report.add(
        check(
            "event_log",
            not problems,
            f"{where}: {chain.events} events, hash chain intact, head {chain.head_hash[:16]}… = manifest",
            "; ".join(problems),
        )
    )

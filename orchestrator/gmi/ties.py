"""The checks that tie a GMI package to its build: the sidecar ``gmi-metadata.yml``,
``SHA256SUMS`` beside the package, the provenance statement, and the event log's hash
chain up to the head the sidecar names. Called by :func:`orchestrator.gmi.validate.validate`
after the checks of what vmgenie's import does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from orchestrator.gmi import eventlog
from orchestrator.gmi.archive import Scan
from orchestrator.gmi.hashing import parse_sha256sums, sha256_file
from orchestrator.gmi.manifest import Manifest
from orchestrator.gmi.naming import METADATA, SUMS, GmiNames
from orchestrator.gmi.provenance import run_facts, subject_digests
from orchestrator.gmi.report import Report, check, failed, skipped
from orchestrator.gmi.sidecar import Sidecar, SidecarError, is_gmi_fsm, parse_sidecar


def check_sidecar(
    report: Report, sc: Scan, names: GmiNames, path: Path, manifest: Manifest | None
) -> Sidecar | None:
    data = sc.texts.get(METADATA)
    if data is None:
        report.add(skipped("sidecar", f"no {METADATA}: not made by gmi-fsm, nothing ties it to a build"))
        return None
    text = data.decode("utf-8", "replace")
    if not is_gmi_fsm(text):
        report.add(skipped("sidecar", f"{METADATA} was not written by gmi-fsm (no generator: gmi-fsm)"))
        return None
    try:
        sidecar = parse_sidecar(text)
    except SidecarError as exc:
        report.add(failed("sidecar", f"{METADATA}: " + "; ".join(exc.problems)))
        return None
    wrong = []
    pkg = sidecar.package
    if (sidecar.os, sidecar.version) != (names.os, names.version):
        wrong.append(f"os/version {sidecar.os!r}/{sidecar.version!r} differ from the package's")
    if pkg.variant != names.variant or pkg.manifest != names.manifest:
        wrong.append(f"it describes a {pkg.variant} package with manifest {pkg.manifest}")
    if sc.kind != "folder" and Path(pkg.name).stem.removesuffix(".tar") != Path(path.name).stem.removesuffix(
        ".tar"
    ):
        wrong.append(f"it names the package {pkg.name}, this is {path.name}")
    manifest_bytes = sc.texts.get(names.manifest, b"")
    if hashlib.sha256(manifest_bytes).hexdigest() != pkg.manifest_sha256:
        wrong.append(f"{names.manifest} is not the manifest it was written with (its sha256 differs)")
    if manifest is not None and sidecar.checksum_sha256 != manifest.disk_sha256:
        wrong.append("its checksum_sha256 is not the manifest's")
    report.add(
        check(
            "sidecar",
            not wrong,
            f"{METADATA}: build {sidecar.build.id}, {pkg.variant}, event log to seq {sidecar.event_log.seq}",
            f"{METADATA}: " + "; ".join(wrong),
        )
    )
    return sidecar


class ArchiveDigest:
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


def check_sums(report: Report, folder: Path, path: Path, archive: ArchiveDigest) -> None:
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


def check_provenance(
    report: Report,
    stmt: Path,
    path: Path,
    sc: Scan,
    names: GmiNames,
    sidecar: Sidecar | None,
    archive: ArchiveDigest,
) -> None:
    if not stmt.is_file():
        if sidecar is not None and sc.kind != "folder":
            report.add(
                failed(
                    "provenance", f"{stmt.name} is missing beside the package (gmi-fsm packages carry one)"
                )
            )
        else:
            report.add(skipped("provenance", f"no {stmt.name} beside the package"))
        return
    try:
        doc: Any = json.loads(stmt.read_text(encoding="utf-8"))
        subjects = subject_digests(doc)
    except (ValueError, OSError) as exc:
        report.add(failed("provenance", f"{stmt.name}: {exc}"))
        return
    problems = _subjects_vs_files(subjects, path, sc, names, archive)
    if sidecar is not None:
        run = run_facts(doc)
        if run.invocation_id != sidecar.build.id:
            problems.append(f"it is of build {run.invocation_id!r}, {METADATA} names {sidecar.build.id!r}")
        if run.package_variant != sidecar.package.variant:
            problems.append(
                f"it says variant {run.package_variant!r}, {METADATA} {sidecar.package.variant!r}"
            )
        if run.event_log_head_hash != sidecar.event_log.head_hash:
            problems.append(f"its event-log head is not {METADATA}'s ({sidecar.event_log.head_hash[:16]}…)")
    report.add(
        check(
            "provenance",
            not problems,
            f"in-toto v1 / SLSA v1: {len(subjects)} subject digest(s) match"
            + (f"; build {sidecar.build.id} and event-log head agree with {METADATA}" if sidecar else ""),
            "; ".join(problems),
        )
    )


def _subjects_vs_files(
    subjects: dict[str, str], path: Path, sc: Scan, names: GmiNames, archive: ArchiveDigest
) -> list[str]:
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
    return problems


def _statement_vs_sidecar(doc: Any, sidecar: Sidecar) -> list[str]:
    run = run_facts(doc)
    problems = []
    if run.invocation_id != sidecar.build.id:
        problems.append(f"it is of build {run.invocation_id!r}, {METADATA} names {sidecar.build.id!r}")
    if run.package_variant != sidecar.package.variant:
        problems.append(f"it says variant {run.package_variant!r}, {METADATA} {sidecar.package.variant!r}")
    if run.event_log_head_hash != sidecar.event_log.head_hash:
        problems.append(f"its event-log head is not {METADATA}'s ({sidecar.event_log.head_hash[:16]}…)")
    return problems


def check_event_log(report: Report, sc: Scan, folder: Path, names: GmiNames, sidecar: Sidecar | None) -> None:
    data = sc.texts.get(names.events)
    where = f"{names.events} in the package"
    if data is None and (folder / names.events).is_file():
        data, where = (folder / names.events).read_bytes(), f"{names.events} beside the package"
    if data is None:
        if sidecar is not None:
            report.add(
                failed("event_log", f"{names.events} not found ({METADATA} names build {sidecar.build.id})")
            )
        else:
            report.add(skipped("event_log", "no event log (not a gmi-fsm package)"))
        return
    head = (sidecar.event_log.seq, sidecar.event_log.head_hash) if sidecar is not None else None
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
    if sidecar is not None and chain.build_id != sidecar.build.id:
        problems.append(f"the log is of build {chain.build_id}, {METADATA} names {sidecar.build.id}")
    if sidecar is not None and chain.head_hash != sidecar.event_log.head_hash:
        problems.append(f"its head {chain.head_hash} is not {METADATA}'s event_log.head_hash")
    tied = (
        f", head {chain.head_hash[:16]}… = {METADATA}'s"
        if sidecar is not None
        else " (no sidecar to tie it to)"
    )
    report.add(
        check(
            "event_log",
            not problems,
            f"{where}: {chain.events} events, hash chain intact{tied}",
            "; ".join(problems),
        )
    )

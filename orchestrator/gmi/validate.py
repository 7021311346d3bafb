"""Static validation of a GMI package: what vmgenie's import would do with it (name,
extraction, manifest binding, layout, checksum), then what ties it to its build
(sidecar, SHA256SUMS, provenance, the event log's hash chain), each a named check
with its evidence. ``inspect`` adds an offline look inside the disk
(``orchestrator.gmi.inspect``).

A disk-only GMI (``disk-only-GMI-<Os>-<Ver>.zip``) can pass every check and still not
be importable by vmgenie: the report says so (``Report.importable``) and the CLI exits
with its own code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestrator.gmi.archive import Scan, kind_of, scan
from orchestrator.gmi.manifest import (
    Manifest,
    ManifestError,
    bind_manifest,
    check_manifest,
    vmgenie_view,
)
from orchestrator.gmi.naming import (
    DISK_DIR,
    DISK_ONLY,
    DISK_ONLY_PREFIX,
    SNAPSHOT_DIR,
    VM_DIR,
    GmiNames,
    names_from_archive,
    vmgenie_accepts_name,
)
from orchestrator.gmi.report import Check, Report, check, failed, passed, skipped
from orchestrator.gmi.sidecar import Sidecar
from orchestrator.gmi.ties import ArchiveDigest, check_event_log, check_provenance, check_sidecar, check_sums
from states.sealed_image import BuildFacts

View = dict[str, str | int | None]


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
    _check_archive(report, sc)
    if sc.error:
        return report
    if names is None:
        names = _names_from_contents(sc)
        if names is None:
            report.add(failed("manifest.present", "no GMI-<os>-<ver>.yml at the root"))
            return report
    names = _check_disguise(report, sc, names)
    report.variant = names.variant
    view, manifest = _check_manifest(report, sc, names)
    _check_layout(report, sc, names)
    if view is None:
        return report
    _check_disk_checksum(report, sc, names, view)
    sidecar = check_sidecar(report, sc, names, path, manifest)
    sidecars = path if sc.kind == "folder" else path.parent
    archive_digest = ArchiveDigest(path if sc.kind != "folder" else None)
    check_sums(report, sidecars, path, archive_digest)
    check_provenance(report, sidecars / names.provenance, path, sc, names, sidecar, archive_digest)
    check_event_log(report, sc, sidecars, names, sidecar)
    if inspect:
        from orchestrator.gmi import inspect as inspect_mod  # noqa: PLC0415

        checks = inspect_mod.inspect_package(sc, names, inspector, build_facts(sidecar))
        report.inspect_unavailable = any(c.name == "inspect.available" and not c.ok for c in checks)
        report.add(*checks)
    return report


def build_facts(sidecar: Sidecar | None) -> BuildFacts:
    """What the sealed-image checks need to know of the build, from the sidecar."""
    sealed = sidecar.sealed if sidecar is not None else None
    if sealed is None:
        return BuildFacts()
    return BuildFacts(
        user=sealed.build_user, hostname=sealed.build_hostname or "", remove_user=sealed.build_user_removed
    )


# -- what vmgenie's import does --------------------------------------------------------


def _check_name(report: Report, path: Path) -> GmiNames | None:
    names = names_from_archive(path.name)
    kind = kind_of(path)
    if names is None or (kind == "zip" and not path.name.endswith(".zip")):
        if kind == "folder":
            report.add(skipped("name", f"folder {path.name!r}: the name is taken from the manifest inside"))
        else:
            report.add(
                failed(
                    "name",
                    f"{path.name!r} does not match ^GMI-(?<os>.+)-(?<ver>.+)\\.zip$ (vmgenie refuses it) nor "
                    f"the disk-only {DISK_ONLY_PREFIX}GMI-<os>-<ver>.zip",
                )
            )
        return None
    if "'" in path.name:
        report.add(
            failed(
                "name",
                f"{path.name!r} has a single quote: vmgenie extracts into a folder named after the file and "
                "passes that path to PowerShell in single quotes (Import-VM -Path '...'), which breaks",
            )
        )
        return names
    if names.is_disk_only:
        report.add(
            passed(
                "name",
                f"{path.name}: a disk-only GMI of os {names.os!r}, version {names.version!r}; vmgenie's "
                "import refuses the name before extracting anything",
            )
        )
    elif kind == "zip" and not vmgenie_accepts_name(path.name):
        report.add(failed("name", f"{path.name!r} does not match vmgenie's pattern"))
    else:
        report.add(passed("name", f"{path.name}: os {names.os!r}, version {names.version!r}"))
    return names


def _check_archive(report: Report, sc: Scan) -> None:
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
    report.add(
        check(
            "archive.windows_names",
            not sc.windows,
            'every name extracts as itself on NTFS (no <>:"|?*, control characters, trailing dots or '
            "spaces, device names, backslashes; no two names equal but for case)",
            ".NET's ZipFile.ExtractToDirectory on NTFS would refuse, rename or fold these: "
            + "; ".join(sc.windows[:8])
            + (f" (and {len(sc.windows) - 8} more)" if len(sc.windows) > 8 else ""),
        )
    )
    if sc.kind == "zip":
        report.add(
            check(
                "archive.dotnet_readable",
                not sc.dotnet,
                "every member is stored or deflate, none encrypted",
                "; ".join(sc.dotnet[:5]),
            )
        )


def _names_from_contents(sc: Scan) -> GmiNames | None:
    found = [
        names
        for n in sc.files
        if "/" not in n and n.endswith(".yml") and (names := names_from_archive(n.removesuffix(".yml")))
    ]
    return found[0] if len(found) == 1 else None


def _check_disguise(report: Report, sc: Scan, names: GmiNames) -> GmiNames:
    """A disk-only package renamed to look like a full one: say so, and go on checking
    it as what it is."""
    disk_only = GmiNames(names.os, names.version, DISK_ONLY)
    if names.is_disk_only or names.manifest in sc.texts or disk_only.manifest not in sc.texts:
        return names
    report.add(
        failed(
            "package.variant",
            f"this is a disk-only GMI ({disk_only.manifest} inside, no VM configuration) offered as "
            f"{names.zip}: vmgenie cannot import it (its import looks for {names.manifest} and throws "
            f"FileNotFoundException). Finish it on a Hyper-V host into {names.zip} (docs/package.md)",
        )
    )
    return disk_only


def _check_manifest(report: Report, sc: Scan, names: GmiNames) -> tuple[View | None, Manifest | None]:
    text = sc.texts.get(names.manifest)
    if text is None:
        report.add(failed("manifest.present", f"{names.manifest} is not at the archive root"))
        return None, None
    report.add(passed("manifest.present", names.manifest))
    try:
        bound = bind_manifest(text.decode("utf-8"))
    except (ManifestError, UnicodeDecodeError) as exc:
        problems = exc.problems if isinstance(exc, ManifestError) else [f"not UTF-8: {exc}"]
        report.add(
            failed(
                "manifest.vmgenie_binding",
                "vmgenie's import would throw (YamlDotNet binds the manifest to GmiMetadata and refuses "
                "any key it does not have): " + "; ".join(problems),
            )
        )
        return None, None
    dup = f"; repeated keys (the last one wins): {', '.join(bound.duplicates)}" if bound.duplicates else ""
    report.add(
        passed(
            "manifest.vmgenie_binding",
            f"binds to VmGenie.Artifacts.GmiMetadata as YamlDotNet 13 does: {len(bound.values)} of its 12 "
            f"keys, no other{dup}",
        )
    )
    view = vmgenie_view(bound)
    manifest: Manifest | None = None
    try:
        manifest = check_manifest(bound)
        report.add(
            passed("manifest.schema", "all 12 keys present, UTC timestamps, hyperv_generation 2, a sha256")
        )
    except ManifestError as exc:
        report.add(failed("manifest.schema", "; ".join(exc.problems)))
    wrong = []
    if (view["os"], view["version"]) != (names.os, names.version):
        wrong.append(
            f"os/version {view['os']!r}/{view['version']!r} differ from the name's {names.os!r}/"
            f"{names.version!r}"
        )
    if view["vm_name"] != names.vm_name:
        wrong.append(
            f"vm_name {view['vm_name']!r} is not {names.vm_name!r} (vmgenie hashes "
            f"'{DISK_DIR}/<vm_name>.vhdx' and then looks for a VM named {names.vm_name!r})"
        )
    report.add(check("manifest.identity", not wrong, f"vm_name {view['vm_name']!r}", "; ".join(wrong)))
    return view, manifest


def _vmcx_problem(sc: Scan, names: GmiNames) -> tuple[bool, str, str]:
    vmcx = sorted(n for n in sc.files if n.lower().endswith(".vmcx"))
    direct = [n for n in vmcx if n.startswith(f"{VM_DIR}/") and n.count("/") == 1]
    other = [n for n in vmcx if n not in direct]
    quoted = [n for n in direct if "'" in n]
    if names.is_disk_only:
        vm_files = sorted(n for n in sc.files if n.startswith(f"{VM_DIR}/"))
        ok = not vmcx and not vm_files and VM_DIR not in sc.dirs
        return (
            ok,
            f"disk-only: no '{VM_DIR}/' (not importable by vmgenie until finished on a Hyper-V host)",
            f"a disk-only package must not have '{VM_DIR}/' or .vmcx files: "
            + ", ".join((vmcx or vm_files)[:5]),
        )
    ok = len(direct) == 1 and not other and not quoted
    bad = (
        f"'{VM_DIR}/' must hold exactly one .vmcx directly inside it; found {len(direct)}"
        + (f": {', '.join(direct[:5])}" if direct else "")
        + (f"; elsewhere (vmgenie does not look there): {', '.join(other[:5])}" if other else "")
        + (f"; a single quote in {quoted[0]!r} breaks vmgenie's Import-VM command" if quoted else "")
        + f". vmgenie deletes an existing VM named {names.vm_name!r} and its disk BEFORE it finds this out"
    )
    return ok, f"exactly one .vmcx, directly in '{VM_DIR}/': {direct[0] if direct else ''}", bad


def _check_layout(report: Report, sc: Scan, names: GmiNames) -> None:
    report.add(
        check("layout.readme", names.readme in sc.files, names.readme, f"{names.readme} is not at the root")
    )
    disks = sorted(n for n in sc.files if n.startswith(f"{DISK_DIR}/"))
    report.add(
        check(
            "layout.disk",
            disks == [names.disk_entry],
            names.disk_entry,
            f"'{DISK_DIR}/' must hold exactly '{names.vm_name}.vhdx'; found: {', '.join(disks) or 'nothing'}",
        )
    )
    if names.is_disk_only:
        report.add(skipped("layout.snapshots", "disk-only: no Export-VM folder, so no Snapshots/"))
    else:
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
    ok, good, bad = _vmcx_problem(sc, names)
    report.add(check("layout.vm_config", ok, good, bad))


def _check_disk_checksum(report: Report, sc: Scan, names: GmiNames, view: View) -> None:
    expected = str(view["checksum_sha256"] or "")
    disk = sc.files.get(f"{DISK_DIR}/{view['vm_name']}.vhdx")
    if disk is None:
        report.add(
            failed(
                "manifest.checksum",
                f"no '{DISK_DIR}/{view['vm_name']}.vhdx' to hash: vmgenie counts a missing disk as a "
                "checksum mismatch and refuses the GMI",
            )
        )
        return
    report.add(
        check(
            "manifest.checksum",
            disk.sha256 == expected.lower(),
            f"VHDX sha256 {disk.sha256} matches ({disk.size} bytes)",
            f"Checksum mismatch: the VHDX's sha256 is {disk.sha256}, the manifest says "
            f"{expected or 'nothing'} (corrupted or tampered with; vmgenie refuses it)",
        )
    )

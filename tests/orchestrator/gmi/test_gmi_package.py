"""Packages built from a real local build: layout exactly as vmgenie imports it,
checksums, the exported event log, provenance, atomic writes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from events.store import verify_chain
from orchestrator.gmi import eventlog
from orchestrator.gmi.hashing import sha256_file
from orchestrator.gmi.manifest import VMGENIE_KEYS, bind_manifest, parse_manifest
from orchestrator.gmi.package import PackageError, plan_entries
from orchestrator.gmi.sidecar import parse_sidecar
from orchestrator.gmi.validate import validate
from tests.support.gmi_fixtures import DISK_NAMES, FACTS, NAMES, Build, local_build


def _names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


def test_output_folder_layout(hyperv_build: Build) -> None:
    files = sorted(p.name for p in hyperv_build.out.iterdir())
    assert files == sorted(
        [
            "GMI-Debian-12.zip",
            "GMI-Debian-12.tar.gz",
            "GMI-Debian-12.yml",
            "GMI-Debian-12.md",
            "gmi-metadata.yml",
            "GMI-Debian-12.events.jsonl",
            "GMI-Debian-12.intoto.json",
            "SHA256SUMS",
        ]
    )


def test_hyperv_zip_is_the_flattened_export(hyperv_build: Build) -> None:
    names = _names(hyperv_build.out / NAMES.zip)
    assert names[:4] == [
        "GMI-Debian-12.yml",
        "GMI-Debian-12.md",
        "gmi-metadata.yml",
        "GMI-Debian-12.events.jsonl",
    ]
    assert names[-1] == "Virtual Hard Disks/GMI Debian 12.vhdx"  # last: the manifest comes first
    assert "Snapshots/" in names
    vmcx = [n for n in names if n.endswith(".vmcx")]
    assert len(vmcx) == 1 and vmcx[0].startswith("Virtual Machines/")
    assert any(n.endswith(".vmgs") for n in names) and any(n.endswith(".VMRS") for n in names)
    assert not any(n.startswith(("/", "export", "GMI Debian 12/")) for n in names)  # no base folder
    with zipfile.ZipFile(hyperv_build.out / NAMES.zip) as zf:
        assert zf.getinfo(NAMES.disk_entry).compress_type == zipfile.ZIP_STORED
        assert zf.getinfo(NAMES.manifest).compress_type == zipfile.ZIP_DEFLATED


def test_manifest_has_exactly_vmgenies_twelve_keys(hyperv_build: Build) -> None:
    text = (hyperv_build.out / NAMES.manifest).read_text()
    raw = yaml.safe_load(text)
    assert list(raw) == list(VMGENIE_KEYS)  # no other key: vmgenie's import would throw
    assert bind_manifest(text).values.keys() == set(VMGENIE_KEYS)
    assert isinstance(raw["version"], str) and raw["version"] == "12"  # quoted: vmgenie reads a string
    assert raw["gmi_version"] == "1.0" and raw["hyperv_generation"] == 2
    assert 'version: "12"' in text and 'created: "' in text  # every string quoted
    m = parse_manifest(text)
    assert m.vm_name == "GMI Debian 12"
    assert m.checksum_sha256 == sha256_file(hyperv_build.disk)[0]
    assert m.maintainer == "Test Maintainer"
    assert m.created.endswith("Z") and len(m.created) == 20


def test_the_facts_are_in_the_sidecar(hyperv_build: Build) -> None:
    manifest_bytes = (hyperv_build.out / NAMES.manifest).read_bytes()
    x = parse_sidecar((hyperv_build.out / "gmi-metadata.yml").read_text())
    assert x.generator == "gmi-fsm" and x.format == 1
    assert x.kernel == FACTS["kernel.release"] and x.cloud_init == FACTS["cloud_init.version"]
    assert x.integration_services.daemons == ["hv-kvp-daemon", "hv-vss-daemon", "hv-fcopy-daemon"]
    assert x.integration_services.source == "package"
    assert x.package_count == 312 and x.default_users == ["genie"] and x.locale == "en_US.UTF-8"
    assert x.os_pretty_name == FACTS["os.pretty_name"]
    assert x.source.sha256 == FACTS["source.sha256"] and x.source.uri == FACTS["source.path"]
    assert x.build.id == hyperv_build.build_id and x.build.gmi_fsm_version and x.build.host_kind
    assert x.package.variant == "hyperv-export" and x.package.name == NAMES.zip
    assert x.package.manifest == NAMES.manifest
    assert x.package.manifest_sha256 == hashlib.sha256(manifest_bytes).hexdigest()
    assert x.checksum_sha256 == sha256_file(hyperv_build.disk)[0]
    m = parse_manifest(manifest_bytes.decode())
    events = (hyperv_build.out / NAMES.events).read_text().splitlines()
    last = json.loads(events[-1])
    assert (x.event_log.seq, x.event_log.head_hash) == (last["seq"], last["hash"])
    assert x.event_log.name == NAMES.events and m.created == x.created


def test_readme_summarizes_the_build(hyperv_build: Build) -> None:
    text = (hyperv_build.out / NAMES.readme).read_text()
    assert "Debian GNU/Linux 12 (bookworm)" in text
    assert "hook.after.say-hello" in text and "echo updating" in text
    assert "genie gmi import GMI-Debian-12.zip" in text
    assert sha256_file(hyperv_build.disk)[0] in text
    assert FACTS["kernel.release"] in text and "hv-kvp-daemon" in text  # from the sidecar
    assert "gmi-metadata.yml" in text


def test_sha256sums_verify_with_coreutils(hyperv_build: Build) -> None:
    proc = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=hyperv_build.out, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": OK") == 7


def test_event_log_reverifies_offline(hyperv_build: Build) -> None:
    head = parse_sidecar((hyperv_build.out / "gmi-metadata.yml").read_text()).event_log
    rows = []
    with (hyperv_build.out / NAMES.events).open() as f:
        for line in f:
            rec = json.loads(line)
            assert set(rec) == {"build_id", "seq", "at", "type", "payload", "prev_hash", "hash"}
            rows.append(rec)
    assert rows[0]["type"] == "BuildRequested" and rows[-1]["seq"] == head.seq
    chain = list(eventlog.parse_lines((hyperv_build.out / NAMES.events).read_text().splitlines()))
    report = verify_chain(hyperv_build.build_id, iter([r for _, r in chain]), (head.seq, head.head_hash))
    assert report.ok and report.head_hash == head.head_hash
    types = {r["type"] for r in rows}
    assert {"StageEntered", "StepStarted", "StepFinished", "FactRecorded", "ArtifactRecorded"} <= types


def test_provenance_statement(hyperv_build: Build) -> None:
    doc = json.loads((hyperv_build.out / NAMES.provenance).read_text())
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in doc["subject"]}
    assert subjects["GMI-Debian-12.zip"] == sha256_file(hyperv_build.out / NAMES.zip)[0]
    assert subjects["GMI-Debian-12.tar.gz"] == sha256_file(hyperv_build.out / NAMES.tar)[0]
    assert subjects[NAMES.disk_entry] == sha256_file(hyperv_build.disk)[0]
    pred = doc["predicate"]
    assert pred["buildDefinition"]["externalParameters"]["spec"]["os"]["name"] == "Debian"
    assert pred["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"] == FACTS["source.sha256"]
    assert pred["runDetails"]["metadata"]["invocationId"] == hyperv_build.build_id
    byproduct = pred["runDetails"]["byproducts"][0]
    assert byproduct["digest"]["sha256"] == sha256_file(hyperv_build.out / NAMES.events)[0]
    head = parse_sidecar((hyperv_build.out / "gmi-metadata.yml").read_text()).event_log
    assert byproduct["annotations"] == {"head_seq": head.seq, "head_hash": head.head_hash}
    assert pred["buildDefinition"]["internalParameters"]["package_variant"] == "hyperv-export"


def test_packages_pass_validation(hyperv_build: Build) -> None:
    for name in (NAMES.zip, NAMES.tar):
        report = validate(hyperv_build.out / name)
        assert report.ok, report.to_text()
        statuses = {c.name: c.status for c in report.checks}
        assert statuses["sha256sums"] == "pass" and statuses["provenance"] == "pass"
        assert statuses["event_log"] == "pass" and statuses["manifest.checksum"] == "pass"


def test_unpacked_folder_passes_validation(hyperv_build: Build, tmp_path: Path) -> None:
    folder = tmp_path / NAMES.base
    with zipfile.ZipFile(hyperv_build.out / NAMES.zip) as zf:
        zf.extractall(folder)
    report = validate(folder)
    assert report.ok, report.to_text()


def test_disk_only_variant_does_not_look_importable(disk_only_build: Build) -> None:
    out = disk_only_build.out
    files = sorted(p.name for p in out.iterdir())
    assert "GMI-Debian-12.zip" not in files and DISK_NAMES.zip in files  # vmgenie's pattern refuses it
    names = _names(out / DISK_NAMES.zip)
    assert names[:4] == [
        "disk-only-GMI-Debian-12.yml",  # not GMI-Debian-12.yml: a renamed copy is refused too
        "disk-only-GMI-Debian-12.md",
        "gmi-metadata.yml",
        "disk-only-GMI-Debian-12.events.jsonl",
    ]
    assert not any(n.startswith(("Virtual Machines", "Snapshots")) for n in names)
    assert names[-1] == DISK_NAMES.disk_entry
    m = parse_manifest((out / DISK_NAMES.manifest).read_text())
    assert m.vm_name == "GMI Debian 12"  # the name the finished GMI's VM will have
    assert parse_sidecar((out / "gmi-metadata.yml").read_text()).package.variant == "disk-only"
    readme = (out / DISK_NAMES.readme).read_text()
    assert "A disk-only GMI: not importable by vmgenie" in readme
    assert "GMI-Debian-12.zip" in readme and "New-VM -Name 'GMI Debian 12'" in readme
    report = validate(out / DISK_NAMES.zip)
    assert report.ok and not report.importable, report.to_text()
    assert "disk-only" in next(c.evidence for c in report.checks if c.name == "layout.vm_config")
    assert "NOT importable by vmgenie" in report.to_text()


def test_package_refuses_names_windows_would_change(tmp_path: Path, vhdx_master: Path) -> None:
    from orchestrator.gmi.package import Entry, write_zip  # noqa: PLC0415

    for bad, why in [
        ("notes:v1.txt", "characters Windows does not allow"),
        ("CON.yml", "reserved device name CON"),
        ("readme. ", "trailing dot or space"),
        ("a\\b.txt", "backslash"),
    ]:
        with pytest.raises(PackageError, match=why):
            write_zip(tmp_path / "x.zip", [Entry(bad, vhdx_master)], timestamp="2025-01-01T00:00:00Z")
    with pytest.raises(PackageError, match="the same name to Windows"):
        write_zip(
            tmp_path / "x.zip",
            [Entry("Readme.md", vhdx_master), Entry("README.md", vhdx_master)],
            timestamp="2025-01-01T00:00:00Z",
        )
    assert not (tmp_path / "x.zip").exists() and not list(tmp_path.glob(".*.part"))


def test_changed_disk_leaves_no_package(tmp_path: Path, vhdx_master: Path) -> None:
    b = local_build(tmp_path, vhdx_master, hyperv=False)
    assert b.run_op("gmi.document").ok
    with b.disk.open("r+b") as f:  # the disk changes between document and package
        f.seek(100)
        f.write(b"CHANGED")
    res = b.run_op("gmi.package")
    assert not res.ok and "changed after the manifest was written" in res.error
    left = sorted(p.name for p in b.out.iterdir())
    assert DISK_NAMES.zip not in left and "SHA256SUMS" not in left and DISK_NAMES.provenance not in left
    assert not any(n.endswith(".part") for n in left)


def test_package_without_document_fails_clearly(tmp_path: Path, vhdx_master: Path) -> None:
    b = local_build(tmp_path, vhdx_master, hyperv=False)
    res = b.run_op("gmi.package")
    assert not res.ok and "the document stage writes it first" in res.error


def test_export_with_two_vmcx_is_refused(tmp_path: Path, vhdx_master: Path) -> None:
    from tests.support.gmi_fixtures import make_export  # noqa: PLC0415

    export = make_export(tmp_path / "export" / NAMES.vm_name, vhdx_master, vmcx=2)
    with pytest.raises(PackageError, match="exactly one .vmcx, directly inside it; found 2"):
        plan_entries(NAMES, vhdx_master, export, [])
    extra = export / "Virtual Machines" / "5E1D8A1C-0B4F-4C39-9D5A-000000000001.vmcx"
    nested = export / "Virtual Machines" / "old"
    nested.mkdir()
    extra.rename(nested / extra.name)  # one directly inside, one nested: still refused
    with pytest.raises(PackageError, match="and nested: Virtual Machines/old/"):
        plan_entries(NAMES, vhdx_master, export, [])
    (nested / extra.name).unlink()
    (export / "Snapshots" / "x.avhdx").write_bytes(b"diff")
    with pytest.raises(PackageError, match="differencing disks"):
        plan_entries(NAMES, vhdx_master, export, [])


def test_export_folder_must_be_named_after_the_vm(tmp_path: Path, vhdx_master: Path) -> None:
    from tests.support.gmi_fixtures import make_export  # noqa: PLC0415

    export = make_export(tmp_path / "export" / "debian-build", vhdx_master)
    with pytest.raises(PackageError, match="not 'GMI Debian 12'") as exc:
        plan_entries(NAMES, vhdx_master, export, [])
    assert "name the build VM exactly" in exc.value.hint
    with pytest.raises(PackageError, match="disk-only package but an export folder was given"):
        plan_entries(DISK_NAMES, vhdx_master, export, [])


def test_a_finishing_build_names_its_parent(tmp_path: Path, vhdx_master: Path) -> None:
    """A build whose source was a disk-only package records parent.* facts; its sidecar
    and its statement name the parent's file, digest and event-log head."""
    from events.model import FactRecorded  # noqa: PLC0415
    from orchestrator.recorder import BuildRecorder  # noqa: PLC0415

    b = local_build(tmp_path, vhdx_master, hyperv=True)
    parent = {
        "parent.package": "disk-only-GMI-Debian-12.zip",
        "parent.sha256": "c" * 64,
        "parent.event_log_head_hash": "d" * 64,
    }
    store = b.store()
    try:
        BuildRecorder(store, b.build_id).record(
            *(FactRecorded(key=k, value=v, source="provision/source") for k, v in parent.items())
        )
    finally:
        store.close()
    assert b.run_op("gmi.document").ok
    assert b.run_op("gmi.package").ok
    x = parse_sidecar((b.out / "gmi-metadata.yml").read_text())
    assert x.parent is not None and x.parent.package == "disk-only-GMI-Debian-12.zip"
    assert (x.parent.sha256, x.parent.event_log_head_hash) == ("c" * 64, "d" * 64)
    deps = json.loads((b.out / NAMES.provenance).read_text())["predicate"]["buildDefinition"][
        "resolvedDependencies"
    ]
    dep = next(d for d in deps if d["name"] == "parent-package")
    assert dep["uri"] == "disk-only-GMI-Debian-12.zip" and dep["digest"] == {"sha256": "c" * 64}
    assert dep["annotations"] == {"event_log_head_hash": "d" * 64}
    assert "Finished from" in (b.out / NAMES.readme).read_text()
    report = validate(b.out / NAMES.zip)
    assert report.ok and report.importable, report.to_text()

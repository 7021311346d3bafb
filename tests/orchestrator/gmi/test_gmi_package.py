"""Packages built from a real local build: layout exactly as vmgenie imports it,
checksums, the exported event log, provenance, atomic writes."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from events.store import verify_chain
from orchestrator.gmi import eventlog
from orchestrator.gmi.hashing import sha256_file
from orchestrator.gmi.manifest import VMGENIE_KEYS, parse_manifest
from orchestrator.gmi.package import PackageError, plan_entries
from orchestrator.gmi.validate import validate
from tests.support.gmi_fixtures import FACTS, NAMES, Build, local_build


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


def test_manifest_has_every_vmgenie_key_and_the_facts(hyperv_build: Build) -> None:
    text = (hyperv_build.out / NAMES.manifest).read_text()
    raw = yaml.safe_load(text)
    for key in VMGENIE_KEYS:
        assert key in raw, key
    assert isinstance(raw["version"], str) and raw["version"] == "12"  # quoted: vmgenie reads a string
    assert raw["gmi_version"] == "1.0" and raw["hyperv_generation"] == 2
    m = parse_manifest(text)
    assert m.vm_name == "GMI Debian 12"
    assert m.checksum_sha256 == sha256_file(hyperv_build.disk)[0]
    assert m.kernel == FACTS["kernel.release"]
    assert m.hyperv_daemons == ["hv-kvp-daemon", "hv-vss-daemon", "hv-fcopy-daemon"]
    assert m.package_count == 312 and m.default_users == ["genie"]
    assert m.package_variant == "hyperv-export" and m.build_id == hyperv_build.build_id
    assert m.maintainer == "Test Maintainer"
    assert m.created.endswith("Z") and len(m.created) == 20


def test_readme_summarizes_the_build(hyperv_build: Build) -> None:
    text = (hyperv_build.out / NAMES.readme).read_text()
    assert "Debian GNU/Linux 12 (bookworm)" in text
    assert "hook.after.say-hello" in text and "echo updating" in text
    assert "genie gmi import GMI-Debian-12.zip" in text
    assert sha256_file(hyperv_build.disk)[0] in text
    meta = yaml.safe_load((hyperv_build.out / "gmi-metadata.yml").read_text())
    assert meta["kernel"] == FACTS["kernel.release"] and meta["integration_services"]["source"] == "package"


def test_sha256sums_verify_with_coreutils(hyperv_build: Build) -> None:
    proc = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=hyperv_build.out, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": OK") == 7


def test_event_log_reverifies_offline(hyperv_build: Build) -> None:
    m = parse_manifest((hyperv_build.out / NAMES.manifest).read_text())
    rows = []
    with (hyperv_build.out / NAMES.events).open() as f:
        for line in f:
            rec = json.loads(line)
            assert set(rec) == {"build_id", "seq", "at", "type", "payload", "prev_hash", "hash"}
            rows.append(rec)
    assert rows[0]["type"] == "BuildRequested" and rows[-1]["seq"] == m.event_log_seq
    chain = list(eventlog.parse_lines((hyperv_build.out / NAMES.events).read_text().splitlines()))
    report = verify_chain(
        hyperv_build.build_id, iter([r for _, r in chain]), (m.event_log_seq, m.event_log_head_hash)
    )
    assert report.ok and report.head_hash == m.event_log_head_hash
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


def test_disk_only_variant(disk_only_build: Build) -> None:
    out = disk_only_build.out
    names = _names(out / NAMES.zip)
    assert not any(n.startswith("Virtual Machines") for n in names)
    assert "Snapshots/" in names and NAMES.disk_entry in names
    m = parse_manifest((out / NAMES.manifest).read_text())
    assert m.package_variant == "disk-only"
    readme = (out / NAMES.readme).read_text()
    assert "Disk-only package" in readme and "New-VM" in readme and "-VHDPath" in readme
    report = validate(out / NAMES.zip)
    assert report.ok, report.to_text()
    assert "disk-only" in next(c.evidence for c in report.checks if c.name == "layout.vm_config")


def test_changed_disk_leaves_no_package(tmp_path: Path, vhdx_master: Path) -> None:
    b = local_build(tmp_path, vhdx_master, hyperv=False)
    assert b.run_op("gmi.document").ok
    with b.disk.open("r+b") as f:  # the disk changes between document and package
        f.seek(100)
        f.write(b"CHANGED")
    res = b.run_op("gmi.package")
    assert not res.ok and "changed after the manifest was written" in res.error
    left = sorted(p.name for p in b.out.iterdir())
    assert NAMES.zip not in left and "SHA256SUMS" not in left and NAMES.provenance not in left
    assert not any(n.endswith(".part") for n in left)


def test_package_without_document_fails_clearly(tmp_path: Path, vhdx_master: Path) -> None:
    b = local_build(tmp_path, vhdx_master, hyperv=False)
    res = b.run_op("gmi.package")
    assert not res.ok and "the document stage writes it first" in res.error


def test_export_with_two_vmcx_is_refused(tmp_path: Path, vhdx_master: Path) -> None:
    from tests.support.gmi_fixtures import make_export  # noqa: PLC0415

    export = make_export(tmp_path / "export", vhdx_master, vmcx=2)
    with pytest.raises(PackageError, match="exactly one .vmcx, found 2"):
        plan_entries(NAMES, vhdx_master, export, [])
    (export / "Virtual Machines" / "5E1D8A1C-0B4F-4C39-9D5A-000000000001.vmcx").unlink()
    (export / "Snapshots" / "x.avhdx").write_bytes(b"diff")
    with pytest.raises(PackageError, match="differencing disks"):
        plan_entries(NAMES, vhdx_master, export, [])

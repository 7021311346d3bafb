"""`gmi-fsm validate` rejects broken packages, each with a clear reason."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.main import main
from orchestrator.gmi.report import Report
from orchestrator.gmi.validate import validate
from tests.support.gmi_fixtures import NAMES, Build, rezip


def _fails(report: Report, name: str, *words: str) -> str:
    failed = {c.name: c.evidence for c in report.failures}
    assert name in failed, report.to_text()
    for w in words:
        assert w in failed[name], failed[name]
    return failed[name]


def _isolated(build: Build, tmp_path: Path) -> Path:
    """The zip alone (no SHA256SUMS or statement beside it), to test one thing."""
    dest = tmp_path / "alone"
    dest.mkdir()
    return Path(shutil.copy2(build.out / NAMES.zip, dest / NAMES.zip))


def test_wrong_name(hyperv_build: Build, tmp_path: Path) -> None:
    bad = tmp_path / "GMI_Debian12.zip"
    shutil.copy2(hyperv_build.out / NAMES.zip, bad)
    _fails(validate(bad), "name", "does not match", "vmgenie refuses it")


def test_two_vmcx(hyperv_build: Build, tmp_path: Path) -> None:
    bad = rezip(hyperv_build.out / NAMES.zip, tmp_path / NAMES.zip, add={"Virtual Machines/OTHER.vmcx": b"x"})
    _fails(validate(bad), "layout.vm_config", "exactly one .vmcx", "found 2")


def test_no_vmcx(hyperv_build: Build, tmp_path: Path) -> None:
    src = hyperv_build.out / NAMES.zip
    vmcx = next(n for n in zipfile.ZipFile(src).namelist() if n.endswith(".vmcx"))
    bad = rezip(src, tmp_path / NAMES.zip, replace={vmcx: None})
    _fails(validate(bad), "layout.vm_config", "found 0")


def test_checksum_mismatch(hyperv_build: Build, tmp_path: Path) -> None:
    src = _isolated(hyperv_build, tmp_path)

    def flip(name: str, data: bytes) -> bytes:
        return data[:5000] + bytes([data[5000] ^ 1]) + data[5001:] if name == NAMES.disk_entry else data

    bad = rezip(src, tmp_path / "bad" / NAMES.zip, edit=flip)
    _fails(validate(bad), "manifest.checksum", "Checksum mismatch", "tampered")


def test_truncated_zip(hyperv_build: Build, tmp_path: Path) -> None:
    data = (hyperv_build.out / NAMES.zip).read_bytes()
    bad = tmp_path / NAMES.zip
    bad.write_bytes(data[: len(data) // 2])
    report = validate(bad)
    _fails(report, "archive.readable", "truncated")
    assert not report.ok


def test_corrupt_member(hyperv_build: Build, tmp_path: Path) -> None:
    data = bytearray((hyperv_build.out / NAMES.zip).read_bytes())
    with zipfile.ZipFile(hyperv_build.out / NAMES.zip) as zf:
        info = zf.getinfo(NAMES.disk_entry)
    data[info.header_offset + 200 + 4096] ^= 0xFF  # inside the stored VHDX bytes
    bad = tmp_path / NAMES.zip
    bad.write_bytes(bytes(data))
    _fails(validate(bad), "archive.readable", "cannot be read to its end")


@pytest.mark.parametrize(
    "evil", ["../evil.sh", "/etc/cron.d/evil", "Snapshots/../../evil", "C:/Windows/evil"]
)
def test_unsafe_entries(hyperv_build: Build, tmp_path: Path, evil: str) -> None:
    src = hyperv_build.out / NAMES.zip
    bad = tmp_path / NAMES.zip
    shutil.copy2(src, bad)
    with zipfile.ZipFile(bad, "a") as zf:
        info = zipfile.ZipInfo("placeholder")
        info.filename = evil  # ZipInfo would normalise it; the attack is the raw name
        zf.writestr(info, b"#!/bin/sh\n")
    _fails(validate(bad), "archive.safe_paths", repr(evil))


def test_manifest_missing_keys(hyperv_build: Build, tmp_path: Path) -> None:
    src = _isolated(hyperv_build, tmp_path)
    data = yaml.safe_load((hyperv_build.out / NAMES.manifest).read_text())
    del data["checksum_sha256"], data["maintainer"]
    data["hyperv_generation"] = 1
    bad = rezip(src, tmp_path / "bad" / NAMES.zip, replace={NAMES.manifest: yaml.safe_dump(data).encode()})
    evidence = _fails(validate(bad), "manifest.schema", "checksum_sha256: required key is missing")
    assert "maintainer: required key is missing" in evidence and "hyperv_generation" in evidence


def test_vm_name_mismatch(hyperv_build: Build, tmp_path: Path) -> None:
    text = (
        (hyperv_build.out / NAMES.manifest).read_text().replace("vm_name: GMI Debian 12", "vm_name: debian")
    )
    bad = rezip(
        _isolated(hyperv_build, tmp_path),
        tmp_path / "bad" / NAMES.zip,
        replace={NAMES.manifest: text.encode()},
    )
    _fails(validate(bad), "manifest.identity", "vm_name 'debian'")


def test_tampered_event_log(hyperv_build: Build, tmp_path: Path) -> None:
    lines = (hyperv_build.out / NAMES.events).read_text().splitlines()
    rec = json.loads(lines[5])
    rec["payload"]["tampered"] = True
    lines[5] = json.dumps(rec)
    bad = rezip(
        _isolated(hyperv_build, tmp_path),
        tmp_path / "bad" / NAMES.zip,
        replace={NAMES.events: ("\n".join(lines) + "\n").encode()},
    )
    _fails(validate(bad), "event_log", "hash chain broken at seq 6", "edited")


def test_truncated_event_log(hyperv_build: Build, tmp_path: Path) -> None:
    lines = (hyperv_build.out / NAMES.events).read_text().splitlines()
    bad = rezip(
        _isolated(hyperv_build, tmp_path),
        tmp_path / "bad" / NAMES.zip,
        replace={NAMES.events: ("\n".join(lines[:-3]) + "\n").encode()},
    )
    _fails(validate(bad), "event_log", "removed from the end")


def test_sums_and_provenance_catch_a_swapped_zip(hyperv_build: Build, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(hyperv_build.out, out)
    rezip(hyperv_build.out / NAMES.zip, out / NAMES.zip, add={"extra.txt": b"x"})  # still valid inside
    report = validate(out / NAMES.zip)
    _fails(report, "sha256sums", "mismatch", NAMES.zip)
    _fails(report, "provenance", "differs from the subject")


def test_missing_provenance_beside_a_gmi_fsm_zip(hyperv_build: Build, tmp_path: Path) -> None:
    _fails(validate(_isolated(hyperv_build, tmp_path)), "provenance", "missing beside the package")


def test_cli_exit_codes_and_json(
    hyperv_build: Build, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ok:
        main(["validate", str(hyperv_build.out / NAMES.zip), "--json"])
    assert ok.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and all({"name", "status", "evidence", "ok"} <= set(c) for c in doc["checks"])
    bad = tmp_path / NAMES.zip
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(SystemExit) as no:
        main(["validate", str(bad)])
    assert no.value.code == 12
    assert "NOT valid" in capsys.readouterr().out


def test_inspect_unavailable_is_its_own_exit_code(
    hyperv_build: Build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no guestfish on PATH
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--inspect", str(hyperv_build.out / NAMES.zip)])
    assert exc.value.code == 13
    out = capsys.readouterr().out
    assert "libguestfs is not installed" in out and "NOT inspected" in out

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
from tests.support.gmi_fixtures import DISK_NAMES, NAMES, Build, rezip


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
        (hyperv_build.out / NAMES.manifest)
        .read_text()
        .replace('vm_name: "GMI Debian 12"', 'vm_name: "debian"')
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


def test_manifest_with_an_extra_key_is_refused_as_vmgenie_would(
    hyperv_build: Build, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (hyperv_build.out / NAMES.manifest).read_text() + 'kernel: "6.1.0-26-cloud-amd64"\n'
    bad = rezip(
        _isolated(hyperv_build, tmp_path),
        tmp_path / "bad" / NAMES.zip,
        replace={NAMES.manifest: text.encode()},
    )
    _fails(
        validate(bad),
        "manifest.vmgenie_binding",
        "vmgenie's import would throw",
        "Property 'kernel' not found on type 'VmGenie.Artifacts.GmiMetadata'.",
    )
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(bad)])
    assert exc.value.code == 12
    assert "Property 'kernel' not found" in capsys.readouterr().out


def test_a_non_int32_generation_is_refused(hyperv_build: Build, tmp_path: Path) -> None:
    text = (
        (hyperv_build.out / NAMES.manifest)
        .read_text()
        .replace("hyperv_generation: 2", "hyperv_generation: 2.0")
    )
    bad = rezip(
        _isolated(hyperv_build, tmp_path),
        tmp_path / "bad" / NAMES.zip,
        replace={NAMES.manifest: text.encode()},
    )
    _fails(
        validate(bad), "manifest.vmgenie_binding", "'2.0' is not an Int32", "Exception during deserialization"
    )


def test_disk_only_zip_is_valid_but_not_importable(
    disk_only_build: Build, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(disk_only_build.out / DISK_NAMES.zip)])
    assert exc.value.code == 15
    out = capsys.readouterr().out
    assert "a valid disk-only GMI, NOT importable by vmgenie" in out
    assert "vmgenie's import refuses the name before extracting anything" in out
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(disk_only_build.out / DISK_NAMES.zip), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["importable_by_vmgenie"] is False and doc["variant"] == "disk-only"


def test_disk_only_zip_offered_as_a_gmi(disk_only_build: Build, tmp_path: Path) -> None:
    """Renamed to GMI-Debian-12.zip, vmgenie still refuses it before touching a VM (its
    manifest is not GMI-Debian-12.yml): validate names the problem."""
    disguised = Path(shutil.copy2(disk_only_build.out / DISK_NAMES.zip, tmp_path / NAMES.zip))
    report = validate(disguised)
    _fails(
        report,
        "package.variant",
        "a disk-only GMI",
        "offered as GMI-Debian-12.zip",
        "Finish it on a Hyper-V host",
    )
    assert not report.importable


def test_a_gmi_without_vm_configuration_says_vmgenie_deletes_first(
    hyperv_build: Build, tmp_path: Path
) -> None:
    """The old disk-only layout under a GMI name: vmgenie overwrites the manifest and
    deletes the existing VM before it finds no .vmcx."""
    src = hyperv_build.out / NAMES.zip
    vm_files = [n for n in zipfile.ZipFile(src).namelist() if n.startswith("Virtual Machines")]
    bad = rezip(src, tmp_path / NAMES.zip, replace=dict.fromkeys(vm_files))
    _fails(validate(bad), "layout.vm_config", "found 0", "deletes an existing VM named 'GMI Debian 12'")


def test_a_nested_vmcx_is_not_found_by_vmgenie(hyperv_build: Build, tmp_path: Path) -> None:
    src = hyperv_build.out / NAMES.zip
    vmcx = next(n for n in zipfile.ZipFile(src).namelist() if n.endswith(".vmcx"))
    data = zipfile.ZipFile(src).read(vmcx)
    bad = rezip(src, tmp_path / NAMES.zip, replace={vmcx: None}, add={"Virtual Machines/sub/x.vmcx": data})
    _fails(validate(bad), "layout.vm_config", "found 0", "elsewhere (vmgenie does not look there)")


@pytest.mark.parametrize(
    ("add", "words"),
    [
        (
            {"gmi-metadata.YML": b"x"},
            ["'gmi-metadata.yml' and 'gmi-metadata.YML'", "case is not significant"],
        ),
        ({"notes|v1.txt": b"x"}, ["notes|v1.txt", "characters Windows does not allow"]),
        ({"Snapshots/aux.txt": b"x"}, ["reserved device name AUX"]),
        ({"Snapshots/trailing.": b"x"}, ["trailing dot or space"]),
        ({"Virtual Hard Disks": b"x"}, ["a file where the other needs a folder"]),
    ],
)
def test_names_dotnet_would_not_extract_as_themselves(
    hyperv_build: Build, tmp_path: Path, add: dict[str, bytes], words: list[str]
) -> None:
    bad = rezip(hyperv_build.out / NAMES.zip, tmp_path / NAMES.zip, add=add)
    _fails(validate(bad), "archive.windows_names", "ExtractToDirectory on NTFS", *words)


def test_an_exact_duplicate_member_is_flagged(hyperv_build: Build, tmp_path: Path) -> None:
    bad = tmp_path / NAMES.zip
    shutil.copy2(hyperv_build.out / NAMES.zip, bad)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(bad, "a") as zf:
        zf.writestr(NAMES.readme, b"# a second readme\n")
    _fails(validate(bad), "archive.windows_names", f"{NAMES.readme!r} and {NAMES.readme!r}: the same name")


def test_a_compression_method_dotnet_cannot_read(hyperv_build: Build, tmp_path: Path) -> None:
    bad = tmp_path / NAMES.zip
    shutil.copy2(hyperv_build.out / NAMES.zip, bad)
    with zipfile.ZipFile(bad, "a", compression=zipfile.ZIP_BZIP2) as zf:
        zf.writestr("extra.txt", b"bzip2 data")
    _fails(validate(bad), "archive.dotnet_readable", "'extra.txt': compression method 12")


def test_sidecar_ties_the_event_log(hyperv_build: Build, tmp_path: Path) -> None:
    """An event log cut short AND a sidecar edited to match it: the manifest digest in the
    sidecar no longer... still holds, but the provenance beside it names the real head."""
    out = tmp_path / "out"
    shutil.copytree(hyperv_build.out, out)
    lines = (hyperv_build.out / NAMES.events).read_text().splitlines()
    cut = lines[:-3]
    last = json.loads(cut[-1])
    side = yaml.safe_load((hyperv_build.out / "gmi-metadata.yml").read_text())
    side["event_log"].update(seq=last["seq"], head_hash=last["hash"])
    rezip(
        hyperv_build.out / NAMES.zip,
        out / NAMES.zip,
        replace={
            NAMES.events: ("\n".join(cut) + "\n").encode(),
            "gmi-metadata.yml": yaml.safe_dump(side).encode(),
        },
    )
    report = validate(out / NAMES.zip)
    _fails(report, "provenance", "event-log head is not gmi-metadata.yml's")
    assert next(c for c in report.checks if c.name == "event_log").ok  # the cut log agrees with its sidecar


def test_sidecar_must_describe_this_manifest(hyperv_build: Build, tmp_path: Path) -> None:
    text = (
        (hyperv_build.out / NAMES.manifest)
        .read_text()
        .replace('maintainer: "Test Maintainer"', 'maintainer: "X"')
    )
    bad = rezip(
        _isolated(hyperv_build, tmp_path),
        tmp_path / "bad" / NAMES.zip,
        replace={NAMES.manifest: text.encode()},
    )
    _fails(validate(bad), "sidecar", "is not the manifest it was written with")

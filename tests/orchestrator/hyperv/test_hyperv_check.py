"""`gmi-fsm hyperv check SPEC`: the acceptance check of a Hyper-V host, through the CLI,
against the SIMULATOR (which plays the read-only host-check script) and, for the
connection failures, against real local servers through the real PSRP executor."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.exit_codes import ExitCode
from tests.support.hyperv_sim import SimBuild, write_build


def _check(b: SimBuild, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    proc = b.cli("hyperv", "check", str(b.spec_path), "--json", *extra)
    text = proc.stdout.strip()
    return proc.returncode, (json.loads(text) if text.startswith("{") else {}), proc.stderr


def _items(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


def _sim_state(b: SimBuild, **changes: Any) -> None:
    with b.sim()._locked() as st:
        st.update(changes)


def test_a_ready_host_passes_and_nothing_is_written(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b")
    code, report, err = _check(b)
    assert code == 0, err
    assert report["ok"] is True
    items = _items(report)
    for name in ("winrm", "tls", "auth", "session", "rights.winrm", "rights.hyperv", "rights.mount-vhd"):
        assert items[name]["status"] == "ok", items[name]
    for name in ("hyperv.module", "switch", "secure-boot", "space.vm_path", "space.export_path"):
        assert items[name]["status"] == "ok", items[name]
    assert items["smb-share"]["status"] == "skipped"
    assert report["facts"]["member.S-1-5-32-578"] == "True"
    assert "SIMULATOR" in err  # said loudly
    # It writes nothing: no event database, nothing made on the host.
    assert not b.db.exists()
    state = b.sim().snapshot()
    assert state["vms"] == {} and state["dirs"] == {} and state["files"] == {}
    assert [c["script"] for c in state["calls"]] == ["host-check"]
    # The text form.
    proc = b.cli("hyperv", "check", str(b.spec_path))
    assert proc.returncode == 0
    assert "result: ready for a first build" in proc.stdout


def test_rights_by_sid(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b")
    _sim_state(b, groups=["S-1-5-32-580"])  # Remote Management Users only
    code, report, _ = _check(b)
    assert code == ExitCode.HOST_CHECK_FAILED
    items = _items(report)
    assert items["rights.winrm"]["status"] == "ok"
    assert items["rights.hyperv"]["status"] == "fail"
    assert "Add-LocalGroupMember -SID S-1-5-32-578 -Member 'SIM\\builder'" in items["rights.hyperv"]["fix"]
    assert items["rights.mount-vhd"]["status"] == "warn"
    _sim_state(b, groups=["S-1-5-32-578"])
    code, report, _ = _check(b)
    assert code == 0
    assert _items(report)["rights.winrm"]["status"] == "warn"  # works, but not by the book


@pytest.mark.parametrize(
    ("change", "spec", "item", "detail", "fix"),
    [
        ({"hyperv_module": False}, {}, "hyperv.module", "not installed", "Install-WindowsFeature"),
        ({"switches": ["External"]}, {}, "switch", "'Default Switch'", "New-VMSwitch"),
        ({"drives": {"D:\\": 20, "E:\\": 500}}, {}, "space.vm_path", "20 GiB free on D:\\", "another drive"),
        ({}, {"vm_path": "Z:\\GMI\\build"}, "space.vm_path", "is Z: a drive there?", "local drive"),
        (
            {"drives": {"D:\\": 50}},
            {"export_path": "D:\\GMI\\export"},
            "space.export_path",
            "needs 64 GiB there (host.disk_gib 32, twice",
            "another drive",
        ),
        ({}, {"smb_share": "GMI"}, "smb-share", "no SMB share named 'GMI'", "New-SmbShare -Name 'GMI'"),
        (
            {"secure_boot_templates": ["MicrosoftWindows"]},
            {},
            "secure-boot",
            "no Secure Boot template named MicrosoftUEFICertificateAuthority",
            "host.secure_boot_template",
        ),
        (
            {"secure_boot_templates": []},
            {"secure_boot_template": "Typo"},
            "secure-boot",
            "not a Secure Boot template",
            "one of them",
        ),
    ],
    ids=["module", "switch", "space", "no-drive", "same-drive", "smb", "template", "template-name"],
)
def test_each_failure_names_its_fix(
    tmp_path: Path, change: dict[str, Any], spec: dict[str, Any], item: str, detail: str, fix: str
) -> None:
    b = write_build(tmp_path / "b", **spec)
    _sim_state(b, **change)
    code, report, err = _check(b)
    assert code == ExitCode.HOST_CHECK_FAILED, err
    got = _items(report)[item]
    assert got["status"] == "fail"
    assert detail in got["detail"]
    assert fix in got["fix"]
    assert report["ok"] is False


def test_what_is_not_a_failure(tmp_path: Path) -> None:
    # (A share that is there, holds the paths and takes the login: test_hyperv_transfer.py,
    # against a real SMB server.)
    b = write_build(tmp_path / "b", export_path="E:\\new\\export")
    _sim_state(b, secure_boot_templates=[])
    code, report, err = _check(b)
    assert code == 0, err
    items = _items(report)
    assert items["smb-share"]["status"] == "skipped"
    assert items["secure-boot"]["status"] == "warn"  # the host could not list them
    assert "made by the build under E:\\" in items["space.export_path"]["detail"]
    off = write_build(tmp_path / "off", secure_boot=False)
    _sim_state(off, secure_boot_templates=[])
    assert _items(_check(off)[1])["secure-boot"]["status"] == "ok"


def test_a_refused_login_and_an_unreachable_host(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b")
    b.sim().set_fault("auth_refused")
    code, report, _ = _check(b)
    assert code == ExitCode.HOST_CHECK_FAILED
    items = _items(report)
    assert items["winrm"]["status"] == "ok"
    assert items["auth"]["status"] == "fail"
    assert "host.username" in items["auth"]["fix"]
    assert items["rights.hyperv"]["status"] == "skipped"
    b.sim().clear_faults()
    b.sim().set_fault("unreachable")
    code, report, _ = _check(b)
    assert code == ExitCode.HOST_CHECK_FAILED
    assert _items(report)["winrm"]["status"] == "fail"
    assert "5986" in _items(report)["winrm"]["fix"]


# -- the real executor, against real local servers ---------------------------------------


def _real_spec(tmp_path: Path, port: int, **host: Any) -> SimBuild:
    b = write_build(tmp_path / "real")
    spec = yaml.safe_load(b.spec_path.read_text())
    spec["host"].pop("simulator")
    spec["host"].update(
        host="127.0.0.1",
        port=port,
        transport="http",
        auth="ntlm",
        username="builder",
        password="env:HV_TEST_PASSWORD",
        **host,
    )
    b.spec_path.write_text(yaml.safe_dump(spec))
    return b


@pytest.fixture
def server_401() -> Iterator[int]:
    class Deny(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield int(srv.server_address[1])
    srv.shutdown()


def _cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HV_TEST_PASSWORD", "not-the-real-one")


def test_real_psrp_login_refused(tmp_path: Path, server_401: int, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _real_spec(tmp_path, server_401)
    _cli_env(monkeypatch)
    code, report, err = _check(b)
    assert code == ExitCode.HOST_CHECK_FAILED, err
    items = _items(report)
    assert items["winrm"]["status"] == "ok"
    assert items["tls"]["status"] == "warn"  # plain HTTP is said
    assert items["auth"]["status"] == "fail"
    assert "refused the login (ntlm)" in items["auth"]["detail"]
    assert "not-the-real-one" not in json.dumps(report) + err


def test_real_psrp_closed_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    b = _real_spec(tmp_path, port)
    _cli_env(monkeypatch)
    code, report, _ = _check(b)
    assert code == ExitCode.HOST_CHECK_FAILED
    assert _items(report)["winrm"]["status"] == "fail"


def test_bad_input_has_its_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _real_spec(tmp_path, 5985)
    monkeypatch.delenv("HV_TEST_PASSWORD", raising=False)
    proc = b.cli("hyperv", "check", str(b.spec_path))
    assert proc.returncode == ExitCode.SECRET_ERROR, proc.stderr
    assert "HV_TEST_PASSWORD" in proc.stderr
    proc = b.cli("hyperv", "check", str(tmp_path / "missing.yaml"))
    assert proc.returncode == ExitCode.SPEC_INVALID
    qemu = tmp_path / "qemu.yaml"
    qemu.write_text(
        "name: q\nos: {name: Debian, version: '12', family: apt}\nhost: {kind: qemu}\n"
        "source: {base_image: x.qcow2}\nguest: {user: gmi, ssh_private_key: 'file:k'}\n"
    )
    proc = b.cli("hyperv", "check", str(qemu))
    assert proc.returncode == ExitCode.USAGE
    assert "not hyperv" in proc.stderr
    assert not b.db.exists()

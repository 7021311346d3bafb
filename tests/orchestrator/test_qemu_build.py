"""A real GMI built end to end on the local QEMU host, from a real Debian 12 guest.

These boot real VMs under TCG (minutes). They prove: the whole pipeline; a kill -9 of
the orchestrator during a long guest command, then a resume that succeeds; and the
guest failure modes (wrong key, connection dropped mid-command, a changed host key,
a guest that never answers), each a clear error with the build left resumable.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.qemu.cache import cached_debian_base, lab_ssh_key
from orchestrator.qemu.vm import read_vm_record
from tests.support.cli import run_cli, start_cli

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def lab() -> dict[str, Any]:
    key, public = lab_ssh_key()
    image = cached_debian_base(user="gmi", authorized_key=public)
    return {"disk": str(image.disk), "key": str(key)}


def write_spec(folder: Path, lab: dict[str, Any], **overrides: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "debian-12",
        "os": {"name": "Debian", "version": "12", "family": "apt"},
        "host": {"kind": "qemu", "memory_mib": 1536, "cpus": 2, "boot_timeout_s": 300},
        "source": {"base_image": lab["disk"]},
        "guest": {"user": "gmi", "ssh_private_key": f"file:{lab['key']}"},
        "prepare": {"update": True},
        "manifest": {"maintainer": "gmi-fsm tests", "description": "test GMI"},
        "output": {"dir": str(folder / "out")},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def build_id_of(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("SELECT build_id FROM events ORDER BY position DESC LIMIT 1").fetchone()[0])
    finally:
        conn.close()


def wait_for_event(db: Path, where: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            conn = sqlite3.connect(db)
            try:
                if conn.execute(f"SELECT 1 FROM events WHERE {where}").fetchone():
                    return
            except sqlite3.OperationalError:
                pass
            finally:
                conn.close()
        time.sleep(0.5)
    raise AssertionError(f"no event matching {where} within {timeout} s")


def status(db: Path, build_id: str) -> dict[str, Any]:
    proc = run_cli("status", build_id, "--json", db=db)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.mark.timeout(3000)
def test_full_build_survives_kill_9_mid_command_and_validates(tmp_path: Path, lab: dict[str, Any]) -> None:
    db = tmp_path / "events.db"
    # The lab base already has the user; a cloud image's build creates it at first boot.
    # This hook makes the build see it as its own, so the seal removes it for real.
    as_created = {
        "name": "user-as-created",
        "stage": "install_os",
        "when": "before",
        "target": "guest",
        "sudo": True,
        "idempotent": True,
        "run": "mkdir -p /var/lib/gmi-fsm && touch /var/lib/gmi-fsm/build-user-created",
    }
    spec = write_spec(tmp_path, lab, hooks=[as_created])
    runner = start_cli("run", spec, db=db)
    # Kill -9 the orchestrator in the middle of the zero-fill, a long guest command.
    wait_for_event(db, "type='StepStarted' AND json_extract(payload,'$.step')='zero-fill'", 1500)
    time.sleep(3)
    runner.send_signal(signal.SIGKILL)
    runner.wait(30)
    build_id = build_id_of(db)
    st = status(db, build_id)
    assert st["status"] == "cleanup"
    assert st["in_doubt"] == ["cleanup/zero-fill"]
    # The VM died with its orchestrator (PR_SET_PDEATHSIG): nothing orphaned.
    record = read_vm_record(tmp_path / "out" / ".work" / build_id / "vm")
    assert record is not None
    deadline = time.monotonic() + 10
    while record.is_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not record.is_running(), f"the build VM (pid {record.pid}) outlived its killed orchestrator"

    resumed = run_cli("run", "--resume", build_id, "--json", db=db, timeout=1800)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["outcome"] == "succeeded"

    audit = json.loads(run_cli("audit", build_id, "--format", "json", db=db).stdout)
    zero = [c for c in audit["commands"] if c["step"] == "zero-fill" and c["kind"] == "step"]
    assert [c["outcome"] for c in zero] == ["error", "succeeded"], zero  # in doubt, then re-run (idempotent)
    # How the VHDX was made is in the log: the programs of each host operation.
    (compact,) = [c for c in audit["commands"] if c["step"] == "disk.compact" and c["outcome"] == "succeeded"]
    programs = [" ".join(s["argv"]) for s in compact["subcommands"]]
    assert any("qemu-img convert" in p and "-O vhdx" in p and "block_size=1048576" in p for p in programs), (
        programs
    )
    assert all(s["exit_code"] == 0 for s in compact["subcommands"]), compact["subcommands"]
    boots = [s for c in audit["commands"] if c["step"] == "vm.ensure-running" for s in c["subcommands"]]
    assert boots and all("qemu-system-x86_64" in s["argv"][0] for s in boots), boots
    facts = audit["facts"]
    assert facts["os.id"] == "debian"
    assert facts["os.version_id"] == "12"
    assert facts["cloud_init.version"]
    assert "hv-kvp-daemon" in facts["hyperv.daemons"]
    assert facts["hyperv.daemons.source"].startswith("package:")
    assert facts["guest.ssh_host_key_fingerprint"].startswith("SHA256:")
    assert facts["validate.boot.cloud_init"].startswith("pass")
    assert facts["validate.boot.machine_id"].startswith("pass")
    assert facts["validate.boot.ssh_host_keys"].startswith("pass")
    assert facts["validate.boot.login"].startswith("pass")
    # The sealed-image contract, checked in the booted copy and offline in the disk.
    assert facts["guest.user_created"] == "true" and facts["guest.user_removed_at_seal"] == "true"
    assert facts["validate.boot.sealed.build-access"].startswith("pass"), facts[
        "validate.boot.sealed.build-access"
    ]
    assert facts["validate.boot.sealed.journal"].startswith("pass"), facts["validate.boot.sealed.journal"]
    sealed = {k: v for k, v in facts.items() if k.startswith(("validate.boot.sealed.", "validate.inspect."))}
    assert len(sealed) > 20 and all(v.startswith("pass") for v in sealed.values()), sealed
    # The guest powered off cleanly, so compaction zeroed its root journal's stale log.
    assert int(facts["compact.journal_zeroed_bytes"]) > 0, facts.get("compact.journal_skipped")
    assert int(facts["fs.used_bytes_all"]) > int(facts["fs.used_bytes"])  # / and the ESP
    assert run_cli("verify", build_id, db=db).returncode == 0
    assert run_cli("replay", build_id, db=db).returncode == 0

    vhdx = tmp_path / "out" / "GMI-Debian-12" / "Virtual Hard Disks" / "GMI Debian 12.vhdx"
    check = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(vhdx)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", "-f", "vhdx", str(vhdx)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["actual-size"] < 1_200_000_000  # compacted: far below what a dirty disk takes
    # The QEMU host makes a disk-only GMI: named so vmgenie's import refuses it up front.
    assert not (tmp_path / "out" / "GMI-Debian-12.zip").exists()
    package = tmp_path / "out" / "disk-only-GMI-Debian-12.zip"
    with zipfile.ZipFile(package) as z:
        names = set(z.namelist())
        manifest = yaml.safe_load(z.read("disk-only-GMI-Debian-12.yml"))
    assert "Virtual Hard Disks/GMI Debian 12.vhdx" in names and "gmi-metadata.yml" in names
    assert not any(n.startswith("Virtual Machines") for n in names)
    assert list(manifest) == [
        "gmi_version",
        "os",
        "version",
        "created",
        "updated",
        "vm_name",
        "hyperv_generation",
        "maintainer",
        "maintainer_email",
        "source_url",
        "description",
        "checksum_sha256",
    ]  # exactly vmgenie's twelve keys
    valid = run_cli("validate", package, "--json", db=None, timeout=600)
    assert valid.returncode == 15, valid.stdout + valid.stderr  # valid, not importable by vmgenie
    report = json.loads(valid.stdout)
    assert report["ok"] is True and report["importable_by_vmgenie"] is False, report
    inspected = run_cli("validate", package, "--inspect", "--json", db=None, timeout=900)
    assert inspected.returncode == 15, inspected.stdout + inspected.stderr
    checks = json.loads(inspected.stdout)["checks"]
    names = {c["name"]: c for c in checks if c["name"].startswith("inspect.")}
    assert names["inspect.build_facts"]["status"] == "pass"  # the sidecar named the build user
    assert len(names) > 20 and all(c["status"] == "pass" for c in names.values()), names
    for vm_dir in (tmp_path / "out" / ".work" / build_id).glob("**/vm.json"):
        left = read_vm_record(vm_dir.parent)
        assert left is None or not left.is_running(), f"a VM was left running: {vm_dir}"


@pytest.mark.timeout(3000)
def test_guest_failures_are_clear_and_the_build_stays_resumable(tmp_path: Path, lab: dict[str, Any]) -> None:
    db = tmp_path / "events.db"
    wrong_key = tmp_path / "wrong_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True)
    hooks = [
        {  # drops its own SSH connection mid-command, once
            "name": "drop-connection",
            "stage": "install_os",
            "when": "after",
            "target": "guest",
            "sudo": True,
            "idempotent": True,
            "run": "if [ -f /var/tmp/gmi-dropped ]; then exit 0; fi; touch /var/tmp/gmi-dropped; sync; "
            "sleep 1; pkill -KILL -f 'sshd: gmi'; sleep 30",
        },
        {  # replaces the host keys (as a rebuilt VM would), then drops the connection
            "name": "rotate-host-keys",
            "stage": "update",
            "when": "before",
            "target": "guest",
            "sudo": True,
            "idempotent": True,
            "run": "if [ -f /var/tmp/gmi-rotated ]; then exit 0; fi; touch /var/tmp/gmi-rotated; "
            "rm -f /etc/ssh/ssh_host_*; ssh-keygen -A; sync; sleep 1; pkill -KILL -f 'sshd: gmi'; sleep 30",
        },
    ]
    good = write_spec(tmp_path, lab, hooks=hooks, prepare={"update": False})
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(good.read_text())
    data["guest"]["ssh_private_key"] = f"file:{wrong_key}"
    bad.write_text(yaml.safe_dump(data))

    # 1. The connection dropped mid-command: that step fails with "connection lost".
    first = run_cli("run", good, db=db, timeout=900)
    assert first.returncode == 4, first.stderr[-2000:]
    assert "connection lost" in first.stderr
    assert "drop-connection" in first.stderr
    build_id = build_id_of(db)
    assert status(db, build_id)["status"] == "failed"
    # The failed run powered the build VM down as a recorded closing step.
    events = json.loads(run_cli("history", build_id, "--json", db=db).stdout)
    failed_at = max(e["seq"] for e in events if e["type"] == "StageFailed")
    assert any(
        e["type"] == "StepStarted" and e["step"] == "vm.power-down" and e["seq"] > failed_at for e in events
    ), "the build VM was powered down without a record"

    # 2. A key the guest refuses (the spec changed to another key mid-build): a clear
    #    error, no retries; resumable with the right key.
    second = run_cli("run", "--resume", build_id, "--update-spec", bad, db=db, timeout=900)
    assert second.returncode == 4, second.stderr[-2000:]
    assert "refused the login as 'gmi'" in second.stderr
    assert status(db, build_id)["status"] == "failed"
    back = run_cli("run", "--resume", build_id, "--update-spec", good, "--json", db=db, timeout=900)
    assert back.returncode == 4, back.stderr[-2000:]

    # 3. With the right key again, the dropped hook re-runs (its marker says done), and
    #    the next one replaces the host keys, as a rebuilt VM would, and drops the
    #    connection.
    assert "rotate-host-keys" in json.loads(back.stdout)["message"]

    # 4. Resume: the guest now presents another host key; the login is refused,
    #    naming both fingerprints and how to proceed.
    fourth_run = run_cli("run", "--resume", build_id, db=db, timeout=900)
    assert fourth_run.returncode == 4, fourth_run.stderr[-2000:]
    assert "host key" in fourth_run.stderr
    assert "changed" in fourth_run.stderr
    assert fourth_run.stderr.count("SHA256:") >= 2
    assert "--trust-new-host-key" in fourth_run.stderr

    # 5. The operator trusts the new key; the build goes on. Stop it with SIGTERM
    #    mid-stage: it ends as interrupted (130), still resumable.
    fourth = start_cli("resume", build_id, "--trust-new-host-key", db=db)
    wait_for_event(db, "type='StageCompleted' AND json_extract(payload,'$.stage')='update'", 900)
    fourth.send_signal(signal.SIGTERM)
    assert fourth.wait(120) == 130
    st = status(db, build_id)
    assert st["status"] in ("cloud_init", "hyperv_integration")
    assert "update" in st["completed_stages"]
    history = run_cli("history", build_id, "--json", db=db).stdout
    assert "RunInterrupted" in history
    assert run_cli("verify", build_id, db=db).returncode == 0
    assert run_cli("abort", build_id, "--reason", "test over", db=db).returncode == 0


def test_a_guest_that_never_answers_fails_clearly(tmp_path: Path, lab: dict[str, Any]) -> None:
    blank = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "1G"], check=True)
    db = tmp_path / "events.db"
    spec = write_spec(tmp_path, {**lab, "disk": str(blank)}, host={"boot_timeout_s": 25})
    proc = run_cli("run", spec, db=db, timeout=600)
    assert proc.returncode == 4
    assert "127.0.0.1" in proc.stderr
    assert "console" in proc.stderr
    build_id = build_id_of(db)
    st = status(db, build_id)
    assert st["status"] == "failed"
    assert os.path.exists(blank)

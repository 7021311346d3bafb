"""The QEMU host's ISO source with the real Debian 12 installer (boots a VM: minutes).

The ISO is made from Debian's network installer package (`gmi-fsm lab
installer-iso`); the installer gets its answers from the preseed gmi-fsm appends to
its initrd, and downloads its remaining components (.udeb files) and the packages
from the mirror. What the test expects depends on what the mirror serves, checked
from this machine first: where it serves .udeb files, the install runs to its
power-off and the whole build succeeds; where it does not (this lab's registry
serves .deb files only), the installer stops at "Download installer components"
and the build must fail with that question quoted, in minutes rather than at the
install timeout, leaving no VM behind and the build resumable.
"""

from __future__ import annotations

import gzip
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.qemu.cache import lab_ssh_key
from orchestrator.qemu.lab_iso import NETBOOT_DIR, write_netboot_iso
from orchestrator.qemu.vm import read_vm_record
from tests.orchestrator.test_qemu_build import build_id_of, wait_for_event, write_spec
from tests.support.cli import run_cli, start_cli

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        not (NETBOOT_DIR / "initrd.gz").is_file(),
        reason="needs debian-installer-12-netboot-amd64 (scripts/setup.sh installs it)",
    ),
]

MIRROR = "http://deb.debian.org/debian"


def mirror_serves_udebs() -> bool:
    index = f"{MIRROR}/dists/bookworm/main/debian-installer/binary-amd64/Packages.gz"
    try:
        with urllib.request.urlopen(index, timeout=30) as r:
            packages = gzip.decompress(r.read()).decode()
        filename = next(line.split()[1] for line in packages.splitlines() if line.startswith("Filename: "))
        with urllib.request.urlopen(
            urllib.request.Request(f"{MIRROR}/{filename}", method="HEAD"), timeout=30
        ):
            return True
    except (urllib.error.URLError, OSError, StopIteration):
        return False


@pytest.mark.timeout(7200)
def test_iso_install_with_the_real_debian_installer(tmp_path: Path) -> None:
    key, _ = lab_ssh_key()
    iso = write_netboot_iso(tmp_path / "debian-12-netboot.iso")
    lab: dict[str, Any] = {"disk": "", "key": str(key)}
    spec = write_spec(
        tmp_path,
        lab,
        name="debian-12-iso",
        host={"disk_gib": 6, "install_timeout_s": 5400},
        source={"iso": str(iso), "mirror": MIRROR},
        guest={"user": "genie", "ssh_private_key": f"file:{key}"},
    )
    data = yaml.safe_load(spec.read_text())
    del data["source"]["base_image"]
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    db = tmp_path / "events.db"
    full_install = mirror_serves_udebs()
    # First a kill -9 of the orchestrator while the installer runs: the installer VM
    # dies with it, and the resumed run starts the install over from a blank disk.
    runner = start_cli("run", spec, db=db)
    wait_for_event(db, "type='StepStarted' AND json_extract(payload,'$.step')='install.unattended'", 120)
    build_id = build_id_of(db)
    vm_dir = tmp_path / "out" / ".work" / build_id / "vm"
    deadline = time.monotonic() + 60
    while read_vm_record(vm_dir) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    killed_vm = read_vm_record(vm_dir)
    assert killed_vm is not None
    assert killed_vm.is_running()
    time.sleep(5)  # the installer is booting
    runner.send_signal(signal.SIGKILL)
    runner.wait(30)
    deadline = time.monotonic() + 10
    while killed_vm.is_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not killed_vm.is_running(), "the installer VM outlived its killed orchestrator"

    result = run_cli("run", "--resume", build_id, "--json", db=db, timeout=7000)
    status = json.loads(run_cli("status", build_id, "--json", db=db).stdout)
    facts = json.loads(run_cli("audit", build_id, "--format", "json", db=db).stdout)["facts"]
    assert facts["source.format"] == "iso"
    assert facts["source.installer"] == "debian-installer (netboot, mini.iso)"
    assert facts["source.sha256"]
    history = run_cli("history", build_id, "--json", db=db).stdout
    assert "installer started: debian-installer (netboot, mini.iso)" in history
    audit = json.loads(run_cli("audit", build_id, "--format", "json", db=db).stdout)
    installs = [c for c in audit["commands"] if c["step"] == "install.unattended" and c["kind"] == "step"]
    assert installs[0]["outcome"] == "error"  # in doubt after the kill, then run again
    assert len(installs) == 2, installs
    assert run_cli("verify", build_id, db=db).returncode == 0
    work = tmp_path / "out" / ".work" / build_id
    if full_install:
        assert result.returncode == 0, result.stderr[-3000:]
        assert status["status"] == "succeeded"
        assert int(facts["install.duration_s"]) > 0
        assert facts["os.id"] == "debian"
        return
    # The lab's registry serves no .udeb: the installer must be caught at its question.
    assert result.returncode == 4, result.stderr[-3000:]
    assert status["status"] == "failed"
    assert "stopped at a question its preseed does not answer" in status["reason"]
    assert "Download installer components" in status["reason"]
    assert "source.mirror" in result.stderr  # the hint says what to change
    assert f"gmi-fsm run --resume {build_id}" in run_cli("status", build_id, db=db).stdout
    # Everything before the download was answered by the preseed (no locale,
    # keyboard, hostname or mirror question), and the VM is gone.
    console = (work / "vm" / "console.log").read_bytes()  # the second install's
    assert b"Checking the Debian archive mirror" in console
    assert console.count(b"Prompt: '?' for help") == 1
    record = read_vm_record(work / "vm")
    assert record is not None
    assert not record.is_running()

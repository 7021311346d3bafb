"""The Hyper-V path with its guest stages run for real: the host is the SIMULATOR (no
Windows here), the guest a real Debian VM under QEMU that the simulator's KVP reports
as the build VM's address. Every guest command of the apt family, the seal included,
runs on a real system over SSH.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.hyperv.simulator import HyperVSimulator
from orchestrator.qemu.cache import cached_debian_base, lab_ssh_key
from orchestrator.qemu.disk import create_work_copy
from orchestrator.qemu.seed_iso import SeedFiles, meta_data, write_seed_iso
from orchestrator.qemu.vm import DiskSpec, QemuVm, VmConfig

pytestmark = pytest.mark.vm

SEED = """#cloud-config
hostname: hv-guest
"""


def cli(db: Path, cwd: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMI_FSM_")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--db", str(db), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(2400)
def test_hyperv_simulated_host_with_a_real_guest(tmp_path: Path) -> None:
    key, public = lab_ssh_key()
    base = cached_debian_base(user="gmi", authorized_key=public)
    disk = create_work_copy(base.disk, tmp_path / "guest.qcow2", linked=True)
    seed = write_seed_iso(tmp_path / "seed.iso", SeedFiles(SEED, meta_data("hv-guest-1", "hv-guest")))
    vm = QemuVm(
        VmConfig(
            name="hv-guest",
            state_dir=tmp_path / "vm",
            disks=[DiskSpec(disk, "qcow2")],
            seed_iso=seed,
            memory_mib=1536,
        )
    )

    async def boot() -> None:
        await vm.start()
        await vm.wait_for_port(300)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(boot())
        spec: dict[str, Any] = {
            "name": "hv-real-guest",
            "os": {"name": "Debian", "version": "12", "family": "apt"},
            "host": {
                "kind": "hyperv",
                "host": "hv.example.test",
                "vm_path": "D:\\GMI\\build",
                "export_path": "D:\\GMI\\export",
                "install": "manual",
                "boot_timeout_s": 5,
                "install_timeout_s": 5,
                "shutdown_timeout_s": 30,
                "simulator": {
                    "state": "sim.json",
                    "kvp_delay_s": 0.05,
                    "guest_steps": True,
                    "guest_address": "127.0.0.1",
                },
            },
            "source": {"iso": "installer.iso"},
            "guest": {"user": "gmi", "ssh_private_key": f"file:{key}", "ssh_port": vm.ssh_port},
            # No zero-fill: it runs for real, killed mid-way and re-run, in test_qemu_build.py.
            "prepare": {"update": False, "free_space": "none"},
            "output": {"dir": "out"},
        }
        (tmp_path / "installer.iso").write_bytes(b"FAKE INSTALLER ISO\n" * 64)
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        db = tmp_path / "events.db"

        # install: manual stops the build with the operator's instruction...
        first = cli(db, tmp_path, "run", "spec.yaml")
        assert first.returncode == 4, first.stderr[-2000:]
        assert "console" in first.stderr
        assert "SIMULATOR" in first.stderr
        build_id = json.loads(cli(db, tmp_path, "list", "--json").stdout)[0]["build_id"]

        # ...and after "the operator installed it", the guest stages run on the real VM.
        HyperVSimulator(tmp_path / "sim.json").operator_installs("GMI Debian 12")
        second = cli(db, tmp_path, "run", "--resume", build_id, "--json")
        assert second.returncode == 0, second.stderr[-4000:]
        audit = json.loads(cli(db, tmp_path, "audit", build_id, "--format", "json").stdout)
        guest = [c for c in audit["commands"] if c["target"] == "guest" and c["kind"] == "step"]
        names = {c["step"] for c in guest}
        assert {
            "wait-first-boot",
            "install-daemons",
            "datasource-nocloud",
            "build-user-origin",
            "seal-and-power-off",
        } <= names
        assert all(c["outcome"] == "succeeded" for c in guest), [
            c for c in guest if c["outcome"] != "succeeded"
        ]
        facts = audit["facts"]
        assert facts["os.id"] == "debian"
        assert "hv-kvp-daemon" in facts["hyperv.daemons"]
        assert facts["guest.ssh_host_key_fingerprint"].startswith("SHA256:")
        # The seal's last act powered the real guest off.
        loop.run_until_complete(vm.wait_exit(60))
        assert not vm.is_running
        assert (tmp_path / "out" / "GMI-Debian-12.zip").is_file()
    finally:
        loop.run_until_complete(vm.close())
        loop.close()

"""Real qemu processes: a tiny VM for lifecycle checks, and a Debian guest over SSH.

Under TCG (see LAB.md) the Debian boot takes ~45-55 s to SSH; the tiny VM needs no OS.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.qemu.base_image import BaseImage
from orchestrator.qemu.cache import cached_debian_base, lab_ssh_key
from orchestrator.qemu.disk import create_work_copy
from orchestrator.qemu.seed_iso import SeedFiles, meta_data, write_seed_iso
from orchestrator.qemu.vm import (
    DiskSpec,
    QemuVm,
    VmConfig,
    VmError,
    kill_stale_vm,
    read_vm_record,
)

pytestmark = [pytest.mark.vm]

REPO = Path(__file__).resolve().parents[3]


def _blank_disk(path: Path) -> Path:
    with path.open("wb") as fh:
        fh.truncate(1024 * 1024)
    return path


def _tiny_config(state_dir: Path, disk: Path) -> VmConfig:
    # No OS: OVMF finds nothing to boot and idles, which is all these tests need.
    return VmConfig(name="tiny", state_dir=state_dir, disks=[DiskSpec(disk, "raw")],
                    memory_mib=256, cpus=1)


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead; only its reaper is late


@pytest.mark.timeout(120)
def test_tiny_vm_state_file_qmp_and_quit(tmp_path: Path) -> None:
    # A long state dir forces the QMP socket into a short temp dir (108-byte limit).
    state_dir = tmp_path / ("long-" * 15) / "state"
    disk = _blank_disk(tmp_path / "blank.raw")

    async def scenario() -> None:
        vm = QemuVm(_tiny_config(state_dir, disk))
        await vm.start()
        try:
            assert vm.is_running
            assert len(str(vm.qmp_socket)) <= 100
            record = read_vm_record(state_dir)
            assert record is not None
            assert record.pid == vm.pid
            assert record.ssh_port == vm.ssh_port
            assert record.is_running()
            status = await vm.qmp("query-status")
            assert isinstance(status, dict)
            assert status["status"] == "running"
            # A second VM on the same state dir is refused while the first runs.
            with pytest.raises(VmError, match="still running"):
                await QemuVm(_tiny_config(state_dir, disk)).start()
            await vm.quit()
            assert vm.returncode == 0
            assert not record.is_running()
            assert not kill_stale_vm(state_dir)
        finally:
            await vm.close()
        assert not vm.qmp_socket.exists()

    asyncio.run(scenario())


@pytest.mark.timeout(120)
def test_kill_stale_vm_from_another_process(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    disk = _blank_disk(tmp_path / "blank.raw")

    async def scenario() -> None:
        vm = QemuVm(_tiny_config(state_dir, disk))
        await vm.start()
        try:
            # A later process only has the state dir: it can see and kill the VM.
            assert kill_stale_vm(state_dir)
            assert await vm.wait_exit(5) == -signal.SIGKILL
        finally:
            await vm.close()

    asyncio.run(scenario())


CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from orchestrator.qemu.vm import DiskSpec, QemuVm, VmConfig

    async def main() -> None:
        state_dir, disk = Path(sys.argv[1]), Path(sys.argv[2])
        vm = QemuVm(VmConfig(name="orphan-test", state_dir=state_dir,
                             disks=[DiskSpec(disk, "raw")], memory_mib=256, cpus=1))
        await vm.start()
        print(json.dumps({"pid": vm.pid}), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@pytest.mark.timeout(120)
def test_vm_dies_when_parent_is_killed_9(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    disk = _blank_disk(tmp_path / "blank.raw")
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state_dir), str(disk)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, f"child exited early with {parent.wait()}"
        qemu_pid = json.loads(line)["pid"]
        assert _pid_alive(qemu_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while _pid_alive(qemu_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(qemu_pid), "qemu outlived its parent: PDEATHSIG not set"
        record = read_vm_record(state_dir)
        assert record is not None
        assert record.pid == qemu_pid
        assert not record.is_running()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        kill_stale_vm(state_dir)


# ----- the real guest ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def lab_base() -> BaseImage:
    """The Debian base, built once per machine (~40-50 s) in ~/.cache/gmi-fsm/lab."""
    _key, pub = lab_ssh_key()
    return cached_debian_base(user="gmi", authorized_key=pub)


def _ssh(key: Path, port: int, user: str, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", "-i", str(key), "-p", str(port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR",
            f"{user}@127.0.0.1", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.timeout(600)
def test_debian_uefi_boot_with_seed_ssh_and_powerdown(lab_base: BaseImage, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = key.with_suffix(".pub").read_text().strip()
    user_data = "#cloud-config\n" + json.dumps({
        "users": [{"name": "tester", "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                   "ssh_authorized_keys": [pub]}],
    })
    seed = write_seed_iso(tmp_path / "seed.iso",
                          SeedFiles(user_data, meta_data("iid-lab-test", "gmi-lab-test")))
    work = create_work_copy(lab_base.disk, tmp_path / "work.qcow2", linked=True)

    async def scenario() -> None:
        vm = QemuVm(VmConfig(name="debian-lab", state_dir=tmp_path / "state",
                             disks=[DiskSpec(work, "qcow2")], seed_iso=seed,
                             boot="uefi", memory_mib=1024, cpus=2))
        started = time.monotonic()
        await vm.start()
        try:
            banner = await vm.wait_for_port(300)
            assert banner.startswith("SSH-2.0-OpenSSH")
            booted = time.monotonic() - started
            result = _ssh(key, vm.ssh_port, "tester", "cloud-init status --wait; hostname", 240)
            assert result.returncode == 0, result.stderr + vm.console_tail()
            assert "status: done" in result.stdout
            assert result.stdout.split()[-1] == "gmi-lab-test"
            # It really booted through the UEFI loader on the GPT disk.
            console = vm.console_log.read_text(errors="replace")
            assert "Welcome to GRUB" in console
            graceful = await vm.powerdown(60)
            assert graceful, "guest did not power off on ACPI powerdown"
            assert vm.returncode == 0
            print(f"SSH after {booted:.0f} s, whole test {time.monotonic() - started:.0f} s")
        finally:
            await vm.close()

    asyncio.run(scenario())

"""The QEMU host's ``install.unattended`` step: an OS installed from an ISO onto a
blank disk, answered by a preseed, ending when the installer powers the VM off.

The step starts over every time it runs (blank disk, fresh NVRAM): an install cut
short by a crash leaves a disk that is neither blank nor installed, and redoing it
is the only safe resume. The VM runs with ``-no-reboot``, so the installer's final
power-off (or a reboot it should not do) ends qemu.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.qemu._run import QemuToolError, run_tool
from orchestrator.qemu.cpio import append_to_initrd
from orchestrator.qemu.installer import (
    INSTALL_CMDLINE,
    InstallerError,
    console_lines,
    debian_seed_files,
    extract_boot_files,
    find_layout,
    has_gpt,
    installer_question,
    last_console_line,
)
from orchestrator.qemu.vm import DirectKernelBoot, DiskSpec, QemuVm, VmConfig, kill_stale_vm
from orchestrator.targets.base import CommandResult, OutputSink, TargetError
from orchestrator.targets.guest_ssh import build_user_public_key

if TYPE_CHECKING:
    from orchestrator.hosts.qemu import QemuHost

DEFAULT_DISK_GIB = 8
PROGRESS_EVERY_S = 30.0
# A question must stay on screen this long before the step gives up on it: the
# installer shows some screens briefly while it moves on by itself.
QUESTION_GRACE_S = 20.0


async def install_from_iso(host: QemuHost, iso: Path, sink: OutputSink) -> CommandResult:
    spec, source, guest = host.spec, host.spec.source, host.spec.guest
    assert source is not None
    assert guest is not None
    state_dir = host.work_dir / "vm"
    kill_stale_vm(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)
    install_dir = host.work_dir / "install"
    shutil.rmtree(install_dir, ignore_errors=True)
    try:
        layout = await asyncio.to_thread(find_layout, iso)
        kernel, initrd = await asyncio.to_thread(extract_boot_files, iso, layout, install_dir)
        files = debian_seed_files(
            user=guest.user,
            public_key=await asyncio.to_thread(build_user_public_key, spec, host.base_dir),
            locale=spec.prepare.locale,
            mirror=source.mirror,
            proxy=source.mirror_proxy,
        )
    except InstallerError as exc:
        raise TargetError(str(exc), hint=exc.hint) from None
    seeded = install_dir / "initrd-preseeded.gz"
    seeded.write_bytes(append_to_initrd(initrd, files))
    size_gib = host.host_spec.disk_gib or DEFAULT_DISK_GIB
    host.work_disk.unlink(missing_ok=True)
    await asyncio.to_thread(
        run_tool,
        ["qemu-img", "create", "-q", "-f", "qcow2", str(host.work_disk), f"{size_gib}G"],
        what="creating the blank disk",
        where=host.work_disk,
    )
    vm = QemuVm(
        VmConfig(
            name=f"gmi-install-{host.build_id}",
            state_dir=state_dir,
            disks=[DiskSpec(host.work_disk, "qcow2")],
            cdrom=iso,
            boot=DirectKernelBoot(kernel, seeded, INSTALL_CMDLINE, uefi=True),
            memory_mib=host.host_spec.memory_mib,
            cpus=host.host_spec.cpus,
            accel=host.accel_choice(),
            no_reboot=True,
        )
    )
    started = time.monotonic()
    await vm.start(replace_running=True)
    sink(
        "stdout",
        f"installer started: {layout.name} from {iso.name} (qemu pid {vm.pid}, {vm.accel.reason}); "
        f"console log {vm.console_log}\n".encode(),
    )
    try:
        code = await _watch(vm, host.host_spec.install_timeout_s, sink)
    finally:
        await vm.close()
    elapsed = time.monotonic() - started
    if not await asyncio.to_thread(_disk_has_gpt, host.work_disk, install_dir):
        raise TargetError(
            f"the installer ended (qemu exit {code}) after {elapsed:.0f} s without a partition "
            f"table on the disk; last console lines:\n{_tail(vm.console_log)}",
            hint=f"read the whole console log: {vm.console_log}",
        )
    sink("stdout", f"installed in {elapsed:.0f} s; the installer powered the VM off\n".encode())
    return CommandResult(
        0,
        facts={
            "install.installer": layout.name,
            "install.duration_s": f"{elapsed:.0f}",
            "install.disk_gib": str(size_gib),
        },
    )


async def _watch(vm: QemuVm, timeout_s: float, sink: OutputSink) -> int:
    """Wait for the installer to power off; fail early if it waits at a question."""
    deadline = time.monotonic() + timeout_s
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    question_since: float | None = None
    while True:
        code = await vm.wait_exit(2.0)
        if code is not None:
            return code
        now = time.monotonic()
        console = _read(vm.console_log)
        question = installer_question(console)
        if question is None:
            question_since = None
        elif question_since is None:
            question_since = now
        elif now - question_since >= QUESTION_GRACE_S:
            raise TargetError(
                f"the Debian installer stopped at a question its preseed does not answer:\n{question}",
                hint="a download failing here means the VM cannot reach source.mirror "
                "(set source.mirror / source.mirror_proxy); the console log is "
                f"{vm.console_log}",
            )
        if now >= deadline:
            raise TargetError(
                f"the installer did not finish within {timeout_s:.0f} s; last console lines:\n"
                f"{_tail(vm.console_log)}",
                hint="raise host.install_timeout_s (TCG is slow), or read the console log",
            )
        if now >= next_progress:
            next_progress = now + PROGRESS_EVERY_S
            line = last_console_line(console)
            elapsed = timeout_s - (deadline - now)
            sink("stdout", f"installing ({elapsed:.0f} s): {line}\n".encode())


def _disk_has_gpt(disk: Path, scratch: Path) -> bool:
    head = scratch / "disk-head.raw"
    try:
        run_tool(
            ["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=512", "count=34", f"if={disk}", f"of={head}"],
            what="reading the installed disk's partition table",
            where=disk,
        )
    except QemuToolError:
        return False
    return has_gpt(head.read_bytes())


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 32768))
            return f.read()
    except OSError:
        return b""


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(console_lines(_read(path))[-lines:]) or "(no console output)"

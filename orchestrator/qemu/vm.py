"""Run one qemu-system-x86_64 guest as a child process that can never be orphaned.

The child gets ``PR_SET_PDEATHSIG(SIGKILL)``: if the orchestrator dies, even by
``kill -9``, the kernel kills qemu too, so no build leaves a VM burning CPU and
holding its disk. A state file (``vm.json``: pid + the process start time, which
defeats pid reuse) lets a later process tell whether that VM still runs and kill it.

Caveat: PDEATHSIG fires when the *thread* that forked the child exits. Start VMs from
a thread that lives as long as the VM (the main thread, or the event loop's thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from orchestrator import procs
from orchestrator.qemu._run import require_tool
from orchestrator.qemu.accel import AccelChoice, choose_accel
from orchestrator.qemu.firmware import OvmfFirmware, find_ovmf
from orchestrator.qemu.qmp import QmpClient, QmpError

__all__ = [
    "DirectKernelBoot",
    "DiskSpec",
    "QemuVm",
    "VmConfig",
    "VmError",
    "VmRecord",
    "kill_stale_vm",
    "read_vm_record",
]

# Unix socket paths are limited to 108 bytes (sun_path); pytest tmp dirs exceed that.
_MAX_SOCKET_PATH = 100
_STATE_FILE = "vm.json"


class VmError(RuntimeError):
    """The VM could not start, exited unexpectedly, or did not answer in time."""


@dataclass(frozen=True, slots=True)
class DiskSpec:
    """A disk attached as virtio-blk. ``fmt`` is explicit: never let qemu probe."""

    path: Path
    fmt: Literal["raw", "qcow2", "vhdx"] = "qcow2"
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class DirectKernelBoot:
    """Boot a kernel directly, without a boot loader: the fallback to UEFI, and how an
    installer is started with its answer file. ``uefi``: load it through OVMF (the
    kernel's EFI stub), so an installer sees EFI and installs an EFI boot loader."""

    kernel: Path
    initrd: Path
    cmdline: str
    uefi: bool = False


@dataclass(frozen=True, slots=True)
class VmConfig:
    """Everything needed to start a VM. ``state_dir`` holds logs, VARS, vm.json."""

    name: str
    state_dir: Path
    disks: Sequence[DiskSpec]
    seed_iso: Path | None = None
    cdrom: Path | None = None  # an installer ISO, as a SATA DVD drive
    boot: Literal["uefi"] | DirectKernelBoot = "uefi"
    memory_mib: int = 1024
    cpus: int = 2
    ssh_port: int | None = None  # None: pick a free port on 127.0.0.1
    guest_port: int = 22
    no_reboot: bool = False  # True: a guest reboot ends qemu (useful to catch loops)
    firmware: OvmfFirmware | None = None  # None: find_ovmf()
    accel: AccelChoice | None = None  # None: choose_accel()
    extra_args: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class VmRecord:
    """What vm.json says about a started VM."""

    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a reused pid apart
    ssh_port: int
    qmp_socket: str
    console_log: str
    argv: list[str]
    started_at: float

    def is_running(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks


def _start_ticks(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parens; fields follow the last ')'.
    rest = stat[stat.rfind(")") + 2 :].split()
    if rest[0] == "Z":
        return None
    return int(rest[19])


def read_vm_record(state_dir: Path) -> VmRecord | None:
    """The VM record in ``state_dir``, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((state_dir / _STATE_FILE).read_text())
        return VmRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def kill_stale_vm(state_dir: Path, *, timeout_s: float = 5.0) -> bool:
    """Kill the VM recorded in ``state_dir`` if it still runs. True if one was killed."""
    record = read_vm_record(state_dir)
    if record is None or not record.is_running():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while record.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def free_tcp_port() -> int:
    """A port free on 127.0.0.1 right now (qemu binds it a moment later; start retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _qemu_opt(value: Path | str) -> str:
    """Escape a value inside a qemu -opt list: commas are doubled."""
    return str(value).replace(",", ",,")


class QemuVm:
    """One qemu guest. Start with ``await vm.start()``; always ``await vm.close()``.

    Usable as ``async with QemuVm(config) as vm:``. Files in ``config.state_dir``:
    ``console.log`` (serial), ``qemu.log`` (qemu's own stderr), ``OVMF_VARS.fd``,
    ``vm.json`` and, when the path is short enough, ``qmp.sock``.
    """

    def __init__(self, config: VmConfig) -> None:
        self.config = config
        self.state_dir = config.state_dir.resolve()
        self.console_log = self.state_dir / "console.log"
        self.qemu_log = self.state_dir / "qemu.log"
        self.ssh_port: int = 0
        self.argv: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp_socket: Path = self.state_dir / "qmp.sock"
        self._socket_dir: Path | None = None
        self.accel = config.accel or choose_accel()

    # ----- lifecycle -----------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def qmp_socket(self) -> Path:
        return self._qmp_socket

    async def start(self, *, timeout_s: float = 30.0, replace_running: bool = False) -> None:
        """Start qemu and wait until its QMP socket answers.

        Refuses when ``state_dir`` records a VM that still runs, unless
        ``replace_running`` (then that VM is killed first).
        """
        if self._proc is not None:
            raise VmError(f"VM {self.config.name} was already started")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        old = read_vm_record(self.state_dir)
        if old is not None and old.is_running():
            if not replace_running:
                raise VmError(
                    f"a VM (pid {old.pid}) from {self.state_dir} is still running; "
                    "stop it, or pass replace_running=True / call kill_stale_vm()"
                )
            kill_stale_vm(self.state_dir)
        self._choose_qmp_socket()
        try:
            # The chosen free port can be taken between our probe and qemu's bind; retry.
            attempts = 1 if self.config.ssh_port is not None else 3
            for attempt in range(attempts):
                self.ssh_port = self.config.ssh_port or free_tcp_port()
                self._spawn()
                try:
                    await self._wait_qmp_ready(timeout_s)
                except VmError:
                    self.kill()
                    if attempt + 1 < attempts and "host forwarding" in self._qemu_log_tail():
                        continue
                    raise
                self._write_record()
                return
        except BaseException:
            # Also on cancellation: no qemu and no temp socket dir may outlive a failed start.
            await self.close()
            raise

    def _choose_qmp_socket(self) -> None:
        path = self.state_dir / "qmp.sock"
        if len(str(path)) > _MAX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="gmi-qmp-"))
            path = self._socket_dir / "qmp.sock"
        path.unlink(missing_ok=True)
        self._qmp_socket = path

    def build_argv(self) -> list[str]:
        """The full qemu command line for this config (also recorded in vm.json)."""
        cfg = self.config
        argv = [
            require_tool("qemu-system-x86_64"),
            "-name",
            cfg.name,
            "-machine",
            "q35",
            *self.accel.args,
            "-m",
            str(cfg.memory_mib),
            "-smp",
            str(cfg.cpus),
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            f"file:{_qemu_opt(self.console_log)}",
            "-qmp",
            f"unix:{_qemu_opt(self._qmp_socket)},server=on,wait=off",
            # Entropy for early boot (sshd, cloud-init) without waiting on jitter.
            "-device",
            "virtio-rng-pci",
        ]
        kernel_boot = cfg.boot if isinstance(cfg.boot, DirectKernelBoot) else None
        if kernel_boot is None or kernel_boot.uefi:
            firmware = cfg.firmware or find_ovmf()
            vars_copy = self.state_dir / "OVMF_VARS.fd"
            if not vars_copy.exists():  # keep NVRAM across restarts of the same VM
                firmware.copy_vars(vars_copy)
            argv += firmware.pflash_args(vars_copy)
        if kernel_boot is not None:
            argv += [
                "-kernel",
                str(kernel_boot.kernel),
                "-initrd",
                str(kernel_boot.initrd),
                "-append",
                kernel_boot.cmdline,
            ]
        for disk in cfg.disks:
            opts = f"file={_qemu_opt(disk.path.resolve())},format={disk.fmt},if=virtio,"
            opts += "discard=unmap"
            if disk.readonly:
                opts += ",readonly=on"
            argv += ["-drive", opts]
        if cfg.seed_iso is not None:
            argv += ["-drive", f"file={_qemu_opt(cfg.seed_iso.resolve())},format=raw,if=virtio,readonly=on"]
        if cfg.cdrom is not None:
            argv += ["-drive", f"file={_qemu_opt(cfg.cdrom.resolve())},format=raw,media=cdrom,readonly=on"]
        argv += [
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:{cfg.guest_port}",
            "-device",
            "virtio-net-pci,netdev=n0",
        ]
        if cfg.no_reboot:
            argv.append("-no-reboot")
        argv += list(cfg.extra_args)
        return argv

    def _spawn(self) -> None:
        self.argv = self.build_argv()
        self._qmp_socket.unlink(missing_ok=True)
        with self.qemu_log.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {self.argv}\n".encode())
            log.flush()
            # preexec_fn is required for prctl; we fork from one thread and do only
            # async-signal-safe calls in it. A new session keeps the terminal's Ctrl-C
            # (SIGINT to the foreground group) from hard-stopping the guest: the
            # orchestrator decides how the VM ends.
            # qemu is one process with no children: PDEATHSIG is its containment (the
            # step supervisor would end it with the step that starts it).
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env=procs.command_env(),
                start_new_session=True,
                preexec_fn=procs.die_with_parent(),  # noqa: PLW1509
            )
        procs.record_background(self.argv, self._proc.pid, f"VM {self.config.name}, left running")

    async def _wait_qmp_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.is_running:
                raise VmError(
                    f"qemu exited with {self.returncode} while starting VM "
                    f"{self.config.name}; qemu log:\n{self._qemu_log_tail()}"
                )
            if self._qmp_socket.exists():
                try:
                    async with await QmpClient.connect(self._qmp_socket, timeout_s=5.0) as qmp:
                        await qmp.execute("query-status")
                        return
                except QmpError:
                    pass  # socket exists but qemu is not serving yet; try again
            if time.monotonic() > deadline:
                raise VmError(f"QMP of VM {self.config.name} not ready after {timeout_s} s")
            await asyncio.sleep(0.1)

    def _write_record(self) -> None:
        assert self._proc is not None
        ticks = _start_ticks(self._proc.pid)
        record = VmRecord(
            name=self.config.name,
            pid=self._proc.pid,
            start_ticks=ticks if ticks is not None else -1,
            ssh_port=self.ssh_port,
            qmp_socket=str(self._qmp_socket),
            console_log=str(self.console_log),
            argv=self.argv,
            started_at=time.time(),
        )
        tmp = self.state_dir / f".{_STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
        tmp.replace(self.state_dir / _STATE_FILE)

    def _qemu_log_tail(self, limit: int = 3000) -> str:
        try:
            return self.qemu_log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def console_tail(self, limit: int = 3000) -> str:
        """The end of the serial console log (for error messages)."""
        try:
            return self.console_log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    # ----- waiting ------------------------------------------------------------------

    async def wait_for_port(self, deadline_s: float = 300.0) -> str:
        """Wait until the forwarded guest port speaks SSH; return its banner line.

        A TCP connect alone proves nothing: qemu's user-mode network accepts on the
        host side before the guest listens. So wait for the ``SSH-`` banner.
        """
        deadline = time.monotonic() + deadline_s
        delay = 0.25
        last_error = "no attempt"
        while True:
            if not self.is_running:
                raise VmError(
                    f"VM {self.config.name} exited ({self.returncode}) before SSH answered; "
                    f"console:\n{self.console_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VmError(
                    f"no SSH banner on 127.0.0.1:{self.ssh_port} after {deadline_s} s "
                    f"({last_error}); console:\n{self.console_tail()}"
                )
            try:
                banner = await self._read_banner(min(remaining, 5.0))
                if banner.startswith("SSH-"):
                    return banner
                last_error = f"unexpected banner {banner!r}"
            except (OSError, TimeoutError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 2.0)

    async def _read_banner(self, timeout_s: float) -> str:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.ssh_port), timeout_s
        )
        try:
            line = await asyncio.wait_for(reader.readline(), timeout_s)
            return line.decode(errors="replace").strip()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def wait_exit(self, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for qemu to exit; its exit code, or None if running."""
        deadline = time.monotonic() + timeout_s
        while self.is_running and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.returncode

    # ----- stopping -----------------------------------------------------------------

    async def qmp(self, command: str, *, allow_disconnect: bool = False) -> object:
        """Run one QMP command on a fresh connection."""
        async with await QmpClient.connect(self._qmp_socket) as client:
            result: object = await client.execute(command, allow_disconnect=allow_disconnect)
            return result

    async def powerdown(self, deadline_s: float = 60.0) -> bool:
        """ACPI power button via QMP, then SIGKILL after ``deadline_s``.

        True when the guest shut down by itself (clean filesystems), False when it had
        to be killed.
        """
        if not self.is_running:
            return True
        # qemu may be exiting already; the wait below decides either way.
        with contextlib.suppress(QmpError):
            await self.qmp("system_powerdown")
        if await self.wait_exit(deadline_s) is not None:
            return True
        self.kill()
        return False

    async def quit(self) -> None:
        """Stop qemu at once via QMP ``quit`` (like pulling the plug, but orderly for qemu)."""
        if self.is_running:
            with contextlib.suppress(QmpError):
                await self.qmp("quit", allow_disconnect=True)
            if await self.wait_exit(10.0) is None:
                self.kill()

    def kill(self) -> None:
        """SIGKILL qemu (if running) and reap it."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)

    async def close(self) -> None:
        """Kill qemu if still running and remove the temporary socket directory."""
        self.kill()
        self._qmp_socket.unlink(missing_ok=True)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    async def __aenter__(self) -> QemuVm:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

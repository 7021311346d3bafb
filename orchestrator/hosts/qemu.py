"""The local QEMU host: a GMI built end to end on a Linux machine with no Windows.

Host steps are named operations run in-process (``kind="operation"``), each
idempotent, so a resume mid-build is safe. Guest steps come from the OS family data
and run over SSH; before the first guest step of a run, a session step boots the
build VM (it dies with the orchestrator, so a resumed run boots it again) and logs in.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.guest import guest_steps
from orchestrator.hooks import with_hooks
from orchestrator.spec import BuildSpec, QemuHostSpec
from orchestrator.targets.base import Artifact, CommandResult, OutputSink, Target, TargetError
from orchestrator.targets.guest_ssh import build_user_public_key
from orchestrator.targets.host_keys import HOST_KEY_FACT
from orchestrator.targets.local import LocalTarget, Operation
from states.steps import Command, Step, TargetName, operation_step

if TYPE_CHECKING:
    from orchestrator.qemu.vm import QemuVm
    from orchestrator.targets.ssh import SshTarget
    from orchestrator.view import BuildView


def _op(
    stage: str,
    name: str,
    description: str,
    params: Mapping[str, object] | None = None,
    *,
    timeout_s: float = 600.0,
) -> Step:
    return operation_step(stage, name, description, target="host", params=params, timeout_s=timeout_s)


def _local_op(stage: str, name: str, description: str) -> Step:
    return operation_step(stage, name, description, target="local", timeout_s=7200)


class QemuHost:
    kind = "qemu"

    def __init__(
        self,
        spec: BuildSpec,
        base_dir: Path,
        view: BuildView,
        local_operations: Mapping[str, Operation] | None = None,
    ) -> None:
        if not isinstance(spec.host, QemuHostSpec) or spec.source is None or spec.guest is None:
            raise ValueError("QemuHost needs a qemu host spec with source and guest sections")
        self.spec = spec
        self.host_spec: QemuHostSpec = spec.host
        self.view = view
        self.base_dir = base_dir
        self.build_id = view.build_id
        self.output_dir = _path(spec.output.dir, base_dir)
        self.work_dir = self.output_dir / ".work" / self.build_id
        # Exactly one of them (the spec says so): a base disk, or an installer ISO.
        self.base_image = _path(spec.source.base_image, base_dir) if spec.source.base_image else None
        self.iso = _path(spec.source.iso, base_dir) if spec.source.iso else None
        self.vm: QemuVm | None = None
        self.ssh: SshTarget | None = None
        ops: dict[str, Operation] = {
            "source.inspect": self._source_inspect,
            "disk.create-work": self._create_work,
            "install.unattended": self._install,
            "seed.write-build": self._write_build_seed,
            "vm.ensure-running": self._ensure_running,
            "vm.wait-off": self._wait_off,
            "disk.compact": self._compact,
            "export.disk-only": self._export,
            "validate.boot": self._validate_boot,
            "work.remove": self._remove_work,
            "vm.power-down": self._power_down,
        }
        self._host = LocalTarget(name="host", cwd=str(base_dir), operations=ops)
        if local_operations is None:
            from orchestrator.gmi.operations import make_operations  # noqa: PLC0415

            local_operations = make_operations(view, self.build_id, spec, base_dir=base_dir)
        self._local = LocalTarget(name="local", cwd=str(base_dir), operations=local_operations)

    # -- the Host protocol -----------------------------------------------------------

    def plan(self, stage: str) -> list[Step]:
        return with_hooks(self.spec, stage, self._stage_steps(stage))

    def _stage_steps(self, stage: str) -> list[Step]:
        vhdx_name = f"{self.spec.vm_name}.vhdx"
        guest = guest_steps(self.spec, stage)
        if stage == "provision" and self.iso is not None:
            return [
                _op(stage, "source.inspect", "digest the installer ISO and find its kernel", timeout_s=1800),
                _op(
                    stage,
                    "install.unattended",
                    "install the OS from the ISO with a preseed onto a blank disk",
                    timeout_s=self.host_spec.install_timeout_s + 300,
                ),
                _op(stage, "seed.write-build", "write the build VM's NoCloud seed"),
            ]
        if stage == "provision":
            return [
                _op(stage, "source.inspect", "digest the base disk", timeout_s=1800),
                _op(stage, "disk.create-work", "make the build VM's disk from the base", timeout_s=1800),
                _op(stage, "seed.write-build", "write the build VM's NoCloud seed"),
            ]
        if stage == "seal":
            return [
                *guest,
                _op(
                    stage,
                    "vm.wait-off",
                    "wait for the guest to power off",
                    timeout_s=self.host_spec.shutdown_timeout_s + 60,
                ),
            ]
        if stage == "compact":
            return [_op(stage, "disk.compact", f"compact into a dynamic VHDX ({vhdx_name})", timeout_s=3600)]
        if stage == "export":
            return [
                _op(
                    stage, "export.disk-only", "lay out the export folder (disk-only variant)", timeout_s=3600
                )
            ]
        if stage == "document":
            return [_local_op(stage, "gmi.document", "write the manifest, sidecar and readme")]
        if stage == "package":
            return [_local_op(stage, "gmi.package", "zip, SHA256SUMS, event log, provenance")]
        if stage == "validate":
            return [
                _local_op(stage, "gmi.inspect", "look inside the disk offline (libguestfs) for leftovers"),
                _op(
                    stage,
                    "validate.boot",
                    "boot a throwaway copy with a fresh seed and check it",
                    timeout_s=self.host_spec.boot_timeout_s + 1200,
                ),
                # Last: a build that fails earlier keeps its work disk for debugging.
                _op(stage, "work.remove", "remove the build's work disk and scratch files"),
            ]
        return guest

    def target(self, name: TargetName) -> Target:
        if name == "host":
            return self._host
        if name == "local":
            return self._local
        if self.ssh is None:
            raise TargetError("the guest is not running", hint="a session step boots it first")
        return self.ssh

    def session_step(self, step: Step) -> Step | None:
        if step.target != "guest":
            return None
        return _op(
            step.stage,
            "vm.ensure-running",
            "boot the build VM and log in over SSH",
            timeout_s=self.host_spec.boot_timeout_s + 120,
        )

    def abort_steps(self, stage: str) -> list[Step]:
        return [_op(stage, "work.remove", "remove the aborted build's VM, work disk and scratch files")]

    def closing_steps(self, stage: str) -> list[Step]:
        # A run that ends (failed, paused, interrupted) powers the build VM down
        # cleanly, so the next run boots a disk the guest shut down itself.
        if self.vm is None or not self.vm.is_running:
            return []
        return [_op(stage, "vm.power-down", "power the build VM down cleanly", timeout_s=150)]

    async def close(self) -> None:
        """Release the SSH connection and the VM handle. A VM still running here (the
        run was not closed by the engine) is killed: it never outlives gmi-fsm."""
        if self.ssh is not None:
            await self.ssh.close()
            self.ssh = None
        if self.vm is not None:
            await self.vm.close()
            self.vm = None

    # -- operations -----------------------------------------------------------------

    @property
    def work_disk(self) -> Path:
        return self.work_dir / "disk.qcow2"

    @property
    def seed_iso(self) -> Path:
        return self.work_dir / "seed-build.iso"

    async def _source_inspect(self, _p: Mapping[str, object], _sink: OutputSink) -> CommandResult:
        from events.blobs import digest_file  # noqa: PLC0415
        from orchestrator.qemu.disk import detect_format  # noqa: PLC0415

        source = self.base_image or self.iso
        assert source is not None
        what = "base image" if self.base_image else "installer ISO"
        if not source.is_file():
            raise TargetError(
                f"{what} {source} does not exist",
                hint=f"fix source.{'base_image' if self.base_image else 'iso'} in the spec (`gmi-fsm run "
                "--resume ID --update-spec SPEC`), or make one: `gmi-fsm lab "
                f"{'base-image' if self.base_image else 'installer-iso'}`",
            )
        facts: dict[str, str] = {"source.path": str(source)}
        if self.iso is not None:
            from orchestrator.qemu.installer import InstallerError, find_layout, iso_volume_label  # noqa: PLC0415

            try:
                layout = await asyncio.to_thread(find_layout, self.iso)
                label = await asyncio.to_thread(iso_volume_label, self.iso)
            except InstallerError as exc:
                raise TargetError(str(exc), hint=exc.hint) from None
            facts |= {
                "source.format": "iso",
                "source.installer": layout.name,
                "source.iso_label": label,
                "source.kernel": layout.kernel,
            }
        else:
            facts["source.format"] = detect_format(source)
        sha, size = await asyncio.to_thread(digest_file, source)
        expected = self.spec.source.sha256 if self.spec.source else None
        if expected and expected != sha:
            raise TargetError(
                f"{what} {source} has sha256 {sha}, the spec expects {expected}",
                hint="the file changed or is the wrong one",
            )
        facts["source.sha256"] = sha
        kind = "base_image" if self.base_image else "installer_iso"
        return CommandResult(0, facts=facts, artifacts=(Artifact(kind, str(source), sha, size, "source"),))

    async def _install(self, _p: Mapping[str, object], sink: OutputSink) -> CommandResult:
        from orchestrator.hosts.qemu_install import install_from_iso  # noqa: PLC0415

        assert self.iso is not None
        return await install_from_iso(self, self.iso, sink)

    async def _create_work(self, _p: Mapping[str, object], _sink: OutputSink) -> CommandResult:
        from orchestrator.qemu.disk import create_work_copy  # noqa: PLC0415
        from orchestrator.qemu.vm import kill_stale_vm  # noqa: PLC0415

        assert self.base_image is not None
        kill_stale_vm(self.work_dir / "vm")
        await asyncio.to_thread(
            create_work_copy, self.base_image, self.work_disk, size_gib=self.host_spec.disk_gib
        )
        return CommandResult(0, facts={"work.disk": str(self.work_disk)})

    async def _write_build_seed(self, _p: Mapping[str, object], _sink: OutputSink) -> CommandResult:
        from orchestrator.qemu.seed_iso import SeedFiles, meta_data, write_seed_iso  # noqa: PLC0415

        assert self.spec.guest is not None
        public = await asyncio.to_thread(self._public_key)
        user_data = _cloud_config(self.spec.guest.user, public, hostname="gmi-build")
        write_seed_iso(
            self.seed_iso, SeedFiles(user_data, meta_data(f"gmi-build-{self.build_id}", "gmi-build"))
        )
        return CommandResult(0)

    def _public_key(self) -> str:
        return build_user_public_key(self.spec, self.base_dir)

    async def _ensure_running(self, _p: Mapping[str, object], sink: OutputSink) -> CommandResult:
        from orchestrator.qemu.vm import DiskSpec, QemuVm, VmConfig  # noqa: PLC0415

        if self.vm is not None and self.vm.is_running and self.ssh is not None and self.ssh.connected:
            return CommandResult(0)
        if self.vm is None or not self.vm.is_running:
            self.vm = QemuVm(
                VmConfig(
                    name=f"gmi-build-{self.build_id}",
                    state_dir=self.work_dir / "vm",
                    disks=[DiskSpec(self.work_disk, "qcow2")],
                    seed_iso=self.seed_iso,
                    boot=self._boot(),
                    memory_mib=self.host_spec.memory_mib,
                    cpus=self.host_spec.cpus,
                    accel=self.accel_choice(),
                )
            )
            await self.vm.start(replace_running=True)
            sink(
                "stdout",
                f"started qemu pid {self.vm.pid} ({self.vm.accel.reason}); ssh on "
                f"127.0.0.1:{self.vm.ssh_port}\n".encode(),
            )
        self.ssh = self._ssh_target(self.vm.ssh_port)
        try:
            await self.ssh.wait_until_reachable(self.host_spec.boot_timeout_s)
        except TargetError as exc:
            tail = _tail(self.vm.console_log)
            raise TargetError(
                f"{exc}; last console lines:\n{tail}", hint=exc.hint, retryable=exc.retryable
            ) from None
        # The host key pinned by this first login, if it is one, is recorded with them.
        facts = {"vm.accel": self.vm.accel.reason, **self.ssh.take_facts()}
        return CommandResult(0, facts=facts)

    def _boot(self) -> Any:
        from orchestrator.qemu.vm import DirectKernelBoot  # noqa: PLC0415

        src = self.spec.source
        if self.host_spec.firmware == "uefi" or src is None:
            return "uefi"
        if not src.kernel or not src.initrd:
            raise TargetError("firmware: direct-kernel needs source.kernel and source.initrd")
        return DirectKernelBoot(
            _path(src.kernel, self.base_dir), _path(src.initrd, self.base_dir), src.kernel_cmdline
        )

    def accel_choice(self) -> Any:
        """The spec's forced accelerator, or None: QemuVm picks (KVM only where usable)."""
        from orchestrator.qemu.accel import KVM_ARGS, TCG_ARGS, AccelChoice  # noqa: PLC0415

        if self.host_spec.accel == "kvm":
            return AccelChoice("kvm", KVM_ARGS, "KVM: forced by the spec (host.accel: kvm)")
        if self.host_spec.accel == "tcg":
            return AccelChoice("tcg", TCG_ARGS, "TCG: forced by the spec (host.accel: tcg)")
        return None

    def _ssh_target(self, port: int) -> SshTarget:
        from orchestrator.targets.guest_ssh import guest_ssh_target  # noqa: PLC0415

        return guest_ssh_target(self.spec, self.base_dir, self.view.facts, "127.0.0.1", port=port)

    async def _power_down(self, _p: Mapping[str, object], sink: OutputSink) -> CommandResult:
        if self.ssh is not None:
            await self.ssh.close()
            self.ssh = None
        if self.vm is None or not self.vm.is_running:
            return CommandResult(0)
        clean = await self.vm.powerdown(deadline_s=90)
        await self.vm.close()
        self.vm = None
        how = "cleanly" if clean else "by force (no answer in 90 s)"
        sink("stdout", f"build VM powered down {how}\n".encode())
        return CommandResult(0)

    async def _wait_off(self, _p: Mapping[str, object], sink: OutputSink) -> CommandResult:
        if self.ssh is not None:
            await self.ssh.close()
            self.ssh = None
        if self.vm is None or not self.vm.is_running:
            from orchestrator.qemu.vm import kill_stale_vm  # noqa: PLC0415

            # A VM from a crashed run died with it (PDEATHSIG); make sure.
            kill_stale_vm(self.work_dir / "vm")
            return CommandResult(0, facts={"seal.power_off": "not running (earlier run)"})
        forced = await self.vm.wait_exit(self.host_spec.shutdown_timeout_s) is None
        if forced:
            sink("stderr", b"guest did not power off in time: forcing it off\n")
            await self.vm.close()
        self.vm = None
        return CommandResult(0, facts={"seal.power_off": "forced" if forced else "clean"})

    @property
    def compact_vhdx(self) -> Path:
        return self.work_dir / f"{self.spec.vm_name}.vhdx"

    async def _compact(self, _p: Mapping[str, object], _sink: OutputSink) -> CommandResult:
        from events.blobs import digest_file  # noqa: PLC0415
        from orchestrator.qemu.disk import check, compact_to_vhdx, info  # noqa: PLC0415

        # Zeroes the logs of cleanly unmounted ext journals (in a raw copy) on the way.
        done = await asyncio.to_thread(compact_to_vhdx, self.work_disk, self.compact_vhdx, src_format="qcow2")
        result = await asyncio.to_thread(check, self.compact_vhdx, "vhdx")
        if not result.ok:
            raise TargetError(f"qemu-img check failed on {self.compact_vhdx}: {result.output[-500:]}")
        sha, size = await asyncio.to_thread(digest_file, self.compact_vhdx)
        virtual = (await asyncio.to_thread(info, self.compact_vhdx, "vhdx")).get("virtual-size", 0)
        journal = {
            "compact.journal_zeroed_bytes": str(done.journal_zeroed_bytes),
            "compact.journal_nonzero_bytes": str(done.journal_nonzero_bytes),
        }
        if done.journal_skipped:
            journal["compact.journal_skipped"] = done.journal_skipped
        return CommandResult(
            0,
            facts={"vhdx.size": str(size), "vhdx.virtual_size": str(virtual), **journal},
            artifacts=(Artifact("vhdx_compacted", str(self.compact_vhdx), sha, size, "disk"),),
        )

    async def _remove_work(self, _p: Mapping[str, object], sink: OutputSink) -> CommandResult:
        from orchestrator.qemu.vm import kill_stale_vm  # noqa: PLC0415

        kill_stale_vm(self.work_dir / "vm")
        freed = (
            sum(f.stat().st_size for f in self.work_dir.rglob("*") if f.is_file())
            if self.work_dir.exists()
            else 0
        )
        await asyncio.to_thread(shutil.rmtree, self.work_dir, True)
        sink("stdout", f"removed {self.work_dir} ({freed} bytes)\n".encode())
        return CommandResult(0)

    async def _validate_boot(self, _p: Mapping[str, object], sink: OutputSink) -> CommandResult:
        return await _validate_copy(self, sink)

    @property
    def export_dir(self) -> Path:
        return self.output_dir / self.spec.gmi_name

    async def _export(self, _p: Mapping[str, object], _sink: OutputSink) -> CommandResult:
        from events.blobs import digest_file  # noqa: PLC0415

        disks = self.export_dir / "Virtual Hard Disks"
        disks.mkdir(parents=True, exist_ok=True)
        (self.export_dir / "Snapshots").mkdir(exist_ok=True)
        dest = disks / f"{self.spec.vm_name}.vhdx"
        if self.compact_vhdx.exists():
            tmp = dest.with_name(dest.name + ".part")
            await asyncio.to_thread(shutil.copyfile, self.compact_vhdx, tmp)
            tmp.replace(dest)
        elif not dest.exists():
            raise TargetError(
                f"no compacted disk at {self.compact_vhdx}",
                hint="the compact stage did not leave its VHDX; abort and rebuild",
            )
        sha, size = await asyncio.to_thread(digest_file, dest)
        return CommandResult(
            0,
            artifacts=(
                Artifact("vhdx", str(dest), sha, size, "disk"),
                # Not `export_dir`: that name means a Hyper-V Export-VM folder to packaging.
                Artifact("disk_only_dir", str(self.export_dir), "", 0, "directory"),
            ),
        )


VALIDATE_USER = "gmicheck"


async def _validate_copy(host: QemuHost, sink: OutputSink) -> CommandResult:
    """Boot a throwaway overlay of the exported VHDX with a fresh seed (new hostname,
    user and key) and run the checklist's checks in it."""
    import secrets as random  # noqa: PLC0415

    from orchestrator.gmi.build_access import build_access_check, login_users  # noqa: PLC0415
    from orchestrator.gmi.checks import Output, evaluate, probes  # noqa: PLC0415
    from orchestrator.gmi.operations import checks_result  # noqa: PLC0415
    from orchestrator.qemu._run import run_tool  # noqa: PLC0415
    from orchestrator.qemu.disk import create_work_copy  # noqa: PLC0415
    from orchestrator.qemu.seed_iso import SeedFiles, meta_data, write_seed_iso  # noqa: PLC0415
    from orchestrator.qemu.vm import DiskSpec, QemuVm, VmConfig  # noqa: PLC0415
    from orchestrator.targets.ssh import SshTarget  # noqa: PLC0415

    vhdx = host.export_dir / "Virtual Hard Disks" / f"{host.spec.vm_name}.vhdx"
    if not vhdx.exists():
        raise TargetError(f"no exported disk at {vhdx}", hint="the export stage did not leave its VHDX")
    work = host.work_dir / "validate"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    key = work / "id_ed25519"
    await asyncio.to_thread(
        run_tool,
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gmi-validate", "-f", str(key)],
        what="creating the validation key",
        where=key,
    )
    hostname = f"gmi-check-{random.token_hex(3)}"
    seed = work / "seed.iso"
    user_data = _cloud_config(VALIDATE_USER, key.with_suffix(".pub").read_text().strip(), hostname=hostname)
    write_seed_iso(seed, SeedFiles(user_data, meta_data(f"gmi-validate-{random.token_hex(6)}", hostname)))
    overlay = work / "overlay.qcow2"
    await asyncio.to_thread(create_work_copy, vhdx, overlay, base_format="vhdx", linked=True)
    vm = QemuVm(
        VmConfig(
            name=f"gmi-validate-{host.build_id}",
            state_dir=work / "vm",
            disks=[DiskSpec(overlay, "qcow2")],
            seed_iso=seed,
            boot=host._boot(),
            memory_mib=host.host_spec.memory_mib,
            cpus=host.host_spec.cpus,
            accel=host.accel_choice(),
        )
    )
    seen_keys: list[str] = []
    ssh: SshTarget | None = None
    expect = _expectations(host, hostname)
    outputs: dict[str, Output] = {}
    try:
        await vm.start()
        sink("stdout", f"booted the throwaway copy (qemu pid {vm.pid}), hostname {hostname}\n".encode())
        ssh = SshTarget(
            "127.0.0.1",
            port=vm.ssh_port,
            user=VALIDATE_USER,
            key_path=key,
            on_new_host_key=lambda fp, _alg: seen_keys.append(fp),
        )
        try:
            await ssh.wait_until_reachable(host.host_spec.boot_timeout_s)
        except TargetError as exc:
            raise TargetError(
                f"the GMI copy did not accept the fresh seed's login: {exc}; console:\n"
                f"{_tail(vm.console_log)}",
                hint="cloud-init or sshd did not come up",
            ) from None
        for probe in probes(expect):
            buf = _Collect()
            res = await ssh.run(
                Command(probe.command, args=probe.args, sudo=probe.sudo), timeout_s=probe.timeout_s, sink=buf
            )
            outputs[probe.name] = Output(buf.text("stdout"), res.exit_code, buf.text("stderr"))
        access = await build_access_check(
            "127.0.0.1",
            vm.ssh_port,
            login_users(outputs["passwd"].stdout, expect.build_user),
            build_credentials(host),
        )
    finally:
        if ssh is not None:
            await ssh.close()
        await vm.close()
    checks = evaluate(outputs, expect)
    checks.insert(0, _login_check(seen_keys))
    checks.append(access)
    shutil.rmtree(work, ignore_errors=True)
    return checks_result(checks, sink)


def build_credentials(host: QemuHost) -> Any:
    """The build's own key/password: the validate stage proves they open nothing."""
    from orchestrator.gmi.build_access import BuildCredentials  # noqa: PLC0415
    from orchestrator.secrets import resolve  # noqa: PLC0415
    from orchestrator.targets.guest_ssh import key_file  # noqa: PLC0415

    guest = host.spec.guest
    if guest is None:
        return BuildCredentials()

    def secret(ref: str | None, where: str) -> str | None:
        return resolve(ref, where=where, base_dir=host.base_dir).reveal() if ref else None

    return BuildCredentials(
        key_path=key_file(guest.ssh_private_key, host.base_dir),
        key_passphrase=secret(guest.ssh_key_passphrase, "guest.ssh_key_passphrase"),
        password=secret(guest.password, "guest.password"),
    )


def _expectations(host: QemuHost, hostname: str) -> Any:
    """What the fresh copy must show, and what must differ from the build VM."""
    from orchestrator.gmi.checks import Expectations  # noqa: PLC0415
    from states.sealed_image import BuildFacts  # noqa: PLC0415

    facts = host.view.facts
    build = BuildFacts.from_facts(facts, host.spec.guest.user if host.spec.guest else "")
    return Expectations(
        hostname=hostname,
        user=VALIDATE_USER,
        daemons=tuple(
            d.removesuffix(".service")
            for d in facts.get("hyperv.daemons", "").split(",")
            if d.endswith("daemon.service")
        ),
        build_machine_id=facts.get("guest.machine_id", ""),
        build_host_key_fingerprint=facts.get(HOST_KEY_FACT, ""),
        hyperv=False,
        build_user=build.user,
        build_hostname=build.hostname,
        build_user_removed=build.remove_user,
    )


def _login_check(seen_keys: list[str]) -> Any:
    from orchestrator.gmi.report import check  # noqa: PLC0415

    return check(
        "boot.login",
        bool(seen_keys),
        f"logged in with the fresh seed's key (host key {seen_keys[0]})" if seen_keys else "",
        "could not log in with the fresh seed's key",
    )


class _Collect:
    """A small sink for probe outputs (they are short)."""

    def __init__(self) -> None:
        self.data: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def __call__(self, stream: str, data: bytes) -> None:
        buf = self.data[stream]
        if len(buf) < 1 << 20:
            buf += data

    def text(self, stream: str) -> str:
        return self.data[stream].decode("utf-8", "replace")


def _path(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def _cloud_config(user: str, public_key: str, *, hostname: str) -> str:
    import yaml  # noqa: PLC0415

    data = {
        "hostname": hostname,
        "users": [
            {
                "name": user,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": [public_key],
            }
        ],
        "ssh_pwauth": False,
    }
    return "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return "(no console log)"

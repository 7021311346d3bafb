"""``HyperVHost``: the ``hyperv`` host kind (implements :class:`orchestrator.hosts.base.Host`).

Per stage: the host's own steps (``plan.HostPlanner``) around the guest steps from
``orchestrator.guest.guest_steps``, with the spec's hooks around all of it. The
``host`` target runs scripts through a :class:`PowerShellExecutor` (PowerShell
Remoting, or the SIMULATOR); the ``guest`` target is SSH to the address the host
read through KVP in the session step.
"""

from __future__ import annotations

import asyncio
import logging
import ntpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.hooks import with_hooks
from orchestrator.hyperv.executor import PowerShellExecutor
from orchestrator.hyperv.finish import (
    SourceError,
    finish_guest_steps,
    first_boot_seed,
    prepare_source,
    source_path,
)
from orchestrator.hyperv.finish_plan import FinishPlanner
from orchestrator.hyperv.invoke import run_script
from orchestrator.hyperv.plan import HostPlanner
from orchestrator.hyperv.seed import SeedError, SeedMedia, seed_media, write_seed_media
from orchestrator.hyperv.target import HyperVTarget, Operation
from orchestrator.hyperv.transfer import TransferOptions, download_folder, transfer_options, upload_file
from orchestrator.spec import BuildSpec, HyperVHostSpec
from orchestrator.targets.base import Artifact, CommandResult, OutputSink, Target, TargetError
from orchestrator.targets.local import LocalTarget
from states.stages import FAILED
from states.steps import Step, TargetName

if TYPE_CHECKING:
    from orchestrator.view import BuildView

log = logging.getLogger(__name__)

GuestPlanner = Callable[[BuildSpec, str], list[Step]]


def default_guest_planner() -> GuestPlanner:
    """The lead's guest planning, imported when first needed."""
    try:
        from orchestrator.guest import guest_steps  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    except ImportError as exc:
        msg = "guest planning (orchestrator.guest.guest_steps) is not available in this build of gmi-fsm"
        raise TargetError(msg, hint="update gmi-fsm") from exc
    planner: GuestPlanner = guest_steps
    return planner


def no_guest_steps(spec: BuildSpec, stage: str) -> list[Step]:
    """Host-only plans (the SIMULATOR's default: it has no guest to log in to)."""
    return []


class HyperVHost:
    kind = "hyperv"

    def __init__(
        self,
        spec: BuildSpec,
        base_dir: Path,
        build_id: str,
        executor: PowerShellExecutor,
        *,
        view: BuildView | None = None,
        guest_planner: GuestPlanner | None = None,
        work_dir: Path | None = None,
        guest_target_factory: Callable[[str], Target] | None = None,
    ) -> None:
        assert isinstance(spec.host, HyperVHostSpec)
        self.spec = spec
        self.h: HyperVHostSpec = spec.host
        self.base_dir = base_dir
        self.build_id = build_id
        self.executor = executor
        self.view = view
        # A prepared disk to finish (source.gmi_package / source.vhdx) has its own plan.
        self.finishing = spec.source is not None and spec.source.finishes_disk
        self.planner = FinishPlanner(spec, build_id) if self.finishing else HostPlanner(spec, build_id)
        self._guest_planner = guest_planner
        self.work_dir = work_dir or base_dir / ".gmi-fsm-work" / build_id
        self._guest_factory = guest_target_factory
        self.guest_address: str | None = None
        self._guest: Target | None = None
        self._local: LocalTarget | None = None
        self._transfer: TransferOptions | None = None
        self._host = HyperVTarget(
            executor,
            default_timeout_s=self.h.call_timeout_s,
            operations=self._operations(),
            on_facts=self._facts_seen,
        )

    # -- Host protocol -------------------------------------------------------------------

    def plan(self, stage: str) -> list[Step]:
        planner = self._guest_planner or default_guest_planner()
        guest = planner(self.spec, stage)
        if self.finishing:
            guest = finish_guest_steps(stage, guest)
        steps = [*self.planner.before(stage), *guest, *self.planner.after(stage)]
        return with_hooks(self.spec, stage, steps)

    def target(self, name: TargetName) -> Target:
        if name == "host":
            return self._host
        if name == "guest":
            return self._guest_target()
        return self._local_target()

    def _local_target(self) -> Target:
        if self._local is None:
            from orchestrator.gmi.operations import make_operations  # noqa: PLC0415

            ops = (
                make_operations(self.view, self.build_id, self.spec, base_dir=self.base_dir)
                if self.view is not None
                else {}
            )
            self._local = LocalTarget(name="local", cwd=str(self.base_dir), operations=ops)
        return self._local

    def session_step(self, step: Step) -> Step | None:
        if step.target != "guest":
            return None
        return self.planner.address_step(step.stage, "session.guest-address")

    def abort_steps(self, stage: str) -> list[Step]:
        return [self.planner.remove_step(stage)]

    def closing_steps(self, stage: str) -> list[Step]:
        """After a failed run, remove the build VM unless the spec keeps it for
        debugging (after success the validate stage removed it; an abort runs
        :meth:`abort_steps`)."""
        if self.view is None or self.view.state.status != FAILED or self.h.keep_vm_on_failure:
            return []
        return [self.planner.remove_step(stage)]

    async def close(self) -> None:
        """Release the connections (nothing is done on the host here)."""
        try:
            if self._guest is not None:
                await self._guest.close()
        finally:
            await self._host.close()

    # -- guest -----------------------------------------------------------------------------

    def _facts_seen(self, script: str, facts: Mapping[str, str]) -> None:
        ip = facts.get("hyperv.guest_ipv4")
        if ip and ip != self.guest_address:
            self.guest_address = ip
            if self._guest is not None:
                log.info("guest address changed to %s; reconnecting", ip)
                self._guest = None

    def _guest_target(self) -> Target:
        if self._guest is None:
            if self.guest_address is None:
                raise TargetError(
                    "the guest's address is not known yet (no KVP report in this run)",
                    hint="this is a bug in the plan: a guest step ran without its session step",
                )
            factory = self._guest_factory or self._ssh_target
            self._guest = factory(self.guest_address)
        return self._guest

    def _ssh_target(self, address: str) -> Target:
        from orchestrator.targets.guest_ssh import guest_ssh_target  # noqa: PLC0415

        facts = self.view.facts if self.view is not None else {}
        return guest_ssh_target(self.spec, self.base_dir, facts, address)

    # -- host operations (Python on top of the scripts) -----------------------------------

    def transfer_options(self) -> TransferOptions:
        """How this host's transfers go (SMB share or PowerShell Remoting, chunk size):
        what every operation that moves a file passes to orchestrator.hyperv.transfer."""
        if self._transfer is None:
            self._transfer = transfer_options(self.h, self.base_dir)
        return self._transfer

    def _operations(self) -> dict[str, Operation]:
        return {
            "iso.upload": self._op_iso_upload,
            "seed.upload": self._op_seed_upload,
            "install.operator": self._op_install_operator,
            "export.hash": self._op_export_hash,
            "export.fetch": self._op_export_fetch,
            "source.prepare": self._op_source_prepare,
            "disk.upload": self._op_disk_upload,
            "integration.verify": self._op_integration_verify,
            "package.validate": self._op_package_validate,
        }

    async def _op_iso_upload(
        self, params: Mapping[str, object], timeout_s: float, sink: OutputSink
    ) -> CommandResult:
        local = Path(str(params["LocalPath"])).expanduser()
        if not local.is_absolute():
            local = self.base_dir / local
        remote, expected = str(params["RemotePath"]), str(params["Sha256"])
        if not local.is_file():
            # The ISO may already be on the host (copied there by an operator).
            there = await run_script(
                self.executor, "file-hash", {"Path": remote, "ExpectSha256": expected}, timeout_s=timeout_s
            )
            if there.exit == 0:
                return CommandResult(0, facts={"source.iso_sha256": there.facts["sha256"]})
            return CommandResult(
                1,
                error=f"the ISO is neither on this machine ({local}) nor on the host ({remote}): "
                "copy it to one of them (the host needs it on its own disk, see docs/hyperv.md)",
            )
        done = await upload_file(self.executor, local, remote, options=self.transfer_options(), sink=sink)
        if expected and done.sha256 != expected:
            return CommandResult(1, error=f"{local} has sha256 {done.sha256}, the spec expects {expected}")
        return CommandResult(0, facts={"source.iso_sha256": done.sha256})

    async def _op_seed_upload(
        self, params: Mapping[str, object], timeout_s: float, sink: OutputSink
    ) -> CommandResult:
        local = self.work_dir / "seed.iso"
        if not local.is_file():  # written once per build, so its digest stays the same on a rerun
            from orchestrator.targets.guest_ssh import build_user_public_key  # noqa: PLC0415

            public_key = build_user_public_key(self.spec, self.base_dir)
            try:
                if params.get("Media") == "first-boot":
                    media = SeedMedia("cidata", first_boot_seed(self.spec, self.build_id, public_key))
                else:
                    media = seed_media(self.spec, public_key)
            except SeedError as exc:
                return CommandResult(1, error=f"{exc} (hint: {exc.hint})" if exc.hint else str(exc))
            write_seed_media(local, media)
            sink(
                "stdout",
                f"wrote {media.label} seed media {local}: {', '.join(sorted(media.files))}\n".encode(),
            )
        done = await upload_file(
            self.executor, local, self.planner.paths.seed_path, options=self.transfer_options(), sink=sink
        )
        return CommandResult(0, facts={"hyperv.seed_sha256": done.sha256})

    async def _op_install_operator(
        self, params: Mapping[str, object], timeout_s: float, sink: OutputSink
    ) -> CommandResult:
        from orchestrator.hyperv.invoke import ScriptError  # noqa: PLC0415

        try:
            outcome = await run_script(
                self.executor,
                "vm-address",
                {
                    "VmName": self.spec.vm_name,
                    "BuildId": self.build_id,
                    "TimeoutSeconds": params["TimeoutSeconds"],
                    "StartIfOff": False,
                },
                timeout_s=timeout_s,
            )
        except ScriptError:
            user = self.spec.guest.user if self.spec.guest else "the build user"
            return CommandResult(
                1,
                error=f"waiting for the operator: install {self.spec.os.name} {self.spec.os.version} in the "
                f"console of VM '{self.spec.vm_name}' (Hyper-V Manager > Connect) with user {user} holding "
                "the spec's SSH key, passwordless sudo and hv_kvp_daemon running; boot the installed "
                f"system, then `gmi-fsm run --resume {self.build_id}`",
            )
        self._facts_seen("vm-address", outcome.facts)
        return CommandResult(0, facts=outcome.facts)

    # -- finishing a prepared disk (orchestrator/hyperv/finish.py) -------------------------

    def _source_disk(self) -> Path:
        """The disk ``disk.upload`` sends: the package's VHDX extracted into the work folder
        by ``source.prepare``, or the spec's ``source.vhdx`` itself."""
        assert self.spec.source is not None
        if self.spec.source.vhdx is not None:
            return source_path(self.spec, self.base_dir)
        return self.work_dir / "source.vhdx"

    async def _op_source_prepare(
        self, params: Mapping[str, object], timeout_s: float, sink: OutputSink
    ) -> CommandResult:
        try:
            done = await asyncio.to_thread(prepare_source, self.spec, self.base_dir, self.work_dir)
        except SourceError as exc:
            return CommandResult(1, error=f"{exc} (hint: {exc.hint})" if exc.hint else str(exc))
        if done.report:
            sink("stdout", done.report.encode())
        sink("stdout", f"disk {done.disk} sha256 {done.disk_sha256}\n".encode())
        facts = {**done.facts, "source.vhdx_sha256": done.disk_sha256}
        return CommandResult(0, facts=facts)

    async def _op_disk_upload(
        self, params: Mapping[str, object], timeout_s: float, sink: OutputSink
    ) -> CommandResult:
        local = self._source_disk()
        extracted = self.spec.source is not None and self.spec.source.gmi_package is not None
        if not local.is_file() and extracted:
            # The work folder lost the extracted disk (cleaned up, or this is a rerun after
            # a verified upload removed it): check the package and extract it again.
            try:
                await asyncio.to_thread(prepare_source, self.spec, self.base_dir, self.work_dir)
            except SourceError as exc:
                return CommandResult(1, error=f"{exc} (hint: {exc.hint})" if exc.hint else str(exc))
        if not local.is_file():
            return CommandResult(1, error=f"the disk to upload, {local}, is missing")
        remote = ntpath.join(
            self.planner.paths.vm_path,
            self.spec.vm_name,
            "Virtual Hard Disks",
            self.build_id,
            f"{self.spec.vm_name}.vhdx",
        )  # Get-GmiVhdPath (the scripts' preamble): the build's own disk path
        done = await upload_file(self.executor, local, remote, options=self.transfer_options(), sink=sink)
        want = self.view.facts.get("source.vhdx_sha256") if self.view is not None else None
        if want and done.sha256 != want:
            return CommandResult(
                1, error=f"the uploaded disk has sha256 {done.sha256}, the source's is {want}"
            )
        if extracted:
            # The host holds the verified disk: the extracted copy (the disk's size) goes.
            local.unlink(missing_ok=True)
        return CommandResult(0, facts={"hyperv.disk_sha256": done.sha256, "hyperv.vhdx_path": remote})

    async def _op_integration_verify(
        self, params: Mapping[str, object], timeout_s: float, sink: OutputSink
    ) -> CommandResult:
        got = await run_script(
            self.executor,
            "integration-status",
            {"VmName": self.spec.vm_name, "BuildId": self.build_id},
            timeout_s=timeout_s,
        )
        services = {k: v for k, v in got.facts.items() if k.startswith("hyperv.ic.")}
        for k, v in sorted(services.items()):
            sink("stdout", f"{k.removeprefix('hyperv.ic.')}: {v}\n".encode())
        bad = sorted(k.removeprefix("hyperv.ic.") for k, v in services.items() if v != "OK")
        if got.exit != 0 or not services or bad:
            return CommandResult(
                1,
                facts=got.facts,
                error=f"integration services not OK: {', '.join(bad) or got.message or 'none reported'} "
                "(the disk needs the Hyper-V daemons and hv_utils; see docs/hyperv.md section 7)",
            )
        return CommandResult(0, facts=got.facts)

    async def _op_package_validate(
        self, params: Mapping[str, object], timeout_s: float, sink: OutputSink
    ) -> CommandResult:
        from orchestrator.gmi.validate import validate  # noqa: PLC0415

        out = Path(self.spec.output.dir)
        zip_path = (out if out.is_absolute() else self.base_dir / out) / f"{self.spec.gmi_name}.zip"
        report = await asyncio.to_thread(validate, zip_path)
        sink("stdout", report.to_text().encode())
        if not report.importable:
            return CommandResult(1, error=f"{zip_path.name} did not pass `gmi-fsm validate` as importable")
        return CommandResult(0, facts={"package.validated": zip_path.name})

    def _exported_vhdx(self) -> str:
        name = self.spec.vm_name
        return ntpath.join(self.planner.paths.export_path, name, "Virtual Hard Disks", f"{name}.vhdx")

    async def _op_export_hash(
        self, params: Mapping[str, object], timeout_s: float, sink: OutputSink
    ) -> CommandResult:
        path = self._exported_vhdx()
        got = await run_script(
            self.executor, "file-hash", {"Path": path, "ExpectSha256": ""}, timeout_s=timeout_s
        )
        if got.exit != 0:
            return CommandResult(got.exit, error=got.message)
        sha, size = got.facts["sha256"], int(got.facts["size"])
        sink("stdout", f"{path} sha256 {sha} ({size} bytes)\n".encode())
        return CommandResult(
            0,
            facts={"export.vhdx_sha256": sha, "export.vhdx_size": str(size), "export.vhdx_path": path},
            artifacts=(
                Artifact(
                    name=f"{name_of(path)}", path=f"hyperv:{path}", sha256=sha, size=size, kind="vhdx-on-host"
                ),
            ),
        )

    async def _op_export_fetch(
        self, params: Mapping[str, object], timeout_s: float, sink: OutputSink
    ) -> CommandResult:
        remote = ntpath.join(self.planner.paths.export_path, self.spec.vm_name)
        out = Path(self.spec.output.dir)
        local = (out if out.is_absolute() else self.base_dir / out) / "export" / self.spec.vm_name
        # The ownership marker stays on the host: it is gmi-fsm's, not part of the GMI.
        fetched = await download_folder(
            self.executor,
            remote,
            local,
            options=self.transfer_options(),
            sink=sink,
            skip=frozenset({EXPORT_MARKER}),
        )
        arts = [f.artifact() for f in fetched]
        # The names packaging reads: the local Export-VM folder and its VHDX.
        disk = f"Virtual Hard Disks/{self.spec.vm_name}.vhdx"
        vhdx = [a for a in arts if a.name == disk]
        named: list[Artifact] = [Artifact("export_dir", str(local), "", 0, "directory")]
        if vhdx:
            named.append(Artifact("vhdx", vhdx[0].path, vhdx[0].sha256, vhdx[0].size, "disk"))
        return CommandResult(0, facts={"export.local_dir": str(local)}, artifacts=(*arts, *named))


EXPORT_MARKER = "gmi-fsm-export.json"


def name_of(path: str) -> str:
    return ntpath.basename(path)

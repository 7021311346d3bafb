"""The Hyper-V host's own steps for each stage, as data.

Every step is safe to run again after a crash: most are idempotent by nature ("set
to", "wait until"); the two that make something new (the VM, the export) carry a
check probe and, on top, recognise their own earlier work by the build id they
stamp on it (VM Notes, export marker), so a step that failed with a lost connection
and is run again does not make a second VM or a second export.
"""

from __future__ import annotations

import ntpath
from dataclasses import dataclass

from orchestrator.spec import BuildSpec, HyperVHostSpec
from states.steps import Command, RetryPolicy, Step, operation_step

# Idempotent host calls: one more try after a transient failure (dropped connection).
_RETRY = RetryPolicy(attempts=2, initial_s=2.0)
# Transfers: each attempt resumes at the last verified offset, so a retry costs little.
_TRANSFER_RETRY = RetryPolicy(attempts=3, initial_s=5.0)
_MARGIN_S = 60.0  # a waiting script's own deadline comes first; the call's is a backstop


@dataclass(frozen=True, slots=True)
class HostPaths:
    """Where things are on the Hyper-V host (Windows paths)."""

    vm_path: str
    export_path: str
    iso_path: str
    seed_path: str


def host_paths(spec: BuildSpec) -> HostPaths:
    h = _host(spec)
    iso = h.iso_path
    if iso is None:
        local = spec.source.iso if spec.source and spec.source.iso else "installer.iso"
        iso = ntpath.join(h.vm_path, local.replace("\\", "/").rsplit("/", 1)[-1])
    return HostPaths(
        vm_path=h.vm_path,
        export_path=h.export_path,
        iso_path=iso,
        seed_path=ntpath.join(h.vm_path, f"{spec.vm_name}-seed.iso"),
    )


def _host(spec: BuildSpec) -> HyperVHostSpec:
    assert isinstance(spec.host, HyperVHostSpec)
    return spec.host


class HostPlanner:
    """Builds the host steps of one build (its id is stamped on what it creates)."""

    def __init__(self, spec: BuildSpec, build_id: str) -> None:
        self.spec = spec
        self.h = _host(spec)
        self.build_id = build_id
        self.paths = host_paths(spec)

    # -- step constructors -----------------------------------------------------------

    def _vm(self, **extra: object) -> dict[str, object]:
        return {"VmName": self.spec.vm_name, "BuildId": self.build_id, **extra}

    def ps(
        self,
        stage: str,
        name: str,
        script: str,
        params: dict[str, object],
        description: str,
        *,
        timeout_s: float | None = None,
        check: Command | None = None,
    ) -> Step:
        return Step(
            stage=stage,
            name=name,
            target="host",
            command=Command(script, kind="powershell", params=params),
            description=description,
            timeout_s=timeout_s or self.h.call_timeout_s,
            retry=RetryPolicy() if check is not None else _RETRY,
            idempotent=check is None,
            check=check,
        )

    def op(
        self,
        stage: str,
        name: str,
        params: dict[str, object],
        description: str,
        timeout_s: float,
        *,
        retry: RetryPolicy = _RETRY,
    ) -> Step:
        return Step(
            stage=stage,
            name=name,
            target="host",
            command=Command(name, kind="operation", params=params),
            description=description,
            timeout_s=timeout_s,
            retry=retry,
            idempotent=True,
        )

    def _wait(self, stage: str, name: str, seconds: float, *, stop: bool, description: str) -> Step:
        return self.ps(
            stage,
            name,
            "vm-wait-off",
            self._vm(TimeoutSeconds=int(seconds), StopIfRunning=stop),
            description,
            timeout_s=seconds + _MARGIN_S,
        )

    def address_step(self, stage: str, name: str) -> Step:
        return self.ps(
            stage,
            name,
            "vm-address",
            self._vm(TimeoutSeconds=int(self.h.boot_timeout_s), StartIfOff=True),
            "start the VM if needed and read its IPv4 address through KVP",
            timeout_s=self.h.boot_timeout_s + _MARGIN_S,
        )

    # -- per stage ---------------------------------------------------------------------

    def before(self, stage: str) -> list[Step]:
        """Host steps that run ahead of the stage's guest steps."""
        fn = getattr(self, f"_before_{stage}", None)
        return list(fn()) if fn is not None else []

    def after(self, stage: str) -> list[Step]:
        """Host steps that run after the stage's guest steps."""
        fn = getattr(self, f"_after_{stage}", None)
        return list(fn()) if fn is not None else []

    def _before_provision(self) -> list[Step]:
        s, h, p = "provision", self.h, self.paths
        steps = [
            self.ps(
                s,
                "host.preflight",
                "preflight",
                {
                    "VmPath": p.vm_path,
                    "ExportPath": p.export_path,
                    "SwitchName": h.switch,
                    "DiskGiB": h.disk_gib,
                    "IsoPath": p.iso_path,
                },
                "Hyper-V module, rights, switch, free space, ISO on the host",
            )
        ]
        if self.spec.source is not None and self.spec.source.iso is not None:
            steps.append(
                self.op(
                    s,
                    "iso.upload",
                    {
                        "LocalPath": self.spec.source.iso,
                        "RemotePath": p.iso_path,
                        "Sha256": self.spec.source.sha256 or "",
                    },
                    "put the installer ISO on the host's own disk (skipped when there with that sha256)",
                    timeout_s=h.transfer_timeout_s,
                    retry=_TRANSFER_RETRY,
                )
            )
        steps += [
            self.ps(
                s,
                "vm.create",
                "vm-create",
                self._vm(VmPath=p.vm_path, DiskGiB=h.disk_gib, MemoryMiB=h.memory_mib, SwitchName=h.switch),
                "New-VM: generation 2, a new VHDX named like the VM",
                check=Command("vm-probe", kind="powershell", params=self._vm(VmPath=p.vm_path)),
            ),
            self.ps(
                s,
                "vm.configure",
                "vm-configure",
                self._vm(
                    MemoryMiB=h.memory_mib,
                    DynamicMemory=h.dynamic_memory,
                    Cpus=h.cpus,
                    SecureBoot=h.secure_boot,
                    SecureBootTemplate=h.secure_boot_template,
                    IsoPath=p.iso_path,
                ),
                "memory, CPUs, Secure Boot, no TPM, no automatic checkpoints, installer DVD first",
            ),
        ]
        return steps

    def _before_install_os(self) -> list[Step]:
        s, h = "install_os", self.h
        start = self.ps(
            s,
            "vm.start",
            "vm-start",
            self._vm(PressKey=h.press_key_for_dvd),
            "start the VM from the installer DVD",
        )
        if h.install == "manual":
            return [
                start,
                self.op(
                    s,
                    "install.operator",
                    {"TimeoutSeconds": int(min(20, h.boot_timeout_s))},
                    "wait for an operator to install the OS from the VM console",
                    timeout_s=120,
                    # Failing here is the expected "operator, your turn": once is enough.
                    retry=RetryPolicy(),
                ),
            ]
        return [
            self.op(
                s,
                "seed.upload",
                {},
                "write the unattended-install media and put it on the host",
                h.transfer_timeout_s,
                retry=_TRANSFER_RETRY,
            ),
            self.ps(
                s,
                "seed.attach",
                "seed-attach",
                self._vm(SeedPath=self.paths.seed_path),
                "attach the seed media",
            ),
            start,
            self._wait(
                s,
                "install.wait",
                h.install_timeout_s,
                stop=False,
                description="wait for the unattended install to finish and power the VM off",
            ),
            self.ps(s, "media.eject", "media-eject", self._vm(), "remove the DVD drives; boot from the disk"),
            self.address_step(s, "vm.first-boot"),
        ]

    def _after_hyperv_integration(self) -> list[Step]:
        return [
            self.ps(
                "hyperv_integration",
                "integration.status",
                "integration-status",
                self._vm(),
                "read the integration services' status (heartbeat, KVP, VSS, shutdown, guest services)",
            )
        ]

    def _after_seal(self) -> list[Step]:
        return [
            self._wait(
                "seal",
                "vm.wait-off",
                self.h.shutdown_timeout_s,
                stop=True,
                description="wait for the sealed guest to power off (asks it to shut down if still running)",
            )
        ]

    def _before_compact(self) -> list[Step]:
        s = "compact"
        return [
            self._wait(
                s, "vm.stop", self.h.shutdown_timeout_s, stop=True, description="make sure the VM is off"
            ),
            self.ps(s, "media.eject", "media-eject", self._vm(), "remove the DVD drives from the VM"),
            self.ps(
                s,
                "checkpoints.merge",
                "checkpoints-merge",
                self._vm(TimeoutSeconds=int(self.h.call_timeout_s)),
                "remove checkpoints and wait until no .avhdx is left",
                timeout_s=self.h.call_timeout_s + _MARGIN_S,
            ),
            self.ps(
                s,
                "vhd.optimize",
                "vhd-optimize",
                self._vm(),
                "Optimize-VHD -Mode Full on the read-only mounted disk",
            ),
        ]

    def _before_export(self) -> list[Step]:
        s, p = "export", self.paths
        steps = [
            self.ps(
                s,
                "vm.export",
                "vm-export",
                self._vm(ExportPath=p.export_path),
                "Export-VM (through a staging folder owned by this build)",
                check=Command("export-probe", kind="powershell", params=self._vm(ExportPath=p.export_path)),
            ),
            self.op(
                s,
                "export.hash",
                {},
                "sha256 of the exported VHDX (the manifest's checksum)",
                self.h.call_timeout_s,
            ),
            self.ps(
                s,
                "export.check",
                "export-compare",
                {"VmName": self.spec.vm_name, "ExportPath": p.export_path},
                "Compare-VM on the export: would it import?",
            ),
        ]
        if self.h.fetch_export:
            steps.append(
                self.op(
                    s,
                    "export.fetch",
                    {},
                    "copy the export to this machine",
                    self.h.transfer_timeout_s,
                    retry=_TRANSFER_RETRY,
                )
            )
        return steps

    # The package is made on this machine, from the fetched export.
    def _after_document(self) -> list[Step]:
        if not self.h.fetch_export:
            return []
        return [
            operation_step(
                "document",
                "gmi.document",
                "write the manifest, sidecar and readme",
                target="local",
                timeout_s=7200,
            )
        ]

    def _after_package(self) -> list[Step]:
        if not self.h.fetch_export:
            return []
        return [
            operation_step(
                "package",
                "gmi.package",
                "zip, SHA256SUMS, event log, provenance",
                target="local",
                timeout_s=7200,
            )
        ]

    def _after_validate(self) -> list[Step]:
        steps = [self.remove_step("validate")]
        sim = self.h.simulator
        if self.h.fetch_export and (sim is None or sim.inspect_export):
            # The export is on this machine: read its disk offline for leftovers of the build.
            steps.insert(
                0,
                operation_step(
                    "validate",
                    "gmi.inspect",
                    "look inside the disk offline (libguestfs) for leftovers",
                    target="local",
                    timeout_s=1800,
                ),
            )
        return steps

    def remove_step(self, stage: str) -> Step:
        return self.ps(
            stage,
            "vm.remove",
            "vm-remove",
            self._vm(VmPath=self.paths.vm_path, SeedPath=self.paths.seed_path),
            "remove the build VM, its disk and seed media (the export stays)",
        )

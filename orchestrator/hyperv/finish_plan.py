"""The Hyper-V host's steps when the build finishes a prepared disk (``source.gmi_package``
or ``source.vhdx``; see ``orchestrator/hyperv/finish.py``).

Where they differ from an install (``plan.HostPlanner``):

- provision: check the source and record its facts (``source.prepare``), upload the disk
  to the build's own disk path (``disk.upload``), make the VM on it (``vm-create-from-disk``)
  and configure it to boot from its disk (``vm-configure-disk``);
- install_os: a fresh NoCloud seed instead of an installer, the first boot, its KVP address;
- hyperv_integration: the integration services must all report OK (``integration.verify``);
- validate: the finished package must pass ``gmi-fsm validate`` as importable, then the
  build VM goes.

Compact, export, document and package are the install's: the VHDX is merged, compacted,
exported, checked with Compare-VM, fetched and packaged as a full GMI.
"""

from __future__ import annotations

from orchestrator.hyperv.plan import _TRANSFER_RETRY, HostPlanner
from states.steps import Command, RetryPolicy, Step


class FinishPlanner(HostPlanner):
    def _before_provision(self) -> list[Step]:
        s, h, p = "provision", self.h, self.paths
        return [
            self.ps(
                s,
                "host.preflight",
                "preflight",
                {
                    "VmPath": p.vm_path,
                    "ExportPath": p.export_path,
                    "SwitchName": h.switch,
                    "DiskGiB": h.disk_gib,
                    "IsoPath": "",
                },
                "Hyper-V module, rights, switch, free space",
            ),
            self.op(
                s,
                "source.prepare",
                {},
                "validate the disk-only package (or VHDX), record its digest and event-log head, "
                "extract its disk",
                timeout_s=h.transfer_timeout_s,
                # A bad source stays bad: once is enough.
                retry=RetryPolicy(),
            ),
            self.op(
                s,
                "disk.upload",
                {},
                "put the disk on the host at the build's own disk path (resumable)",
                timeout_s=h.transfer_timeout_s,
                retry=_TRANSFER_RETRY,
            ),
            self.ps(
                s,
                "vm.create",
                "vm-create-from-disk",
                self._vm(VmPath=p.vm_path, MemoryMiB=h.memory_mib, SwitchName=h.switch),
                "New-VM: generation 2 on the uploaded disk",
                check=Command("vm-probe", kind="powershell", params=self._vm(VmPath=p.vm_path)),
            ),
            self.ps(
                s,
                "vm.configure",
                "vm-configure-disk",
                self._vm(
                    MemoryMiB=h.memory_mib,
                    DynamicMemory=h.dynamic_memory,
                    Cpus=h.cpus,
                    SecureBoot=h.secure_boot,
                    SecureBootTemplate=h.secure_boot_template,
                ),
                "memory, CPUs, Secure Boot, no TPM, no automatic checkpoints, boot from the disk",
            ),
        ]

    def _before_install_os(self) -> list[Step]:
        s, h = "install_os", self.h
        return [
            self.op(
                s,
                "seed.upload",
                {"Media": "first-boot"},
                "write a fresh NoCloud seed (new instance id, the build user's key) and put it on the host",
                h.transfer_timeout_s,
                retry=_TRANSFER_RETRY,
            ),
            self.ps(
                s, "seed.attach", "seed-attach", self._vm(SeedPath=self.paths.seed_path), "attach the seed"
            ),
            self.ps(s, "vm.start", "vm-start", self._vm(PressKey=False), "boot the VM from its disk"),
            self.address_step(s, "vm.first-boot"),
        ]

    def _after_hyperv_integration(self) -> list[Step]:
        return [
            self.op(
                "hyperv_integration",
                "integration.verify",
                {},
                "the integration services (heartbeat, KVP, VSS, shutdown, guest services) must all report OK",
                self.h.call_timeout_s,
            )
        ]

    def _after_validate(self) -> list[Step]:
        steps = []
        if self.h.fetch_export:
            steps.append(
                self.op(
                    "validate",
                    "package.validate",
                    {},
                    "`gmi-fsm validate` the finished package: valid and importable by vmgenie",
                    self.h.transfer_timeout_s,
                    retry=RetryPolicy(),
                )
            )
        # Then the install's: the offline inspection of the fetched disk, the VM's removal.
        return [*steps, *super()._after_validate()]

"""QEMU building blocks for building a GMI on a Linux host.

One job per module: ``accel`` (KVM or TCG), ``firmware`` (OVMF), ``seed_iso``
(cloud-init NoCloud seed), ``base_image`` (a UEFI-bootable Debian disk), ``cache``
(that disk built once per machine), ``disk`` (qemu-img; compaction), ``ext4_journal``
(zeroing unused ext4 journals in a raw disk), ``qmp`` (QMP client) and
``vm`` (one qemu child process that dies with its parent).
"""

from orchestrator.qemu._run import QemuToolError
from orchestrator.qemu.accel import AccelChoice, choose_accel
from orchestrator.qemu.base_image import BaseImage, build_debian_base
from orchestrator.qemu.cache import cached_debian_base, lab_cache_dir, lab_ssh_key
from orchestrator.qemu.disk import Compaction, check, compact_to_vhdx, convert_to_vhdx, create_work_copy, info
from orchestrator.qemu.firmware import FirmwareNotFoundError, OvmfFirmware, find_ovmf
from orchestrator.qemu.qmp import QmpClient, QmpError
from orchestrator.qemu.seed_iso import SeedFiles, meta_data, write_seed_iso
from orchestrator.qemu.vm import (
    DirectKernelBoot,
    DiskSpec,
    QemuVm,
    VmConfig,
    VmError,
    VmRecord,
    kill_stale_vm,
    read_vm_record,
)

__all__ = [
    "AccelChoice",
    "BaseImage",
    "Compaction",
    "DirectKernelBoot",
    "DiskSpec",
    "FirmwareNotFoundError",
    "OvmfFirmware",
    "QemuToolError",
    "QemuVm",
    "QmpClient",
    "QmpError",
    "SeedFiles",
    "VmConfig",
    "VmError",
    "VmRecord",
    "build_debian_base",
    "cached_debian_base",
    "check",
    "choose_accel",
    "compact_to_vhdx",
    "convert_to_vhdx",
    "create_work_copy",
    "find_ovmf",
    "info",
    "kill_stale_vm",
    "lab_cache_dir",
    "lab_ssh_key",
    "meta_data",
    "read_vm_record",
    "write_seed_iso",
]

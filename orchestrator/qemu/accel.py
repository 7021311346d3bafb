"""Choose qemu's accelerator: KVM only where it really works, TCG otherwise.

A /dev/kvm node alone proves nothing: nested "PVM" hosts expose it without vmx/svm,
and there ``-accel kvm`` aborts (``failed to set MSR 0x10a``) or runs ~100x slower
than TCG, and qemu does not fall back by itself. So KVM needs both a writable
/dev/kvm and a vmx/svm CPU flag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["AccelChoice", "choose_accel"]

TCG_ARGS: tuple[str, ...] = ("-accel", "tcg,thread=multi", "-cpu", "max")
KVM_ARGS: tuple[str, ...] = ("-accel", "kvm", "-cpu", "host")


@dataclass(frozen=True, slots=True)
class AccelChoice:
    """The qemu arguments for the accelerator, and why it was chosen (for logs)."""

    kind: Literal["kvm", "tcg"]
    args: tuple[str, ...]
    reason: str


def _cpu_virt_flag(cpuinfo: Path) -> str | None:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            for flag in ("vmx", "svm"):
                if flag in flags:
                    return flag
    return None


def choose_accel(
    *,
    kvm_device: Path = Path("/dev/kvm"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> AccelChoice:
    """Return KVM when ``kvm_device`` is writable and the CPU has vmx/svm, else TCG."""
    if not kvm_device.exists():
        return AccelChoice("tcg", TCG_ARGS, f"TCG: {kvm_device} does not exist")
    if not os.access(kvm_device, os.R_OK | os.W_OK):
        return AccelChoice("tcg", TCG_ARGS, f"TCG: {kvm_device} is not writable by this user")
    flag = _cpu_virt_flag(cpuinfo)
    if flag is None:
        return AccelChoice(
            "tcg",
            TCG_ARGS,
            f"TCG: {kvm_device} exists but {cpuinfo} shows no vmx/svm flag "
            "(nested/paravirtual KVM that qemu cannot use well)",
        )
    return AccelChoice("kvm", KVM_ARGS, f"KVM: {kvm_device} writable and CPU has {flag}")

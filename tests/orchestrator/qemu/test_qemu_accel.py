"""choose_accel against real files standing in for /dev/kvm and /proc/cpuinfo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.qemu.accel import KVM_ARGS, TCG_ARGS, choose_accel

CPUINFO_VMX = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr vmx sse sse2\n"
CPUINFO_SVM = "processor\t: 0\nflags\t\t: fpu svm lm\n"
CPUINFO_NONE = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr sse sse2 hypervisor\n"


def _files(tmp_path: Path, cpuinfo: str) -> tuple[Path, Path]:
    kvm = tmp_path / "kvm"
    kvm.write_bytes(b"")
    info = tmp_path / "cpuinfo"
    info.write_text(cpuinfo)
    return kvm, info


@pytest.mark.parametrize(("cpuinfo", "flag"), [(CPUINFO_VMX, "vmx"), (CPUINFO_SVM, "svm")])
def test_kvm_when_device_writable_and_cpu_flag(tmp_path: Path, cpuinfo: str, flag: str) -> None:
    kvm, info = _files(tmp_path, cpuinfo)
    choice = choose_accel(kvm_device=kvm, cpuinfo=info)
    assert choice.kind == "kvm"
    assert choice.args == KVM_ARGS
    assert flag in choice.reason


def test_tcg_when_no_virt_flag(tmp_path: Path) -> None:
    kvm, info = _files(tmp_path, CPUINFO_NONE)
    choice = choose_accel(kvm_device=kvm, cpuinfo=info)
    assert choice.kind == "tcg"
    assert choice.args == ("-accel", "tcg,thread=multi", "-cpu", "max")
    assert "vmx/svm" in choice.reason


def test_tcg_when_no_device(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO_VMX)
    choice = choose_accel(kvm_device=tmp_path / "missing", cpuinfo=info)
    assert choice.kind == "tcg"
    assert "does not exist" in choice.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any file")
def test_tcg_when_device_not_writable(tmp_path: Path) -> None:
    kvm, info = _files(tmp_path, CPUINFO_VMX)
    kvm.chmod(0o400)
    choice = choose_accel(kvm_device=kvm, cpuinfo=info)
    assert choice.kind == "tcg"
    assert "not writable" in choice.reason


def test_this_host_gets_a_consistent_choice() -> None:
    choice = choose_accel()
    flags = Path("/proc/cpuinfo").read_text()
    has_flag = " vmx" in flags or " svm" in flags
    if choice.kind == "kvm":
        assert has_flag
        assert os.access("/dev/kvm", os.W_OK)
    else:
        assert choice.args == TCG_ARGS
        assert choice.reason.startswith("TCG:")

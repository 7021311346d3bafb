"""The Hyper-V host section of a spec: what Hyper-V itself would refuse is refused by
`spec check`, with the field and line."""

from __future__ import annotations

from pathlib import Path

from orchestrator.exit_codes import ExitCode
from tests.support.hyperv_sim import write_build


def test_memory_not_a_multiple_of_2_mib_is_refused(tmp_path: Path) -> None:
    b = write_build(tmp_path / "odd", memory_mib=2049)
    proc = b.cli("spec", "check", str(b.spec_path))
    assert proc.returncode == ExitCode.SPEC_INVALID, proc.stderr
    assert "host.memory_mib" in proc.stderr
    assert "2049 MiB, not a multiple of 2 MiB" in proc.stderr
    assert "use 2048 or 2050" in proc.stderr
    assert "spec.yaml:" in proc.stderr  # the line of the field


def test_memory_in_2_mib_steps_is_accepted(tmp_path: Path) -> None:
    for mib in (512, 2050, 4096):
        b = write_build(tmp_path / str(mib), memory_mib=mib)
        proc = b.cli("spec", "check", str(b.spec_path))
        assert proc.returncode == 0, proc.stderr

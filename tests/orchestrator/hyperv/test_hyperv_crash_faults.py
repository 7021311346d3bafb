"""Crashes and injected failures, with the CLI in a subprocess and the SIMULATOR's
state on disk (shared by the crashed run and its resume)."""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator import builds
from orchestrator.exit_codes import ExitCode
from orchestrator.hyperv.scripts import script_text
from tests.support.hyperv_sim import SimBuild, write_build


def _build_id(b: SimBuild) -> str:
    (bid,) = builds.open_store(b.db).build_ids()
    return bid


def _host_step_starts(b: SimBuild) -> list[tuple[int, str]]:
    """(seq, step id) of every StepStarted of a host step in a clean run."""
    out = []
    for ev in builds.history(builds.open_store(b.db), _build_id(b)):
        if ev.type == "StepStarted" and ev.payload["target"] == "host":
            out.append((ev.seq, f"{ev.payload['stage']}/{ev.payload['step']}"))
    return out


def test_crash_at_every_host_step_then_resume(tmp_path: Path) -> None:
    ref = write_build(tmp_path / "ref")
    code, _, err = ref.run_json("run", str(ref.spec_path))
    assert code == 0, err
    starts = _host_step_starts(ref)
    assert len(starts) >= 18  # every host step of every stage

    def crash_and_resume(item: tuple[int, str]) -> tuple[str, str]:
        seq, step = item
        b = write_build(tmp_path / f"k{seq}")
        crashed = b.cli("run", str(b.spec_path), kill_after_seq=seq)
        if crashed.returncode != -signal.SIGKILL:
            return (
                step,
                f"expected SIGKILL after seq {seq}, got {crashed.returncode}: {crashed.stderr[-500:]}",
            )
        bid = _build_id(b)
        code, out, err = b.run_json("run", "--resume", bid)
        if code != 0:
            return step, f"resume failed ({code}): {out} {err[-800:]}"
        sim = b.sim().snapshot()
        if sim["counters"].get("New-VM") != 1 or sim["counters"].get("Export-VM") != 1:
            return step, f"duplicate work after a crash: {sim['counters']}"
        if sim["vms"]:
            return step, "the build VM was not removed"
        return step, ""

    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = [f"{s}: {p}" for s, p in pool.map(crash_and_resume, starts) if p]
    assert not problems, "\n".join(problems)


def test_effect_done_but_not_recorded_is_found_by_the_check(tmp_path: Path) -> None:
    """vm.create sent, VM made, crash before StepFinished: the check finds the VM."""
    ref = write_build(tmp_path / "ref")
    assert ref.cli("run", str(ref.spec_path)).returncode == 0
    seq = {s: q for q, s in _host_step_starts(ref)}["provision/vm.create"]
    b = write_build(tmp_path / "b")
    assert b.cli("run", str(b.spec_path), kill_after_seq=seq).returncode == -signal.SIGKILL
    bid = _build_id(b)
    # Play the effect the killed run would have had (the VM exists, stamped with the id).
    params = {
        "VmName": "GMI Ubuntu 24.04",
        "BuildId": bid,
        "VmPath": "D:\\GMI\\build",
        "DiskGiB": 32,
        "MemoryMiB": 2048,
        "SwitchName": "Default Switch",
    }
    asyncio.run(b.sim().run(script_text("vm-create"), params, timeout_s=10))
    code, out, err = b.run_json("run", "--resume", bid)
    assert code == 0, (out, err)
    assert b.sim().snapshot()["counters"]["New-VM"] == 1
    outcomes = [
        ev.payload["outcome"]
        for ev in builds.history(builds.open_store(b.db), bid)
        if ev.type == "StepFinished" and ev.payload["step"] == "vm.create"
    ]
    assert "already_done" in outcomes


FAULTS = [
    # (fault, value, extra host spec, expected text in the failure message)
    ("auth_refused", True, {}, "refused the login"),
    ("host_gone", "vm-create", {}, "connection to the Hyper-V host was lost during vm-create"),
    ("kvp_never", True, {"boot_timeout_s": 1}, "hv_kvp_daemon"),
    ("optimize_fails", True, {}, "Optimize-VHD: Failed to compact"),
    ("timeout", "vm-configure", {}, "did not finish within"),
    ("export_exists", None, {}, "already exists and is not this build's export"),
]


@pytest.mark.parametrize(("fault", "value", "host", "text"), FAULTS, ids=[f[0] for f in FAULTS])
def test_injected_failure_is_clear_and_resumable(
    tmp_path: Path, fault: str, value: object, host: dict[str, object], text: str
) -> None:
    b = write_build(tmp_path / "b", **host)
    foreign = "D:\\GMI\\export\\GMI Ubuntu 24.04\\Virtual Machines\\someone-else.vmcx"
    if fault == "export_exists":
        b.sim().put_file(foreign, b"another export")
    else:
        b.sim().set_fault(fault, value)
    code, out, err = b.run_json("run", str(b.spec_path))
    assert code == ExitCode.BUILD_FAILED, (out, err)
    assert out["outcome"] == "failed"
    assert text in out["message"], out["message"]
    assert "SIMULATOR" in err  # never mistaken for a real host
    # Clear the cause; the same build resumes to success without redoing work.
    sim = b.sim()
    sim.clear_faults()
    if fault == "export_exists":
        with sim._locked() as st:  # the operator moved the foreign export away
            st["files"] = {
                k: v for k, v in st["files"].items() if "gmi ubuntu 24.04\\virtual machines\\someone" not in k
            }
    code, out, err = b.run_json("run", "--resume", out["build_id"])
    assert code == 0, (out, err)
    counters = b.sim().snapshot()["counters"]
    assert counters["New-VM"] == 1
    assert counters["Export-VM"] == 1

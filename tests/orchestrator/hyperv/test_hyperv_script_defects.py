"""The script defects a static review found, each played on the SIMULATOR: nested
checkpoints, a VM whose New-VM went through but whose Notes were not set, and a
shutdown the guest refuses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from orchestrator import builds
from orchestrator.engine import Outcome
from orchestrator.hyperv.invoke import ScriptError, run_script
from orchestrator.hyperv.simulator import (
    HyperVSimulator,
    ScriptFailed,
    get_vm_snapshot,
    remove_vm_snapshot,
)
from orchestrator.targets.base import TargetError
from tests.support.hyperv_sim import SimBuild, write_build

VM = "GMI Ubuntu 24.04"
PATHS = {"VmPath": "D:\\GMI\\build"}


def _run(b: SimBuild, bid: str | None = None) -> tuple[str, Outcome, str]:
    store = builds.open_store(b.db)
    if bid is None:
        bid = builds.request(store, builds.prepare(b.spec_path))
    result = asyncio.run(builds.run(store, bid))
    return bid, result.outcome, result.message


def _made_vm(sim: HyperVSimulator, bid: str = "b-1") -> dict[str, object]:
    params = {
        "VmName": VM,
        "BuildId": bid,
        "DiskGiB": 32,
        "MemoryMiB": 2048,
        "SwitchName": "Default Switch",
        **PATHS,
    }
    asyncio.run(run_script(sim, "vm-create", params, timeout_s=10))
    return params


# -- checkpoints-merge: a tree, not a list ----------------------------------------------


def _tree(sim: HyperVSimulator) -> list[str]:
    """root -> a -> b, and a branch root -> c: four checkpoints, nested."""
    root = sim.add_checkpoint(VM)
    a = sim.add_checkpoint(VM)
    b = sim.add_checkpoint(VM)
    c = sim.add_checkpoint(VM, apply_first=root)
    return [root, a, b, c]


def test_the_old_merge_fails_on_nested_checkpoints(tmp_path: Path) -> None:
    # What the old script did, on the simulator's checkpoint model:
    #   Get-VMSnapshot -VM $vm | Remove-VMSnapshot -IncludeAllChildSnapshots
    # The first removal (the root) takes its subtree; the next item is already gone.
    sim = HyperVSimulator(tmp_path / "sim.json")
    _made_vm(sim)
    _tree(sim)
    state = sim.snapshot()  # a copy: the old script's partial work is not kept
    vm = state["vms"][VM.casefold()]

    def old_script() -> None:
        for cp in get_vm_snapshot(vm):
            remove_vm_snapshot(state, vm, cp["id"], include_children=True)

    with pytest.raises(ScriptFailed, match="was not found"):
        old_script()
    assert state["counters"]["Remove-VMSnapshot"] == 1  # the root went, with its subtree


def test_the_merge_removes_a_checkpoint_tree(tmp_path: Path) -> None:
    sim = HyperVSimulator(tmp_path / "sim.json")
    params = _made_vm(sim)
    ids = _tree(sim)
    tree = {c["id"]: c["parent_id"] for c in sim.snapshot()["vms"][VM.casefold()]["checkpoints"]}
    assert tree == {ids[0]: None, ids[1]: ids[0], ids[2]: ids[1], ids[3]: ids[0]}
    done = asyncio.run(
        run_script(
            sim,
            "checkpoints-merge",
            {"VmName": VM, "BuildId": params["BuildId"], "TimeoutSeconds": 30},
            timeout_s=30,
        )
    )
    assert done.facts["hyperv.checkpoints_removed"] == "4"
    state = sim.snapshot()
    vm = state["vms"][VM.casefold()]
    assert vm["checkpoints"] == []
    assert not vm["disks"][0].endswith(".avhdx")
    assert not [f for f in state["files"] if f.endswith(".avhdx")]
    assert state["counters"]["Remove-VMSnapshot"] == 1  # the root took its whole subtree


def test_a_build_merges_nested_checkpoints_before_compaction(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b", install="manual")
    bid, _, _ = _run(b)  # stops at install.operator with the VM created
    sim = b.sim()
    _tree(sim)
    sim.operator_installs(VM)
    _, outcome, msg = _run(b, bid)
    assert outcome is Outcome.SUCCEEDED, msg
    state = builds.load_state(builds.open_store(b.db), bid)
    assert state.facts["hyperv.checkpoints_removed"] == "4"


# -- vm-create: New-VM went through, Set-VM -Notes did not ------------------------------


def test_a_half_made_vm_is_recognised_and_finished_on_the_rerun(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b")
    # The connection is lost right after New-VM: the VM exists, without Notes.
    b.sim().set_fault("host_gone_after", "New-VM")
    bid, outcome, msg = _run(b)
    vm = b.sim().snapshot()["vms"][VM.casefold()]
    assert vm["notes"] == ""
    assert bid in vm["disks"][0]  # the disk's folder carries the build id
    # The step's own retry (or a resume) recognises the VM as this build's and finishes it.
    if outcome is not Outcome.SUCCEEDED:
        _, outcome, msg = _run(b, bid)
    assert outcome is Outcome.SUCCEEDED, msg
    state = b.sim().snapshot()
    assert state["counters"]["New-VM"] == 1  # never a second VM
    events = [e.payload for e in builds.history(builds.open_store(b.db), bid) if e.type == "StepFinished"]
    creates = [e for e in events if e["step"] == "vm.create"]
    assert any("lost" in (e.get("error") or "") for e in creates)
    assert creates[-1]["outcome"] == "succeeded"


def test_the_probe_reports_a_half_made_vm_as_not_done(tmp_path: Path) -> None:
    sim = HyperVSimulator(tmp_path / "sim.json")
    sim.set_fault("host_gone_after", "New-VM")
    with pytest.raises(TargetError, match="went away after New-VM"):
        _made_vm(sim, "b-1")
    probe = asyncio.run(run_script(sim, "vm-probe", {"VmName": VM, "BuildId": "b-1", **PATHS}, timeout_s=10))
    assert probe.exit == 3  # not done: vm-create runs again and finishes it
    # Another build sees a VM that is not its own, and leaves it alone.
    other = asyncio.run(run_script(sim, "vm-probe", {"VmName": VM, "BuildId": "b-2", **PATHS}, timeout_s=10))
    assert other.exit == 2
    with pytest.raises(ScriptError, match="already exists and was not made by this build"):
        _made_vm(sim, "b-2")
    assert sim.snapshot()["vms"][VM.casefold()]["notes"] == ""
    _made_vm(sim, "b-1")
    assert sim.snapshot()["vms"][VM.casefold()]["notes"] == "gmi-fsm build b-1"
    assert sim.snapshot()["counters"]["New-VM"] == 1


def test_a_vm_without_notes_elsewhere_is_never_adopted(tmp_path: Path) -> None:
    # Same name, no Notes, but its disk is not at this build's path: someone else's.
    sim = HyperVSimulator(tmp_path / "sim.json")
    sim.set_fault("host_gone_after", "New-VM")
    with pytest.raises(TargetError):
        _made_vm(sim, "someone-else")
    with pytest.raises(ScriptError, match="already exists and was not made by this build"):
        _made_vm(sim, "b-1")


def test_a_disk_left_by_a_new_vm_that_made_no_vm_is_replaced(tmp_path: Path) -> None:
    sim = HyperVSimulator(tmp_path / "sim.json")
    disk = "D:\\GMI\\build\\GMI Ubuntu 24.04\\Virtual Hard Disks\\b-1\\GMI Ubuntu 24.04.vhdx"
    sim.put_file(disk, b"left over")
    _made_vm(sim, "b-1")
    state = sim.snapshot()
    assert state["vms"][VM.casefold()]["notes"] == "gmi-fsm build b-1"
    assert b"left over" not in state["files"][disk.casefold()]["data"].encode()


# -- vm-wait-off: a refused shutdown is said at once ------------------------------------


def test_a_refused_shutdown_is_surfaced_not_waited_out(tmp_path: Path) -> None:
    sim = HyperVSimulator(tmp_path / "sim.json")
    params = _made_vm(sim)
    with sim._locked() as st:  # running, but the guest never installed: no Shutdown service
        st["vms"][VM.casefold()].update(state="Running", booted="no-os", started_at=time.time())
    t0 = time.monotonic()
    with pytest.raises(ScriptError, match="Stop-VM could not shut the build VM down: .*Shutdown integration"):
        asyncio.run(
            run_script(
                sim,
                "vm-wait-off",
                {"VmName": VM, "BuildId": params["BuildId"], "TimeoutSeconds": 60, "StopIfRunning": True},
                timeout_s=120,
            )
        )
    assert time.monotonic() - t0 < 10  # not the 60 s deadline


def test_a_guest_that_refuses_to_shut_down_fails_the_seal_with_the_reason(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b")
    b.sim().set_fault("shutdown_refused")
    bid, outcome, msg = _run(b)
    assert outcome is Outcome.FAILED
    assert "refused the shutdown request" in msg
    b.sim().clear_faults()
    _, outcome, msg = _run(b, bid)
    assert outcome is Outcome.SUCCEEDED, msg

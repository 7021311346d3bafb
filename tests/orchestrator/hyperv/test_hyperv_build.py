"""The whole Hyper-V path of the state machine, through the SIMULATOR, with the real
engine and a real SQLite event store (host-only plans: the simulator has no guest)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from orchestrator import builds
from orchestrator.engine import Outcome
from tests.support.hyperv_sim import SimBuild, write_build


def _run(b: SimBuild, build_id: str | None = None) -> tuple[str, Outcome, str]:
    store = builds.open_store(b.db)
    if build_id is None:
        build_id = builds.request(store, builds.prepare(b.spec_path))
    result = asyncio.run(builds.run(store, build_id))
    return build_id, result.outcome, result.message


def test_simulated_build_succeeds_and_records_facts(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b", fetch_export=True)
    bid, outcome, msg = _run(b)
    assert outcome is Outcome.SUCCEEDED, msg
    state = builds.load_state(builds.open_store(b.db), bid)
    facts = state.facts
    assert facts["hyperv.guest_ipv4"] == "127.0.0.1"  # link-local and 169.254 entries skipped
    assert facts["hyperv.generation"] == "2"
    assert facts["hyperv.secure_boot"] == "MicrosoftUEFICertificateAuthority"
    assert facts["hyperv.automatic_checkpoints"] == "False"
    for ic in ("heartbeat", "kvp", "vss", "shutdown", "guest_service_interface"):
        assert facts[f"hyperv.ic.{ic}"] == "OK"
    assert facts["export.import_check"] == "ok"
    # The fetched VHDX is the one whose digest the build recorded.
    vhdx = b.dir / "out" / "export" / "GMI Ubuntu 24.04" / "Virtual Hard Disks" / "GMI Ubuntu 24.04.vhdx"
    assert hashlib.sha256(vhdx.read_bytes()).hexdigest() == facts["export.vhdx_sha256"]
    assert b"compacted" in vhdx.read_bytes()
    assert b"installed unattended" in vhdx.read_bytes()
    sim = b.sim().snapshot()
    assert sim["counters"] == {"New-VM": 1, "Export-VM": 1, "Remove-VM": 1}
    assert sim["vms"] == {}  # removed on success
    assert not [f for f in sim["files"] if f.endswith(".avhdx")]
    assert sim["mounted"] == []


def test_seed_media_is_attached_and_removed_before_export(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b")
    _run(b)
    calls = [c["script"] for c in b.sim().snapshot()["calls"]]
    assert calls.index("seed-attach") < calls.index("vm-start") < calls.index("media-eject")
    assert calls.index("media-eject") < calls.index("vm-export")


def test_manual_install_stops_for_the_operator_then_resumes(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b", install="manual")
    bid, outcome, msg = _run(b)
    assert outcome is Outcome.FAILED
    assert "install Ubuntu 24.04 in the console" in msg
    assert f"gmi-fsm run --resume {bid}" in msg
    b.sim().operator_installs("GMI Ubuntu 24.04")
    _, outcome, msg = _run(b, bid)
    assert outcome is Outcome.SUCCEEDED, msg


def test_vm_removed_after_failure_only_when_asked(tmp_path: Path) -> None:
    keep = write_build(tmp_path / "keep")
    keep.sim().set_fault("optimize_fails")
    _, outcome, _ = _run(keep)
    assert outcome is Outcome.FAILED
    assert list(keep.sim().snapshot()["vms"]) == ["gmi ubuntu 24.04"]  # kept for inspection

    drop = write_build(tmp_path / "drop", keep_vm_on_failure=False)
    drop.sim().set_fault("optimize_fails")
    bid, outcome, _ = _run(drop)
    assert outcome is Outcome.FAILED
    assert drop.sim().snapshot()["vms"] == {}
    # The removal is a recorded step of the run's end, after the failure, not an
    # unrecorded call made while the host closed.
    events = list(builds.history(builds.open_store(drop.db), bid))
    failed_at = next(e.seq for e in events if e.type == "StageFailed")
    removal = [
        e
        for e in events
        if e.type == "StepStarted" and e.payload["step"] == "vm.remove" and e.seq > failed_at
    ]
    assert len(removal) == 1 and removal[0].payload["probe"] and removal[0].payload["stage"] == "compact"
    ended = next(e for e in events if e.type == "StepFinished" and e.seq > removal[0].seq)
    assert ended.payload["outcome"] == "succeeded"


def test_checkpoints_are_merged_before_compaction(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b", install="manual")
    bid, _, _ = _run(b)  # stops at install.operator with the VM created
    b.sim().add_checkpoint("GMI Ubuntu 24.04")
    b.sim().operator_installs("GMI Ubuntu 24.04")
    _, outcome, msg = _run(b, bid)
    assert outcome is Outcome.SUCCEEDED, msg
    state = builds.load_state(builds.open_store(b.db), bid)
    assert state.facts["hyperv.checkpoints_removed"] == "1"
    assert not [f for f in b.sim().snapshot()["files"] if f.endswith(".avhdx")]


def test_a_foreign_vm_with_the_same_name_is_never_touched(tmp_path: Path) -> None:
    first = write_build(tmp_path / "b", install="manual")
    _run(first)  # leaves its VM (failed at install.operator)
    # A second build on the same host: the VM of that name is not its own.
    store = builds.open_store(first.db)
    bid2 = builds.request(store, builds.prepare(first.spec_path))
    result = asyncio.run(builds.run(store, bid2))
    assert result.outcome is Outcome.FAILED
    assert "already exists and was not made by this build" in result.message
    assert first.sim().snapshot()["counters"]["New-VM"] == 1

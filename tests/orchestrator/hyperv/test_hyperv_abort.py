"""An abort removes the build VM (Hyper-V through the SIMULATOR), each command recorded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from orchestrator import builds
from orchestrator.engine import Outcome
from tests.support.hyperv_sim import write_build


def test_abort_removes_the_build_vm_and_records_it(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b")
    b.sim().set_fault("optimize_fails")
    store = builds.open_store(b.db)
    bid = builds.request(store, builds.prepare(b.spec_path))
    assert asyncio.run(builds.run(store, bid)).outcome is Outcome.FAILED
    assert list(b.sim().snapshot()["vms"]) == ["gmi ubuntu 24.04"]  # kept after the failure

    proc = b.cli("abort", bid, "--reason", "giving up", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "aborted"
    assert b.sim().snapshot()["vms"] == {}
    events = list(builds.history(builds.open_store(b.db), bid))
    removal = [e for e in events if e.type == "StepStarted" and e.payload["step"] == "vm.remove"]
    assert removal
    assert removal[-1].payload["probe"] is True
    assert events[-1].type == "BuildAborted"
    assert events[-1].payload["reason"] == "giving up"
    assert b.cli("verify", bid).returncode == 0
    assert b.cli("replay", bid).returncode == 0


def test_abort_keep_leaves_the_vm(tmp_path: Path) -> None:
    b = write_build(tmp_path / "b")
    b.sim().set_fault("optimize_fails")
    store = builds.open_store(b.db)
    bid = builds.request(store, builds.prepare(b.spec_path))
    asyncio.run(builds.run(store, bid))
    assert b.cli("abort", bid, "--keep").returncode == 0
    assert list(b.sim().snapshot()["vms"]) == ["gmi ubuntu 24.04"]

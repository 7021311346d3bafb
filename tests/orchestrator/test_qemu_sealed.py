"""A real build left dirty on purpose: a hook just before the seal leaves a file the
seal cannot remove (immutable). The seal step must fail naming that leftover, keep the
VM up and reachable (the build's access is removed last), and leave the build resumable.
The other two ways the contract is checked run in test_qemu_build.py (boot, offline) and
tests/states/test_sealed_image.py (every item, one at a time)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.orchestrator.test_qemu_build import build_id_of, lab, status, write_spec  # noqa: F401 - fixture
from tests.support.cli import run_cli

pytestmark = pytest.mark.vm

PLANT = """touch /root/.bash_history
echo 'cat /secret' > /root/.bash_history
chattr +i /root/.bash_history
"""


@pytest.mark.timeout(2400)
def test_a_dirty_build_fails_at_seal_naming_the_leftover(tmp_path: Path, lab: dict[str, Any]) -> None:  # noqa: F811
    db = tmp_path / "events.db"
    spec = write_spec(
        tmp_path,
        lab,
        prepare={"update": False, "free_space": "none"},
        hooks=[
            {
                "name": "leave-a-history",
                "stage": "seal",
                "when": "before",
                "target": "guest",
                "sudo": True,
                "run": PLANT,
            }
        ],
    )
    run = run_cli("run", spec, "--json", db=db, timeout=2000)
    assert run.returncode != 0, run.stdout[-2000:]
    build_id = build_id_of(db)
    st = status(db, build_id)
    assert st["status"] == "seal", st

    # The seal's listing is in the event log (the step's recorded output).
    history = run_cli("history", build_id, "--json", db=db)
    assert history.returncode == 0, history.stderr
    text = history.stdout
    assert "leftover shell-histories: /root/.bash_history" in text
    # Only that item: everything else the contract lists was removed and checked.
    assert set(re.findall(r"leftover ([a-z0-9-]+):", text)) == {"shell-histories"}
    assert "ok ssh-host-keys" not in text  # the access items were not reached: still reachable
    assert "the guest stays up" in text

    # The build's access was not removed: the guest still answers as the build user.
    out = tmp_path / "out" / ".work" / build_id
    from orchestrator.qemu.vm import read_vm_record  # noqa: PLC0415

    record = read_vm_record(out / "vm")
    assert record is not None and record.is_running(), "the seal powered the VM off despite a leftover"
    aborted = run_cli("abort", build_id, "--yes", db=db, timeout=600)
    assert aborted.returncode == 0, aborted.stderr[-2000:]
    assert not record.is_running()

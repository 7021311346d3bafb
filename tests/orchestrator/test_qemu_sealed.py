"""A real build left dirty on purpose: a hook just before the seal leaves a file the
seal cannot remove (immutable). The seal step must fail naming that leftover and not power
off; the build's access is removed last, so a resume logs in again and names it again.
The other two ways the contract is checked run in test_qemu_build.py (boot, offline) and
tests/states/test_sealed_image.py (every item, one at a time)."""

from __future__ import annotations

import json
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
    assert st["status"] == "failed" and st["stage"] == "seal", st

    # The seal's listing is in the event log (the step's recorded output).
    history = run_cli("history", build_id, "--json", db=db)
    assert history.returncode == 0, history.stderr
    text = history.stdout
    assert "leftover shell-histories: /root/.bash_history" in text
    # Only that item: everything else the contract lists was removed and checked.
    assert set(re.findall(r"leftover ([a-z0-9-]+):", text)) == {"shell-histories"}
    assert "ok ssh-host-keys" not in text  # the access items were not reached: still reachable
    assert "the build can still log in" in text
    st = status(db, build_id)
    assert "left: shell-histories: /root/.bash_history" in st["reason"], st  # the error names it too

    # The build's access is intact: a resume boots the VM, logs in as the build user and
    # runs the seal again, which names the same leftover (not a refused login).
    again = run_cli("run", "--resume", build_id, db=db, timeout=1500)
    assert again.returncode != 0
    history = run_cli("history", build_id, "--json", db=db).stdout
    seals = [
        e for e in json.loads(history) if e["type"] == "StepFinished" and e["step"] == "seal-and-power-off"
    ]
    assert [e["exit_code"] for e in seals] == [3, 3], seals
    assert all("leftover shell-histories" in (e["stdout"] or {}).get("head", "") for e in seals)
    aborted = run_cli("abort", build_id, db=db, timeout=600)
    assert aborted.returncode == 0, aborted.stderr[-2000:]

"""Interrupting a run for real: SIGTERM twice in quick succession still ends with exit
130 (never the shell's 143 for "killed by SIGTERM"), the build resumable; and a runner
killed with SIGKILL while it spools a long output leaves no file in TMPDIR.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from support.cli import build_ids, run_cli, start_cli, write_spec

from orchestrator.exit_codes import ExitCode

BLOCK = {
    "name": "block",
    "stage": "provision",
    "idempotent": True,
    "run": "touch started; if [ ! -e go ]; then sleep 30; fi",
}


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@pytest.mark.parametrize("gap_ms", [0, 1, 5, 10, 20, 50, 100, 200])
def test_two_sigterms_close_together_exit_130(tmp_path: Path, gap_ms: int) -> None:
    work = tmp_path / "w"
    db = work / "events.db"
    spec = write_spec(work, [BLOCK], name="sig")
    proc = start_cli("run", spec, db=db)
    try:
        _wait_for(work / "started")
        # At once: even a cancel while asyncio still connects the hook's pipes ends the
        # hook's whole tree (its supervisor dies, its command with it), so nothing is
        # left for the runner to wait on.
        proc.send_signal(signal.SIGTERM)
        time.sleep(gap_ms / 1000)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.INTERRUPTED, (proc.returncode, err)
    assert "Traceback" not in err
    (build_id,) = build_ids(db)
    assert run_cli("verify", build_id, db=db).returncode == 0
    (work / "go").touch()
    resumed = run_cli("run", "--resume", build_id, db=db)
    assert resumed.returncode == 0, resumed.stderr


def test_sigkill_while_spooling_leaves_no_file_in_tmpdir(tmp_path: Path) -> None:
    """20 kB of output outgrows the event's 4 KiB head, so it is spooled while the
    step runs; the runner is killed with SIGKILL before the step ends."""
    work = tmp_path / "w"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    db = work / "events.db"
    hook = {
        "name": "talk",
        "stage": "provision",
        "idempotent": True,
        "run": "head -c 20000 /dev/zero | tr '\\0' x; echo; touch started; sleep 30; : \"$1\"",
        "args": [f"marker-{tmp_path.name}"],
    }
    spec = write_spec(work, [hook], name="spool")
    proc = start_cli("run", spec, db=db, env={"TMPDIR": str(tmpdir)})
    try:
        _wait_for(work / "started")
        time.sleep(0.5)  # the output is read and spooled by now
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The hook's processes die with the runner (the step supervisor), so nothing can
    # still be writing into TMPDIR.
    deadline = time.monotonic() + 10
    while _running(f"marker-{tmp_path.name}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(f"marker-{tmp_path.name}"), "the hook outlived its killed runner"
    assert sorted(p.name for p in tmpdir.iterdir()) == []


def _running(marker: str) -> bool:
    for proc in Path("/proc").iterdir():
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False

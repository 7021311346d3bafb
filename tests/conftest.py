"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Without tests/__init__.py, pytest ("prepend" import mode) puts tests/ itself on
# sys.path to import this file; there tests/orchestrator would shadow the real
# `orchestrator` package (the editable install's finder runs after the path finder).
# The repo root first makes `orchestrator`, `states`, `events` and `tests.support.*`
# resolve to the right places with `pytest` and `python -m pytest` alike.
_REPO = str(Path(__file__).resolve().parent.parent)
if sys.path[:1] != [_REPO]:
    sys.path.insert(0, _REPO)

from tests.support.sshd import SshdServer, sshd_unavailable_reason, start_sshd  # noqa: E402


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshdServer]:
    """A real OpenSSH server on 127.0.0.1 (see tests/support/sshd.py), stopped after."""
    reason = sshd_unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


# Real VMs run under software emulation on 2 cores: two test sessions booting VMs at
# once (two worktrees, or a developer's run beside CI's) make both time out. A session
# that will boot VMs first takes this machine-wide lock and holds it to its end.
_VM_LOCK = os.environ.get("GMI_FSM_VM_LOCK", "/tmp/gmi-fsm-vm.lock")


@pytest.fixture(scope="session", autouse=True)
def _one_vm_session_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    if not any(item.get_closest_marker("vm") for item in request.session.items):
        yield
        return
    fd = os.open(_VM_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.stderr.write(f"\nwaiting for {_VM_LOCK}: another test session is booting VMs\n")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

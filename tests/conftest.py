"""Fixtures shared by the whole test suite."""

from __future__ import annotations

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

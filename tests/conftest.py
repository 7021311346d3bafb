"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

try:  # tests/ is a plain directory (pytest puts it on sys.path) or a package
    from support.sshd import SshdServer, sshd_unavailable_reason, start_sshd
except ImportError:  # pragma: no cover - depends on the layout
    from tests.support.sshd import SshdServer, sshd_unavailable_reason, start_sshd


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

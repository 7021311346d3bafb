"""Every shipped example spec is valid: `gmi-fsm spec check` accepts it."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import run_cli

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples_for_every_os_family_and_an_iso_install() -> None:
    text = "\n".join(p.read_text() for p in EXAMPLES)
    for family in ("family: apt", "family: dnf", "family: zypper"):
        assert family in text
    assert "iso:" in text


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_spec_is_valid(spec: Path) -> None:
    result = run_cli("spec", "check", spec, db=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": ok (GMI-" in result.stdout

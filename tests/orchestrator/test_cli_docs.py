"""docs/cli.md is checked against the CLI: every command and subcommand has a heading,
every exit code is in the table, and the file is what scripts/gen-cli-docs.py makes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

from orchestrator.cli.main import _register, cli
from orchestrator.exit_codes import DESCRIPTIONS, ExitCode

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cli.md"
SCRIPT = ROOT / "scripts" / "gen-cli-docs.py"


def _commands(group: click.Group, prefix: str = "gmi-fsm") -> list[str]:
    _register()
    out: list[str] = []
    ctx = click.Context(group, info_name=prefix)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        out.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            out += _commands(command, f"{prefix} {name}")
    return out


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_has_a_heading() -> None:
    text = DOC.read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,4} `([^`]+)`$", text, flags=re.MULTILINE))
    commands = _commands(cli)
    assert {"gmi-fsm run", "gmi-fsm resume", "gmi-fsm verify", "gmi-fsm spec check"} <= set(commands)
    missing = [c for c in commands if c not in headings]
    assert not missing, f"docs/cli.md has no heading for {missing}; run python scripts/gen-cli-docs.py"


@pytest.mark.parametrize("code", list(ExitCode), ids=[c.name for c in ExitCode])
def test_every_exit_code_is_in_the_table(code: ExitCode) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"| {int(code)} | `{code.name}` | {DESCRIPTIONS[code]} |" in text


def test_every_exit_code_has_a_description() -> None:
    assert set(DESCRIPTIONS) == set(ExitCode)


def test_docs_are_up_to_date() -> None:
    expected = _generator().render()
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/cli.md is stale: run python scripts/gen-cli-docs.py"
    )


def test_generator_check_mode() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr

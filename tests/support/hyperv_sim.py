"""Helpers for the Hyper-V tests: a spec that selects the SIMULATOR, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from orchestrator.hyperv.simulator import HyperVSimulator


@dataclass
class SimBuild:
    dir: Path
    spec_path: Path
    db: Path
    state: Path

    def sim(self) -> HyperVSimulator:
        return HyperVSimulator(self.state, kvp_delay_s=0.05, install_delay_s=0.05)

    def cli(
        self, *args: str, kill_after_seq: int | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GMI_FSM_")}
        if kill_after_seq is not None:
            env["GMI_FSM_FAULT_KILL_AFTER_SEQ"] = str(kill_after_seq)
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "--db", str(self.db), *args],
            cwd=self.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """The CLI started in the background (for a test that kills it at a moment it chooses)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GMI_FSM_")}
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "--db", str(self.db), *args],
            cwd=self.dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run_json(self, *args: str, **kw: Any) -> tuple[int, dict[str, Any], str]:
        proc = self.cli(*args, "--json", **kw)
        text = proc.stdout.strip()
        return proc.returncode, (json.loads(text) if text.startswith("{") else {}), proc.stderr


def write_build(root: Path, **host: Any) -> SimBuild:
    root.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(root / "key"))
    (root / "installer.iso").write_bytes(b"FAKE INSTALLER ISO\n" * 100)
    host_spec: dict[str, Any] = {
        "kind": "hyperv",
        "host": "hv.example.test",
        "vm_path": "D:\\GMI\\build",
        "export_path": "D:\\GMI\\export",
        "boot_timeout_s": 3,
        "install_timeout_s": 5,
        "shutdown_timeout_s": 5,
        "simulator": {"state": "sim.json", "kvp_delay_s": 0.05},
    }
    host_spec.update(host)
    spec = {
        "name": "hv-test",
        "os": {"name": "Ubuntu", "version": "24.04", "family": "apt"},
        "host": host_spec,
        "source": {"iso": "installer.iso"},
        "guest": {"user": "genie", "ssh_private_key": "file:key"},
        "output": {"dir": "out"},
    }
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    build = SimBuild(root, spec_path, root / "events.db", root / "sim.json")
    build.sim()  # create the state file so tests can inject faults before the first run
    return build


@pytest.fixture
def sim_build(tmp_path: Path) -> SimBuild:
    return write_build(tmp_path / "b")

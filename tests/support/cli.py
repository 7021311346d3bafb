"""Helpers for tests that drive ``gmi-fsm`` as a real subprocess on a real SQLite file.

``run_cli`` runs ``[sys.executable, "-m", "orchestrator.cli", ...]`` with ``GMI_FSM_DB``
pointing at the test's database and the fault-injection variable cleared unless the
test sets it. ``write_spec`` writes a local-host spec whose hooks run on this machine.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "orchestrator.cli"]


def write_spec(
    folder: Path,
    hooks: Sequence[Mapping[str, Any]] = (),
    *,
    name: str = "test-local",
    filename: str = "spec.yaml",
    **extra: Any,
) -> Path:
    """A local-host spec in ``folder`` (hooks run with ``folder`` as their cwd)."""
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "name": name,
        "os": {"name": "Debian", "version": "12", "family": "apt"},
        "host": {"kind": "local"},
        "hooks": [dict(h) for h in hooks],
        **extra,
    }
    path = folder / filename
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def cli_env(db: Path | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMI_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if db is not None:
        env["GMI_FSM_DB"] = str(db)
    env.update(extra or {})
    return env


def run_cli(
    *args: str | Path,
    db: Path | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``gmi-fsm ARGS`` to its end; never raises on a non-zero exit."""
    return subprocess.run(
        [*CLI, *map(str, args)],
        env=cli_env(db, env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_cli(
    *args: str | Path, db: Path | None, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *map(str, args)],
        env=cli_env(db, env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli_json(*args: str | Path, db: Path | None, env: Mapping[str, str] | None = None) -> Any:
    """Run a command with ``--json``; assert it succeeded; return the parsed output."""
    proc = run_cli(*args, "--json", db=db, env=env)
    assert proc.returncode == 0, f"gmi-fsm {args} exited {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout)


def build_ids(db: Path) -> list[str]:
    """Build ids straight from the events table (works even after a crash)."""
    conn = sqlite3.connect(db)  # closed, not only committed (`with` would leave it open)
    try:
        return [
            r[0] for r in conn.execute("SELECT build_id FROM events GROUP BY build_id ORDER BY MIN(position)")
        ]
    finally:
        conn.close()


def event_rows(db: Path, build_id: str | None = None) -> list[tuple[str, int, str, str]]:
    """(build_id, seq, type, payload) of every event, in storage order."""
    query = "SELECT build_id, seq, type, payload FROM events"
    params: tuple[str, ...] = ()
    if build_id is not None:
        query += " WHERE build_id = ?"
        params = (build_id,)
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute(query + " ORDER BY position", params))
    finally:
        conn.close()


def count_events(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "events" not in tables:
            return 0
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()

"""Where things live by default (XDG base directories)."""

from __future__ import annotations

import os
from pathlib import Path

DB_ENV = "GMI_FSM_DB"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gmi-fsm"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gmi-fsm"


def default_db() -> Path:
    """``--db`` wins, then ``$GMI_FSM_DB``, then the XDG state directory."""
    env = os.environ.get(DB_ENV)
    return Path(env) if env else state_dir() / "events.db"

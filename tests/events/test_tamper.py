"""Tampering with the event log is found: `gmi-fsm verify` exits 9 and names the first
bad seq; the append-only triggers refuse edits while they exist; and a stream whose
hashes were forged correctly is still refused by `replay` (the machine's grammar).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import cli_json, run_cli, write_spec

from events.chain import event_hash

Tamper = Callable[[sqlite3.Connection, int], int]
"""Change the log of a build with N events; return the seq verify must name."""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    """A succeeded local build, its WAL folded into the main file so it can be copied."""
    work = tmp_path_factory.mktemp("tamper")
    db = work / "events.db"
    spec = write_spec(work, [{"name": "hello", "stage": "provision", "run": "echo hello"}])
    proc = run_cli("run", spec, "--json", db=db)
    assert proc.returncode == 0, proc.stderr
    build_id = json.loads(proc.stdout)["build_id"]
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    conn.close()
    return db, build_id, n


def _copy(built: tuple[Path, str, int], tmp_path: Path) -> Path:
    db = tmp_path / "copy.db"
    shutil.copyfile(built[0], db)
    return db


def _drop_triggers(conn: sqlite3.Connection) -> None:
    for name in ("events_no_update", "events_no_delete"):
        conn.execute(f"DROP TRIGGER {name}")


def edit_payload(conn: sqlite3.Connection, n: int) -> int:
    conn.execute("UPDATE events SET payload = replace(payload, 'echo hello', 'rm -rf /') WHERE seq = 3")
    assert conn.total_changes == 1
    return 3


def delete_middle(conn: sqlite3.Connection, n: int) -> int:
    conn.execute("DELETE FROM events WHERE seq = 6")
    return 6


def delete_last(conn: sqlite3.Connection, n: int) -> int:
    conn.execute("DELETE FROM events WHERE seq = ?", (n,))
    return n


def forge_row_at_end(conn: sqlite3.Connection, n: int) -> int:
    build_id, prev = conn.execute("SELECT build_id, hash FROM events WHERE seq = ?", (n,)).fetchone()
    conn.execute(
        "INSERT INTO events (build_id, seq, type, at, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (build_id, n + 1, "FactRecorded", "2030-01-01T00:00:00.000000Z", '{"key":"k"}', prev, "f" * 64),
    )
    return n + 1


def forge_row_in_the_middle(conn: sqlite3.Connection, n: int) -> int:
    """Shift seq 5..n up by one and slip a row in at 5 (the unique index stays happy)."""
    build_id, prev = conn.execute("SELECT build_id, hash FROM events WHERE seq = 4").fetchone()
    conn.execute("UPDATE events SET seq = -seq WHERE seq >= 5")
    conn.execute("UPDATE events SET seq = 1 - seq WHERE seq < 0")
    conn.execute(
        "INSERT INTO events (build_id, seq, type, at, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (build_id, 5, "FactRecorded", "2030-01-01T00:00:00.000000Z", '{"key":"k"}', prev, "f" * 64),
    )
    return 5


def reorder_two_rows(conn: sqlite3.Connection, n: int) -> int:
    """Swap the storage positions of seq 7 and 8."""
    (p7,) = conn.execute("SELECT position FROM events WHERE seq = 7").fetchone()
    (p8,) = conn.execute("SELECT position FROM events WHERE seq = 8").fetchone()
    conn.execute("UPDATE events SET position = -1 WHERE position = ?", (p7,))
    conn.execute("UPDATE events SET position = ? WHERE position = ?", (p7, p8))
    conn.execute("UPDATE events SET position = ? WHERE position = -1", (p8,))
    return 7


def swap_two_seqs(conn: sqlite3.Connection, n: int) -> int:
    """Swap the seq numbers of rows 9 and 10 (rows keep their storage order)."""
    conn.execute("UPDATE events SET seq = -1 WHERE seq = 9")
    conn.execute("UPDATE events SET seq = 9 WHERE seq = 10")
    conn.execute("UPDATE events SET seq = 10 WHERE seq = -1")
    return 9


def edit_the_head(conn: sqlite3.Connection, n: int) -> int:
    conn.execute("UPDATE heads SET hash = ?", ("e" * 64,))
    return n


@pytest.mark.parametrize(
    "tamper",
    [
        edit_payload,
        delete_middle,
        delete_last,
        forge_row_at_end,
        forge_row_in_the_middle,
        reorder_two_rows,
        swap_two_seqs,
        edit_the_head,
    ],
)
def test_verify_names_the_first_bad_seq(built: tuple[Path, str, int], tmp_path: Path, tamper: Tamper) -> None:
    _, build_id, n = built
    db = _copy(built, tmp_path)
    assert run_cli("verify", build_id, db=db).returncode == 0  # intact before
    conn = sqlite3.connect(db, isolation_level=None)
    _drop_triggers(conn)
    bad_seq = tamper(conn, n)
    conn.close()

    proc = run_cli("verify", build_id, "--json", db=db)
    assert proc.returncode == 9, proc.stderr
    (report,) = json.loads(proc.stdout)
    assert report["ok"] is False
    assert report["first_bad_seq"] == bad_seq, report
    assert report["reason"]


def test_text_output_all_and_audit_show_the_break(built: tuple[Path, str, int], tmp_path: Path) -> None:
    _, build_id, n = built
    db = _copy(built, tmp_path)
    conn = sqlite3.connect(db, isolation_level=None)
    _drop_triggers(conn)
    edit_payload(conn, n)
    conn.close()
    text = run_cli("verify", build_id, db=db)
    assert text.returncode == 9
    assert f"BAD   {build_id}: first bad seq 3: its content does not match its hash (edited)" in text.stdout
    assert run_cli("verify", "--all", db=db).returncode == 9
    audit = run_cli("audit", build_id, db=db)
    assert audit.returncode == 0  # the audit still reports, and says the chain is broken
    assert "**BROKEN at seq 3**" in audit.stdout


def test_reasons_say_what_happened(built: tuple[Path, str, int], tmp_path: Path) -> None:
    _, build_id, n = built
    expected = {
        edit_payload: "does not match its hash (edited)",
        delete_middle: "expected seq 6, found seq 7 (a row was deleted, inserted or moved)",
        delete_last: f"the log ends at seq {n - 1} but its recorded head is seq {n}",
    }
    for i, (tamper, reason) in enumerate(expected.items()):
        db = tmp_path / f"r{i}.db"
        shutil.copyfile(built[0], db)
        conn = sqlite3.connect(db, isolation_level=None)
        _drop_triggers(conn)
        tamper(conn, n)
        conn.close()
        (report,) = json.loads(run_cli("verify", build_id, "--json", db=db).stdout)
        assert reason in report["reason"]


def test_triggers_refuse_update_and_delete(built: tuple[Path, str, int], tmp_path: Path) -> None:
    _, build_id, _n = built
    db = _copy(built, tmp_path)
    conn = sqlite3.connect(db, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="events are append-only: rows cannot be updated"):
        conn.execute("UPDATE events SET payload = '{}' WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="events are append-only: rows cannot be deleted"):
        conn.execute("DELETE FROM events WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="events are append-only: rows cannot be deleted"):
        conn.execute("DELETE FROM events")
    conn.close()
    assert run_cli("verify", build_id, db=db).returncode == 0


def _rehash_from(conn: sqlite3.Connection, build_id: str, seq: int) -> None:
    """What a careful forger does: recompute every hash from ``seq`` on, and the head."""
    (prev,) = conn.execute(
        "SELECT hash FROM events WHERE build_id = ? AND seq = ?", (build_id, seq - 1)
    ).fetchone()
    rows = conn.execute(
        "SELECT position, seq, type, at, payload FROM events WHERE build_id = ? AND seq >= ? ORDER BY seq",
        (build_id, seq),
    ).fetchall()
    for position, s, type_, at, payload in rows:
        h = event_hash(build_id, s, type_, at, payload, prev)
        conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE position = ?", (prev, h, position))
        prev = h
    conn.execute("UPDATE heads SET hash = ? WHERE build_id = ?", (prev, build_id))


def test_replay_refuses_a_correctly_rehashed_illegal_stream(
    built: tuple[Path, str, int], tmp_path: Path
) -> None:
    _, build_id, _n = built
    db = _copy(built, tmp_path)
    conn = sqlite3.connect(db, isolation_level=None)
    _drop_triggers(conn)
    (seq,) = conn.execute(
        "SELECT seq FROM events WHERE type = 'StageEntered' AND payload = '{\"stage\":\"install_os\"}'"
    ).fetchone()
    conn.execute('UPDATE events SET payload = \'{"stage":"update"}\' WHERE seq = ?', (seq,))
    _rehash_from(conn, build_id, seq)
    conn.close()

    assert cli_json("verify", build_id, db=db)[0]["ok"] is True  # the chain alone cannot tell
    proc = run_cli("replay", build_id, db=db)
    assert proc.returncode == 9
    assert f"build {build_id}: event seq {seq} is not a legal move" in proc.stderr
    assert "'enter_update' is not allowed in state 'provision'" in proc.stderr
    as_json = run_cli("replay", build_id, "--json", db=db)
    assert as_json.returncode == 9
    assert json.loads(as_json.stdout)["first_bad_seq"] == seq
    # Replaying up to just before the forgery is fine.
    assert run_cli("replay", build_id, "--until", str(seq - 1), db=db).returncode == 0
    # Every command that folds the stream refuses it the same way.
    for command in ("status", "audit", "resume"):
        proc = run_cli(command, build_id, db=db)
        assert proc.returncode == 9, (command, proc.stderr)
        assert f"event seq {seq} is not a legal move" in proc.stderr

"""`verify` beyond the hash chain:

- it re-hashes every stored output blob a build's events reference: a rewritten (or
  deleted) ``blob_chunks`` row is caught, naming the event(s) that reference it;
- it catches a head rewound over deleted events (the last events deleted and the
  ``heads`` row moved back: the chain alone is then valid) wherever a record of the
  later head exists: the exported event log, the provenance statement, the manifest
  or ``gmi-metadata.yml`` in the build's output folder;
- ``verify --against FILE`` compares a build with an exported event log (what a
  package carries) and names the first divergence (missing, extra or different
  event, by seq).

The packaged builds are real runs of the engine through the Hyper-V SIMULATOR (a named
simulator: the only simulated part), whose document and package stages write the
real output folder.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import build_ids, count_events, event_rows, run_cli, write_spec

from events.chain import event_hash
from orchestrator import builds
from orchestrator.exit_codes import ExitCode
from tests.support.hyperv_sim import write_build

NAME = "GMI-Ubuntu-24.04"
TALK = {"name": "talk", "stage": "provision", "idempotent": True, "run": "seq 1 5000"}  # 23,893 bytes


def _verify(db: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = run_cli("verify", *args, "--json", db=db)
    data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, data, proc.stderr


def _sql(db: Path, *statements: str, params: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for trigger in ("events_no_update", "events_no_delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        for s in statements:
            conn.execute(s, params if "?" in s else ())
    finally:
        conn.close()


def _blob_referrers(db: Path, build_id: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for _b, seq, type_, payload in event_rows(db, build_id):
        p = json.loads(payload)
        for stream in ("stdout", "stderr"):
            d = p.get(stream) if type_ == "StepFinished" else None
            if d and d["size"] > 4096:
                out.setdefault(d["sha256"], []).append(seq)
    return out


# -- blobs -------------------------------------------------------------------------------


@pytest.fixture
def talked(tmp_path: Path) -> tuple[Path, str, str, list[int]]:
    """A build whose step printed 23 kB (stored as a blob), run twice in two builds so the
    blob is referenced by two events."""
    work = tmp_path / "w"
    db = work / "events.db"
    for _ in range(2):
        proc = run_cli("run", write_spec(work, [TALK], name="talk"), db=db)
        assert proc.returncode == 0, proc.stderr
    first = build_ids(db)[0]
    ((sha, seqs),) = _blob_referrers(db, first).items()
    return db, first, sha, seqs


def test_intact_blobs_verify(talked: tuple[Path, str, str, list[int]]) -> None:
    db, build_id, sha, _seqs = talked
    rc, (report,), err = _verify(db, build_id)
    assert rc == 0, (report, err)
    assert report["blobs_checked"] == 1


@pytest.mark.parametrize("how", ["rewrite-chunk", "delete-blob", "truncate-chunk"])
def test_a_tampered_blob_is_caught_naming_its_events(
    talked: tuple[Path, str, str, list[int]], how: str
) -> None:
    db, build_id, sha, seqs = talked
    if how == "rewrite-chunk":
        _sql(
            db,
            "UPDATE blob_chunks SET data = replace(data, X'343939390a', X'343939380a') WHERE sha256 = ?",
            params=(sha,),
        )
        reason = "does not match its sha256 (rewritten)"
    elif how == "truncate-chunk":
        _sql(db, "UPDATE blob_chunks SET data = substr(data, 1, 100) WHERE sha256 = ?", params=(sha,))
        reason = "does not match its sha256 (rewritten)"
    else:
        _sql(
            db,
            "DELETE FROM blob_chunks WHERE sha256 = ?",
            "DELETE FROM blobs WHERE sha256 = ?",
            params=(sha,),
        )
        reason = "is missing from the database"
    rc, (report,), _err = _verify(db, build_id)
    assert rc == ExitCode.VERIFY_FAILED, report
    assert report["ok"] is False
    assert report["first_bad_seq"] == seqs[0]
    (problem,) = [p for p in report["problems"] if p["kind"] == "blob"]
    assert problem["seq"] == seqs[0]
    assert sha[:16] in problem["detail"] and reason in problem["detail"]
    assert f"stdout of seq {seqs[0]}" in problem["detail"]
    text = run_cli("verify", build_id, db=db)
    assert text.returncode == ExitCode.VERIFY_FAILED
    assert f"BAD   {build_id}: first bad seq {seqs[0]}" in text.stdout
    assert sha[:16] in text.stdout
    # --all names it for the other build that references the same content, too.
    assert run_cli("verify", "--all", db=db).stdout.count(sha[:16]) == 2


def test_a_resume_refuses_a_rewritten_blob(tmp_path: Path) -> None:
    work = tmp_path / "w"
    db = work / "events.db"
    proc = run_cli(
        "run", write_spec(work, [TALK, {"name": "gate", "stage": "update", "run": "test -e ok"}]), db=db
    )
    assert proc.returncode == ExitCode.BUILD_FAILED, proc.stderr
    (build_id,) = build_ids(db)
    ((sha, seqs),) = _blob_referrers(db, build_id).items()
    _sql(db, "UPDATE blob_chunks SET data = X'00' WHERE sha256 = ?", params=(sha,))
    before = count_events(db)
    (work / "ok").touch()
    resumed = run_cli("run", "--resume", build_id, db=db)
    assert resumed.returncode == ExitCode.VERIFY_FAILED, resumed.stderr
    assert f"fails verification at seq {seqs[0]}" in resumed.stderr
    assert count_events(db) == before


# -- a head rewound over deleted events ----------------------------------------------------


@pytest.fixture
def packaged(tmp_path: Path) -> tuple[Path, Path, str]:
    """A finished Hyper-V (simulated) build with its package in out/: (database, output
    folder, build id)."""
    b = write_build(tmp_path / "b", fetch_export=True)
    store = builds.open_store(b.db)
    try:
        build_id = builds.request(store, builds.prepare(b.spec_path))
        result = asyncio.run(builds.run(store, build_id))
        assert result.outcome.value == "succeeded", result.message
    finally:
        store.close()
    return b.db, b.dir / "out", build_id


def _recorded_head(out: Path) -> tuple[int, str]:
    """The head the package's sidecar records (gmi-metadata.yml, event_log)."""
    m = yaml.safe_load((out / "gmi-metadata.yml").read_text())
    return m["event_log"]["seq"], m["event_log"]["head_hash"]


def _rehash_from(db: Path, build_id: str, seq: int) -> None:
    """What a careful forger does: recompute every hash from ``seq`` on, and the head."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        row = conn.execute(
            "SELECT hash FROM events WHERE build_id = ? AND seq = ?", (build_id, seq - 1)
        ).fetchone()
        prev = row[0] if row else "0" * 64
        rows = conn.execute(
            "SELECT position, seq, type, at, payload FROM events WHERE build_id = ? AND seq >= ? ORDER BY seq",
            (build_id, seq),
        ).fetchall()
        for position, s, type_, at, payload in rows:
            h = event_hash(build_id, s, type_, at, payload, prev)
            conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE position = ?", (prev, h, position))
            prev = h
        conn.execute("UPDATE heads SET hash = ? WHERE build_id = ?", (prev, build_id))
    finally:
        conn.close()


def _rewind(db: Path, build_id: str, to_seq: int) -> None:
    """Delete every event after ``to_seq`` and move the head back: the chain that is
    left is intact, and the heads row agrees with it."""
    _sql(db, "DELETE FROM events WHERE seq > ?", params=(to_seq,))
    conn = sqlite3.connect(db, isolation_level=None)
    (h,) = conn.execute(
        "SELECT hash FROM events WHERE build_id = ? AND seq = ?", (build_id, to_seq)
    ).fetchone()
    conn.execute("UPDATE heads SET seq = ?, hash = ? WHERE build_id = ?", (to_seq, h, build_id))
    conn.close()


RECORDS = {  # which records are deleted, so that only the named one is left
    "all": (),
    "sidecar-only": (f"{NAME}.events.jsonl", f"{NAME}.intoto.json", f"{NAME}.yml"),
    "provenance-only": (f"{NAME}.events.jsonl", f"{NAME}.yml", "gmi-metadata.yml"),
    "event-log-only": (f"{NAME}.intoto.json", f"{NAME}.yml", "gmi-metadata.yml"),
}


@pytest.mark.parametrize("kept", sorted(RECORDS))
def test_a_rewound_head_is_caught_by_the_package_records(packaged: tuple[Path, Path, str], kept: str) -> None:
    db, out, build_id = packaged
    assert _verify(db, build_id)[0] == 0
    recorded_seq, _ = _recorded_head(out)
    for name in RECORDS[kept]:
        (out / name).unlink()
    _rewind(db, build_id, recorded_seq - 10)
    # The chain alone is intact now: the old check passes.
    store = builds.open_store(db, readonly=True)
    assert store.verify(build_id).ok
    store.close()

    rc, (report,), err = _verify(db, build_id)

    assert rc == ExitCode.VERIFY_FAILED, (report, err)
    assert report["first_bad_seq"] == recorded_seq - 9
    (problem, *_) = [p for p in report["problems"] if p["kind"] == "rewound"]
    assert f"the database ends at seq {recorded_seq - 10}" in problem["detail"]
    assert f"records seq {recorded_seq}" in problem["detail"]
    assert str(out) in problem["detail"]
    assert any(str(out) in c for c in report["consulted"])
    # ...and nothing runs on it.
    assert run_cli("run", "--resume", build_id, db=db).returncode == ExitCode.VERIFY_FAILED


def test_head_fields_of_an_older_package_are_read_too(packaged: tuple[Path, Path, str]) -> None:
    """Packages made before the sidecar kept the head as flat keys in the manifest
    (build_id, event_log_seq, event_log_head_hash): they still count as a record."""
    db, out, build_id = packaged
    seq, head = _recorded_head(out)
    manifest = yaml.safe_load((out / f"{NAME}.yml").read_text())
    manifest.update(build_id=build_id, event_log_seq=seq, event_log_head_hash=head)
    (out / f"{NAME}.yml").write_text(yaml.safe_dump(manifest))
    for name in (f"{NAME}.events.jsonl", f"{NAME}.intoto.json", "gmi-metadata.yml"):
        (out / name).unlink()
    assert _verify(db, build_id)[0] == 0
    _rewind(db, build_id, seq - 1)
    rc, (report,), _err = _verify(db, build_id)
    assert rc == ExitCode.VERIFY_FAILED
    (problem,) = [p for p in report["problems"] if p["kind"] == "rewound"]
    assert f"{NAME}.yml (manifest)" in problem["detail"]


def test_a_rehashed_history_differs_from_the_exported_log(packaged: tuple[Path, Path, str]) -> None:
    """A careful forger edits an early event and re-hashes everything after it (and the
    head): the chain is intact, but the exported log, the manifest and the provenance
    statement record other hashes."""
    db, out, build_id = packaged
    _sql(db, "UPDATE events SET payload = replace(payload, '\"hv-test\"', '\"hv-evil\"') WHERE seq = 1")
    _rehash_from(db, build_id, 1)
    rc, (report,), _err = _verify(db, build_id)
    assert rc == ExitCode.VERIFY_FAILED, report
    assert report["first_bad_seq"] == 1
    kinds = {p["kind"] for p in report["problems"]}
    assert kinds == {"record"}, report["problems"]
    details = " ".join(p["detail"] for p in report["problems"])
    assert f"{NAME}.events.jsonl" in details and "seq 1 differs" in details
    assert f"{NAME}.intoto.json" in details


def test_records_of_another_build_are_ignored(packaged: tuple[Path, Path, str], tmp_path: Path) -> None:
    db, out, build_id = packaged
    # A second build (its own simulated host) writes its package into the same folder,
    # recording its events in the same database.
    other = write_build(tmp_path / "other", fetch_export=True)
    spec = yaml.safe_load(other.spec_path.read_text())
    spec["output"]["dir"] = str(out)
    other.spec_path.write_text(yaml.safe_dump(spec))
    shutil.rmtree(out / "export")  # the first build's fetched export, cleared away
    store = builds.open_store(db)
    try:
        second = builds.request(store, builds.prepare(other.spec_path))
        result = asyncio.run(builds.run(store, second))
        assert result.outcome.value == "succeeded", result.message
    finally:
        store.close()
    rc, (report,), err = _verify(db, build_id)
    assert rc == 0, (report, err)
    assert any("another build's" in c or "no head of this build" in c for c in report["consulted"]), report
    assert _verify(db, second)[0] == 0


# -- verify --against ----------------------------------------------------------------------


def test_against_the_packages_own_log(packaged: tuple[Path, Path, str]) -> None:
    db, out, build_id = packaged
    seq, _ = _recorded_head(out)
    log = out / f"{NAME}.events.jsonl"
    rc, (report,), err = _verify(db, build_id, "--against", str(log))
    assert rc == 0, (report, err)
    assert report["against"] == {"file": str(log), "events": seq, "first_divergence": None}
    text = run_cli("verify", build_id, "--against", str(log), db=db)
    assert text.returncode == 0
    assert f"matches {log} (seq 1 to {seq})" in text.stdout


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _write_lines(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records))


@pytest.mark.parametrize("how", ["database-rewound", "file-has-more", "event-differs", "file-lacks-one"])
def test_against_names_the_first_divergence(
    packaged: tuple[Path, Path, str], tmp_path: Path, how: str
) -> None:
    db, out, build_id = packaged
    log = tmp_path / "exported.events.jsonl"
    shutil.copyfile(out / f"{NAME}.events.jsonl", log)
    records = _lines(log)
    n = len(records)
    if how == "database-rewound":
        _rewind(db, build_id, n - 5)
        expect = (n - 4, "missing", f"seq {n - 4} is in {log} but not in the database")
    elif how == "file-has-more":
        # The file goes on past the database's head (a later export of a longer history).
        _rewind(db, build_id, n - 1)
        expect = (n, "missing", f"seq {n} is in {log} but not in the database")
    elif how == "event-differs":
        _sql(db, "UPDATE events SET payload = replace(payload, '\"hv-test\"', '\"hv-evil\"') WHERE seq = 1")
        _rehash_from(db, build_id, 1)
        expect = (1, "different", "seq 1 differs")
    else:
        del records[7]  # seq 8
        _write_lines(log, records)
        expect = (8, "extra", f"seq 8 is in the database but not in {log}")
    rc, (report,), err = _verify(db, build_id, "--against", str(log))
    assert rc == ExitCode.VERIFY_FAILED, (report, err)
    first = report["against"]["first_divergence"]
    assert (first["seq"], first["kind"]) == expect[:2], first
    assert expect[2] in first["detail"], first
    assert report["first_bad_seq"] == expect[0] or how == "file-lacks-one"
    text = run_cli("verify", build_id, "--against", str(log), db=db)
    assert text.returncode == ExitCode.VERIFY_FAILED
    assert f"first divergence at seq {expect[0]}" in text.stdout


def test_against_refuses_another_builds_log_and_junk(
    packaged: tuple[Path, Path, str], tmp_path: Path
) -> None:
    db, out, build_id = packaged
    other = tmp_path / "other.events.jsonl"
    _write_lines(other, [{**r, "build_id": "someone-else"} for r in _lines(out / f"{NAME}.events.jsonl")])
    proc = run_cli("verify", build_id, "--against", str(other), db=db)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert f"{other} is the event log of build someone-else, not {build_id}" in proc.stderr
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"seq": 1}\nnot json\n')
    proc = run_cli("verify", build_id, "--against", str(junk), db=db)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert f"{junk}: line 1 is not an event record" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("verify", "--all", "--against", str(junk), db=db)
    assert proc.returncode == ExitCode.USAGE
    assert "--against needs a build ID" in proc.stderr

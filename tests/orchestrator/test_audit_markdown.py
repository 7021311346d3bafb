"""Audit markdown and the package readme cannot be spoofed by what they report.

A real build runs commands, arguments, facts, an operator's note and a failure whose
text hold code fences (longer than three backticks too), table pipes, newlines
followed by ``# headings``, ``<script>`` and ``[links](elsewhere)``. The markdown is
then parsed with a CommonMark parser (markdown-it-py, GFM tables on): its structure
must be exactly the report's own (its headings, one table row per command, one code
block per command holding that command verbatim), and the content must show up as
text, never as HTML, a link or a heading.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.cli import build_ids, run_cli, write_spec
from support.markdown_check import (
    COMMAND,
    EVIL_LINES,
    assert_no_markup_from_content,
    headings,
    inline_texts,
    parser,
    text_of,
)

HOOKS: list[dict[str, Any]] = [
    {
        "name": "evil",
        "stage": "provision",
        "idempotent": True,
        "facts": True,
        "run": COMMAND,
        "args": ["```", "a|b\nc", "<script>", "[x](y)"],
    },
    # Not idempotent, no check: a crash after its start pauses the build.
    {"name": "pause", "stage": "install_os", "run": "true"},
    {
        "name": "fail",
        "stage": "update",
        "run": "printf 'nope\\n| injected | row |\\n<script>alert(2)</script> [x](http://evil.example)\\n' >&2; "
        "exit 1",
    },
]


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # The spec's folder (and so its path, printed by the audit) holds markup too.
    work = tmp_path_factory.mktemp("audit") / "w `x` [y](z) <b>|"
    db = work.parent / "events.db"
    spec = write_spec(work, HOOKS, name="evil")
    clean = run_cli("run", spec, "--json", db=db)
    assert clean.returncode == 4, clean.stderr  # the last hook fails
    (build_id,) = build_ids(db)
    # A second build, paused by a crash, decided with a note, then failed the same way.
    db2 = work.parent / "paused.db"
    rows = json.loads(run_cli("history", build_id, "--json", db=db).stdout)
    pause_started = next(
        r["seq"] for r in rows if r["type"] == "StepStarted" and r["step"] == "hook.after.pause"
    )
    crash = run_cli("run", spec, db=db2, env={"GMI_FSM_FAULT_KILL_AFTER_SEQ": str(pause_started)})
    assert crash.returncode == -9
    (paused_id,) = build_ids(db2)
    assert run_cli("run", "--resume", paused_id, db=db2).returncode == 5
    decided = run_cli("resume", paused_id, "--decision", "skip", "--note", EVIL_LINES, db=db2)
    assert decided.returncode == 4, decided.stderr
    return {
        "md": run_cli("audit", paused_id, db=db2).stdout,
        "json": json.loads(run_cli("audit", paused_id, "--format", "json", db=db2).stdout),
    }


def test_audit_structure_is_the_reports_own(audited: dict[str, Any]) -> None:
    text, report = audited["md"], audited["json"]
    tokens = assert_no_markup_from_content(text)
    assert headings(tokens) == [
        ("h1", f"Audit of build {report['build_id']}"),
        ("h2", "Commands"),
        ("h3", "Command text"),
        ("h2", "Facts"),
        ("h2", "Artifacts"),
        ("h2", "Operator decisions"),
    ]


def test_audit_table_has_one_row_of_nine_cells_per_command(audited: dict[str, Any]) -> None:
    text, report = audited["md"], audited["json"]
    tokens = parser().parse(text)
    body = tokens[next(i for i, t in enumerate(tokens) if t.type == "tbody_open") :]
    rows: list[list[str]] = []
    for i, t in enumerate(body):
        if t.type == "tbody_close":
            break
        if t.type == "tr_open":
            rows.append([])
        elif t.type == "td_open":
            rows[-1].append(text_of(body[i + 1]))
    assert len(rows) == len(report["commands"])
    assert all(len(r) == 9 for r in rows), rows
    assert [r[2] for r in rows] == [
        c["step"] + (" (probe)" if c["kind"] == "probe" else "") for c in report["commands"]
    ]


def test_every_command_is_shown_verbatim_in_its_own_code_block(audited: dict[str, Any]) -> None:
    text, report = audited["md"], audited["json"]
    fences = [t for t in parser().parse(text) if t.type == "fence"]
    assert len(fences) == len(report["commands"])
    for f, c in zip(fences, report["commands"], strict=True):
        assert f.content.startswith(c["command"] + "\n"), (f.content, c["command"])
    evil = next(f for f, c in zip(fences, report["commands"], strict=True) if c["step"] == "hook.after.evil")
    assert evil.content.startswith(COMMAND + "\n")


def test_facts_notes_and_reasons_read_as_text(audited: dict[str, Any]) -> None:
    text, report = audited["md"], audited["json"]
    inline = inline_texts(assert_no_markup_from_content(text))
    facts = report["facts"]
    assert facts["fact.html"] == "<script>alert(1)</script>"
    for key in ("fact.fence", "fact.html", "fact.link", "fact.pipe", "fact.`tick`|key"):
        assert any(key in line and facts[key] in line for line in inline), (key, inline)
    note = report["decisions"][0]["note"]
    assert note == EVIL_LINES
    assert any(note.replace("\n", "\u2424") in line for line in inline)
    assert "| injected | row |" in report["reason"] or "<script>alert(2)</script>" in report["reason"]
    assert any(report["reason"] in line for line in inline)

"""The package readme cannot be spoofed by the facts, spec values and commands it
reports (see tests/orchestrator/test_audit_markdown.py for the audit)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from support.cli import write_spec
from support.markdown_check import (
    COMMAND,
    EVIL,
    EVIL_LINES,
    assert_no_markup_from_content,
    headings,
    inline_texts,
)

from events.model import ArtifactRecorded, FactRecorded
from orchestrator import builds
from orchestrator.gmi.hashing import sha256_file
from orchestrator.gmi.operations import make_operations
from orchestrator.recorder import BuildRecorder
from tests.support.gmi_fixtures import DISK_NAMES, FACTS, NAMES


def test_readme_structure_survives_evil_facts_and_commands(tmp_path: Path, vhdx_master: Path) -> None:
    spec_dir = tmp_path / "spec"
    spec_path = write_spec(
        spec_dir,
        [{"name": "evil", "stage": "update", "run": COMMAND}],
        name="gmi-test",
        manifest={"maintainer": EVIL, "maintainer_email": "t@example.org", "description": EVIL_LINES},
        output={"dir": "out", "formats": ["zip"]},
    )
    db = tmp_path / "events.db"
    store = builds.open_store(db)
    try:
        bid = builds.request(store, builds.prepare(spec_path))
        asyncio.run(builds.run(store, bid))
        disk = tmp_path / f"{NAMES.vm_name}.vhdx"
        shutil.copyfile(vhdx_master, disk)
        facts = {**FACTS, "os.pretty_name": EVIL_LINES, "kernel.release": EVIL}
        recorder = BuildRecorder(store, bid)
        recorder.record(*(FactRecorded(key=k, value=v, source="test") for k, v in facts.items()))
        sha, size = sha256_file(disk)
        recorder.record(ArtifactRecorded(name="vhdx", path=str(disk), sha256=sha, size=size, kind="disk"))
        spec, base = builds.frozen_spec(builds.load_state(store, bid))
        result = asyncio.run(
            make_operations(store, bid, spec, base_dir=base)["gmi.document"]({}, lambda *_: None)
        )
        assert result.ok, result.error
    finally:
        store.close()
    text = (spec_dir / "out" / DISK_NAMES.readme).read_text()  # no Export-VM folder: disk-only
    tokens = assert_no_markup_from_content(text)
    heads = headings(tokens)
    assert heads[0][0] == "h1" and heads[0][1].startswith(f"{DISK_NAMES.stem}: first line")
    assert [h for h in heads if h[0] == "h1"] == [heads[0]]
    assert [h[1] for h in heads if h[0] == "h2"] == [
        "What it is",
        "How it was built",
        "Caveats",
        "How to use it",
        "Checksums",
    ]
    inline = inline_texts(tokens)
    assert any(EVIL in line for line in inline), inline  # the kernel cell, as text
    assert any(COMMAND.splitlines()[0] in line for line in inline)

"""Golden tests of the scripts and the exact calls a build sends, and proof that
user values reach the host only as bound parameters, never as script text.

Regenerate the golden files after an intended change with
``GMI_FSM_UPDATE_GOLDEN=1 pytest tests/orchestrator/hyperv/test_hyperv_scripts.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from orchestrator import builds
from orchestrator.engine import Outcome
from orchestrator.hyperv import connect
from orchestrator.hyperv.executor import PowerShellExecutor, PsResult
from orchestrator.hyperv.scripts import SCRIPT_NAMES, param_names, script_name, script_text
from tests.support.hyperv_sim import write_build

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("GMI_FSM_UPDATE_GOLDEN") == "1"


class Recording:
    """Wraps an executor and keeps every (script text, params) it is sent."""

    def __init__(self, inner: PowerShellExecutor) -> None:
        self.inner = inner
        self.label = inner.label
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.inputs: list[list[str] | None] = []

    async def run(
        self,
        script: str,
        params: Mapping[str, object],
        *,
        timeout_s: float,
        input: Sequence[str] | None = None,
    ) -> PsResult:
        self.calls.append((script, dict(params)))
        self.inputs.append(None if input is None else list(input))
        return await self.inner.run(script, params, timeout_s=timeout_s, input=input)

    async def close(self) -> None:
        await self.inner.close()


def _recorded_build(tmp: Path, monkeypatch: pytest.MonkeyPatch, **host: object) -> tuple[str, Recording]:
    b = write_build(tmp, **host)
    switch = host.get("switch")
    if switch:
        with b.sim()._locked() as st:
            st["switches"].append(switch)
    holder: dict[str, Recording] = {}
    real = connect.executor_for

    def recording_executor(spec, base_dir):  # type: ignore[no-untyped-def]
        holder["rec"] = Recording(real(spec, base_dir))
        return holder["rec"]

    monkeypatch.setattr(connect, "executor_for", recording_executor)
    store = builds.open_store(b.db)
    bid = builds.request(store, builds.prepare(b.spec_path))
    result = asyncio.run(builds.run(store, bid))
    assert result.outcome is Outcome.SUCCEEDED, result.message
    return bid, holder["rec"]


def _normalized(bid: str, calls: list[tuple[str, dict[str, object]]]) -> list[dict[str, object]]:
    out = []
    for text, params in calls:
        norm: dict[str, object] = {}
        for k, v in params.items():
            if v == bid:
                v = "<build-id>"
            elif isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v):
                v = "<sha256>"
            elif isinstance(v, str):  # the simulated VM's random id in export file names
                v = re.sub(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}", "<vm-id>", v)
            norm[k] = v
        out.append({"script": script_name(text), "params": norm})
    return out


def _compare(path: Path, text: str) -> None:
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="")
        if not UPDATE:
            pytest.fail(f"golden file {path} was missing and has been written; check it in and rerun")
    assert text == path.read_text(encoding="utf-8"), f"{path} differs (GMI_FSM_UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_text_is_golden(name: str) -> None:
    text = script_text(name)
    _compare(GOLDEN / "scripts" / f"{name}.ps1", text)
    # The fixed preamble is there, after the param block (PowerShell wants param first).
    assert text.startswith("param(")
    assert "$ErrorActionPreference = 'Stop'" in text
    assert text.index("$ErrorActionPreference") > text.index(")\n")
    assert "ConvertTo-Json -Depth 5 -Compress" in text
    assert param_names(name), f"{name} declares no parameters"


def test_calls_of_a_whole_build_are_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bid, rec = _recorded_build(tmp_path / "b", monkeypatch, fetch_export=True)
    for text, params in rec.calls:
        name = script_name(text)
        assert name is not None
        assert text == script_text(name)
        assert set(params) == set(param_names(name)), name
    _compare(
        GOLDEN / "calls.json", json.dumps(_normalized(bid, rec.calls), indent=1, ensure_ascii=False) + "\n"
    )


NASTY = 'it\'s "q" $(Remove-Item C:\\ -Recurse); `whoami` & | > @{a=1} [x]*?\n# ✓ ünï 名前 ${env:PATH}'


def test_user_values_are_never_script_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, clean = _recorded_build(tmp_path / "clean", monkeypatch)
    _, nasty = _recorded_build(
        tmp_path / "nasty",
        monkeypatch,
        vm_path="D:\\GMI\\" + NASTY,
        export_path="E:\\" + NASTY + "\\export",
        switch="sw " + NASTY,
        secure_boot_template=NASTY,
        iso_path="D:\\iso\\" + NASTY + ".iso",
    )
    texts = {script_name(t): t for t, _ in clean.calls}
    seen_in_params = False
    for text, params in nasty.calls:
        name = script_name(text)
        assert name is not None, "a script text was altered"
        assert text == texts.get(name, script_text(name))  # byte-identical whatever the values
        for fragment in ("Remove-Item C:", "whoami", "名前", "it's"):
            assert fragment not in text
        seen_in_params |= any(isinstance(v, str) and NASTY in v for v in params.values())
    assert seen_in_params
    assert len(nasty.calls) == len(clean.calls)

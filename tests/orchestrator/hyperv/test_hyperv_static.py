"""Static checks of every shipped script, as sent (preamble inserted), since no
PowerShell runs here: it parses with a PowerShell grammar, uses only Windows PowerShell
5.1 syntax, every command binds to exactly one parameter set of its documented
signature (ps_signatures/*.yaml, read from Microsoft's published reference), and
nothing but the one result object reaches the output stream. For each kind of check, an
error of that kind planted in a copy of a script is caught.

The checks live in tests/support/pscheck/; docs/hyperv.md says how to add a cmdlet.
"""

from __future__ import annotations

import re

import pytest
import tree_sitter as ts
import tree_sitter_powershell as tsp
import yaml

from orchestrator.hyperv.scripts import SCRIPT_NAMES, script_text
from tests.support.pscheck import Finding, check
from tests.support.pscheck.parse import Script, lowercase_multipliers
from tests.support.pscheck.signatures import TABLES, load_signatures


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_passes_every_check(name: str) -> None:
    findings = check(script_text(name))
    assert not findings, f"scripts/{name}.ps1:\n" + "\n".join(map(str, findings))


def test_the_signature_tables_name_their_source() -> None:
    tables = sorted(TABLES.glob("*.yaml"))
    assert {t.name for t in tables} >= {
        "windows-server-2022.yaml",
        "windows-powershell-5.1.yaml",
        "common-parameters.yaml",
    }
    for table in tables:
        data = yaml.safe_load(table.read_text(encoding="utf-8"))
        src = data["source"]
        assert src["repository"].startswith("MicrosoftDocs/"), table.name
        assert re.fullmatch(r"[0-9a-f]{40}", src["commit"]), table.name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", src["commit_date"]), table.name
        for name, cmdlet in data.get("cmdlets", {}).items():
            assert cmdlet["document"].endswith(f"{name}.md"), name
            assert cmdlet["sets"] and cmdlet["default_set"] in cmdlet["sets"], name
            assert cmdlet["emits"] in ("none", "passthru", "always"), name
    sigs = load_signatures()
    assert sigs.cmdlet("New-VM") is not None and sigs.cmdlet("where-object") is not None
    assert "ProgressAction" not in {p.name for p in sigs.common.values()}  # PowerShell 7.4


def test_the_grammar_needs_the_multiplier_workaround() -> None:
    # tree-sitter-powershell reads 1gb but not 1GB; PowerShell reads both. The checker
    # lower-cases such suffixes (same length, same value) before parsing.
    raw = "$a = 4 * 1GB\n$b = 2MB\n"
    tree = ts.Parser(ts.Language(tsp.language())).parse(raw.encode())
    assert tree.root_node.has_error
    assert lowercase_multipliers(raw) == "$a = 4 * 1gb\n$b = 2mb\n"
    assert not Script(raw).root.has_error
    assert lowercase_multipliers("'1GB' $x.GB 0x1GB") == "'1gb' $x.GB 0x1GB"  # only numbers


# -- planted errors: each kind is caught ----------------------------------------------------


def _planted(name: str, old: str, new: str) -> list[Finding]:
    text = script_text(name)
    assert old in text, f"{old!r} is not in scripts/{name}.ps1"
    assert not check(text)
    return check(text.replace(old, new, 1))


def _caught(findings: list[Finding], kind: str, fragment: str) -> None:
    hits = [f for f in findings if f.kind == kind and fragment in f.message]
    assert hits, f"no {kind} finding with {fragment!r} in:\n" + "\n".join(map(str, findings))


def test_a_parse_error_is_caught() -> None:
    findings = _planted("vm-start", "if ($vm.State -eq 'Running') {", "if ($vm.State -eq 'Running' {")
    assert any(f.kind == "parse" for f in findings)


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("$ok = (Test-Path", "$ok = $null ?? (Test-Path", "null-coalescing operator ??"),
        ("$ok = (Test-Path", "$ok ??= (Test-Path", "null-coalescing assignment ??="),
        ("if ($ok) {", "if ($ok?.Length) {", "null-conditional"),
        ("if ($ok) {", "if ($ok ? $true : $false) {", "ternary"),
        ("$marker = Join-Path $final 'gmi-fsm-export.json'", "Get-Date && Get-Date", "&&"),
        ("$marker = Join-Path $final 'gmi-fsm-export.json'", "Get-Date || Get-Date", "||"),
        (
            "$marker = Join-Path $final 'gmi-fsm-export.json'",
            "Start-Sleep -Seconds 1 &",
            "background operator",
        ),
    ],
    ids=["??", "??=", "?.", "ternary", "&&", "||", "&"],
)
def test_powershell_7_operators_are_caught(old: str, new: str, fragment: str) -> None:
    _caught(_planted("export-probe", old, new), "ps51", fragment)


def test_powershell_7_parallel_and_clean_are_caught() -> None:
    findings = _planted("file-list", "ForEach-Object {\n", "ForEach-Object -Parallel {\n")
    _caught(findings, "ps51", "-Parallel")
    findings = _planted(
        "file-list",
        "function Out-GmiResult {\n",
        "function Out-GmiResult {\n    clean { Remove-Item -LiteralPath 'x' }\n",
    )
    _caught(findings, "ps51", "clean {} block")


@pytest.mark.parametrize(
    ("name", "old", "new", "fragment"),
    [
        ("vm-start", "Start-VM -VM $vm", "Start-VM -VN $vm", "Start-VM has no parameter -VN"),
        ("vm-start", "Start-VM -VM $vm", "Start-VM", "binds to no parameter set"),
        ("vm-start", "Start-VM -VM $vm", "Start-VM -VM $vm -Name x", "binds to no parameter set"),
        ("vm-start", "Start-VM -VM $vm", "Start-VMNow -VM $vm", "Start-VMNow is not in the signature table"),
        (
            "checkpoints-merge",
            "Remove-VMSnapshot -VMSnapshot $left[0] -IncludeAllChildSnapshots",
            "$left | Remove-VMSnapshot -IncludeAllChildSnapshots",
            "ambiguous between parameter sets VMObject, SnapshotObject",
        ),
        (
            "export-probe",
            "ConvertFrom-Json)",
            "ConvertFrom-Json -AsHashtable)",  # PowerShell 6+
            "ConvertFrom-Json has no parameter -AsHashtable",
        ),
        (
            "vm-configure",
            "-EnableSecureBoot Off",
            "-EnableSecureBoot Maybe",
            "-EnableSecureBoot cannot take 'Maybe'",
        ),
        ("vm-create", '-Notes "gmi-fsm build $BuildId"', "-Notes", "-Notes needs a value"),
        ("vm-start", "Start-Sleep -Milliseconds 700", "Start-Sleep { 700 }", "binds to no parameter set"),
    ],
    ids=[
        "unknown-param",
        "no-set",
        "two-sets",
        "unknown-cmdlet",
        "ambiguous",
        "ps7-param",
        "value",
        "no-value",
        "kind",
    ],
)
def test_binding_errors_are_caught(name: str, old: str, new: str, fragment: str) -> None:
    _caught(_planted(name, old, new), "binding", fragment)


@pytest.mark.parametrize(
    ("name", "old", "new", "fragment"),
    [
        (
            "file-write-pieces",
            "-Path $dir -Force | Out-Null",
            "-Path $dir -Force",
            "New-Item returns objects",
        ),
        ("vm-start", "Start-VM -VM $vm", "Start-VM -VM $vm -Passthru", "Start-VM returns objects"),
        ("vm-start", "Start-VM -VM $vm", "Write-Output 'starting'\nStart-VM -VM $vm", "Write-Output writes"),
        ("vm-start", "Start-VM -VM $vm", "$vm\nStart-VM -VM $vm", "the value of '$vm'"),
        (
            "vm-start",
            "Start-VM -VM $vm",
            "Find-GmiVM -Name $VmName\nStart-VM -VM $vm",
            "Find-GmiVM returns a value",
        ),
        ("preflight", "[void]$problems.Add('the", "$problems.Add('the", "the value of"),
        (
            "vm-wait-off",
            "$job = Stop-VM -VM $vm -Force -AsJob",
            "Stop-VM -VM $vm -Force -AsJob",
            "-AsJob returns a job",
        ),
        (
            "vm-start",
            "    Out-GmiResult -Message 'already running'\n    return\n",
            "    Out-GmiResult -Message 'already running'\n",
            "Out-GmiResult is not the script's last word",
        ),
        ("vm-start", "Out-GmiResult -Message 'started'", "return 'started'", "writes its value"),
        (
            "file-commit",
            "Out-GmiResult -Facts @{ sha256 = $hash }",
            "$null = @{ sha256 = $hash }",
            "never writes its result",
        ),
    ],
    ids=[
        "cmdlet",
        "passthru",
        "write-output",
        "expression",
        "function",
        "method",
        "asjob",
        "two-results",
        "return",
        "no-result",
    ],
)
def test_output_stream_errors_are_caught(name: str, old: str, new: str, fragment: str) -> None:
    _caught(_planted(name, old, new), "output", fragment)

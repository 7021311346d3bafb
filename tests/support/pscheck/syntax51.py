"""Windows PowerShell 5.1 syntax only: the constructs PowerShell 6 and 7 added are
refused, each with the version that brought it (about_Operators, about_Pipeline_Chain_
Operators, about_Functions_Advanced_Methods of PowerShell 7.x; none is in 5.1's).

Operators are found in the source with strings, here-strings and comments blanked out
(the grammar reads several of them as errors, so the tree alone cannot name them);
``-Parallel`` and ``clean {}`` blocks are found in the tree.
"""

from __future__ import annotations

import re

from tests.support.pscheck.findings import Finding
from tests.support.pscheck.parse import Script, line, text

_OPAQUE = {
    "comment",
    "string_literal",
    "expandable_string_literal",
    "verbatim_string_characters",
    "expandable_here_string_literal",
    "verbatim_here_string_characters",
}

# (pattern on the blanked source, what it is, the version that added it)
_OPERATORS = (
    (re.compile(r"\?\?="), "the null-coalescing assignment ??=", "7.0"),
    (re.compile(r"\?\?(?!=)"), "the null-coalescing operator ??", "7.0"),
    (re.compile(r"(?<=[\w)\]}])\?[.\[]"), "a null-conditional member or index access ?. / ?[]", "7.1"),
    (re.compile(r"&&"), "the pipeline chain operator &&", "7.0"),
    (re.compile(r"\|\|"), "the pipeline chain operator ||", "7.0"),
    # A ? after an operand and before an operand: the ternary a ? b : c. (A ? that starts a
    # command, after | { ; ( or a line start, is Where-Object's alias, valid in 5.1.)
    (re.compile(r"(?<=[\w)\]}'\"])[ \t]+\?[ \t]+(?=\S)"), "the ternary operator a ? b : c", "7.0"),
    (
        re.compile(r"(?<![&|])&[ \t]*(?=$|;|\})", re.MULTILINE),
        "the background operator & at a pipeline's end",
        "6.0",
    ),
)


def blanked(script: Script) -> str:
    """The source with strings and comments replaced by spaces (same positions)."""
    chars = bytearray(script.source)
    for n in script.nodes():
        if n.type in _OPAQUE:
            for i in range(n.start_byte, n.end_byte):
                if chars[i] not in (0x0A, 0x0D):
                    chars[i] = 0x20
    return chars.decode("utf-8", errors="replace")


def check_syntax51(script: Script) -> list[Finding]:
    found: list[Finding] = []
    source = blanked(script)
    for pattern, what, version in _OPERATORS:
        for m in pattern.finditer(source):
            found.append(
                Finding(
                    "ps51",
                    source.count("\n", 0, m.start()) + 1,
                    f"{what} is PowerShell {version} syntax; Windows PowerShell 5.1 does not have it",
                )
            )
    for n in script.of_type("pipeline_chain_tail"):
        found.append(Finding("ps51", line(n), f"{text(n)} chains pipelines: PowerShell 7.0 syntax"))
    for n in script.of_type("command_parameter"):
        if text(n).lower().rstrip(":") == "-parallel":
            found.append(Finding("ps51", line(n), "-Parallel (ForEach-Object -Parallel) is PowerShell 7.0"))
    for n in script.of_type("command"):
        name = next((text(c) for c in n.children if c.type == "command_name"), "")
        if name.lower() == "clean" and "{" in text(n):
            found.append(Finding("ps51", line(n), "a clean {} block is PowerShell 7.3 syntax"))
    # Both the operator scan and the tree may see the same && / ||: say it once per line.
    unique: dict[tuple[int, str], Finding] = {}
    for f in found:
        key = (f.line, "chain" if "chain" in f.message else f.message)
        unique.setdefault(key, f)
    return list(unique.values())

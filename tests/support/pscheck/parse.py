"""A script parsed with tree-sitter-powershell (PyPI ``tree-sitter-powershell``).

The grammar knows the numeric multiplier suffixes only in lower case (``1kb``, ``1mb``,
``1gb``, ``1tb``, ``1pb``): ``1GB`` is an ERROR node, although PowerShell reads the
suffixes in any case (about_Numeric_Literals). Before parsing, such suffixes are put in
lower case: the same length, so every position stays where it was, and the same value
for PowerShell. Nothing else is changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache

import tree_sitter as ts
import tree_sitter_powershell as tsp

from tests.support.pscheck.findings import Finding

_SUFFIX = re.compile(r"(?i)(?<![\w$.])(\d+(?:\.\d+)?)(kb|mb|gb|tb|pb)\b")


def lowercase_multipliers(text: str) -> str:
    return _SUFFIX.sub(lambda m: m.group(1) + m.group(2).lower(), text)


@cache
def _parser() -> ts.Parser:
    return ts.Parser(ts.Language(tsp.language()))


class Script:
    """One script's text and its syntax tree."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.source = lowercase_multipliers(text).encode("utf-8")
        self.tree = _parser().parse(self.source)
        self.root = self.tree.root_node

    def nodes(self, node: ts.Node | None = None) -> Iterator[ts.Node]:
        """Every node under ``node`` (the root by default), depth first, in order."""
        stack = [node or self.root]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n.children))

    def of_type(self, *types: str, node: ts.Node | None = None) -> Iterator[ts.Node]:
        return (n for n in self.nodes(node) if n.type in types)


def text(node: ts.Node) -> str:
    return (node.text or b"").decode("utf-8")


def line(node: ts.Node) -> int:
    return node.start_point[0] + 1


def parse_errors(script: Script) -> list[Finding]:
    found = []
    for n in script.nodes():
        if n.type == "ERROR" or n.is_missing:
            what = "missing " + n.type if n.is_missing else f"cannot parse {text(n).strip()[:60]!r}"
            found.append(Finding("parse", line(n), what))
    return found

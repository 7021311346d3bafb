"""Markdown that content cannot spoof.

The audit report and the package readme print what commands, their outputs, facts
from the guest, operators' notes and file names say. Any of those can hold a code
fence, a table pipe, a newline followed by ``# A heading``, ``<script>`` or
``[a link](elsewhere)``. Printed raw, such text closes our code block, adds table
rows or headings, or becomes a link whose text lies about its target. So every value
goes through one of these, and the report's structure is only ever ours:

- :func:`fence`: a fenced code block whose fence is longer than any run of backticks
  in the text (CommonMark closes a fence only with one at least as long), so the text
  is shown verbatim, whatever it holds;
- :func:`code`: an inline code span, likewise delimited; nothing inside a code span
  is a link, HTML or emphasis. Newlines become ``␤`` (a line break would let the next
  line start a heading or a list);
- :func:`plain`: prose, each character that can start inline markup backslash-escaped
  (so no emphasis, link, image, HTML, entity or table cell can start), newlines as
  ``␤``;
- :func:`cell` / :func:`code_cell`: the same for a table cell, with ``|`` escaped
  as ``\\|`` (GFM removes that backslash before it reads the cell's inline content,
  even inside a code span).

A bare URL in a value may still be shown as a link by renderers with GFM's autolink
extension; such a link reads as its own target, which is not a spoof.
"""

from __future__ import annotations

import re

NEWLINE = "\u2424"  # ␤ SYMBOL FOR NEWLINE
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_BACKTICKS = re.compile(r"`+")
# What can start markup inline: emphasis (* _ ~), code (`), links and images ([ ] !),
# HTML and autolinks (< >), entities (&), cells (|), a heading's closing #, escapes (\).
# (Block markers such as "- " or "1." only act at the start of a line, and no value is
# ever printed at the start of a line, nor keeps its line breaks.)
_MARKUP = re.compile(r"([\\`*_\[\]<>|!&~#])")


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(NEWLINE, text)


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in _BACKTICKS.findall(text)), default=0)


def code(value: object) -> str:
    """An inline code span showing ``value`` verbatim (on one line)."""
    text = _one_line(str(value))
    if not text:
        return ""
    ticks = "`" * (_longest_backtick_run(text) + 1)
    # A span that starts or ends with a backtick (or with spaces on both sides, which
    # CommonMark strips one of) is padded by one space on each side.
    pad = " " if text[0] == "`" or text[-1] == "`" or (text[0] == " " and text[-1] == " ") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def code_cell(value: object) -> str:
    """:func:`code` for a table cell."""
    return code(value).replace("|", "\\|")


def plain(value: object) -> str:
    """``value`` as literal prose: no markup of its own can take effect."""
    return _MARKUP.sub(r"\\\1", _one_line(str(value)))


def cell(value: object) -> str:
    """:func:`plain` for a table cell (``plain`` already escapes ``|``)."""
    return plain(value)


def num(value: object, *, cell: bool = False) -> str:
    """A number as itself; anything else (a forged event's field) as a code span."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        return value
    return code_cell(value) if cell else code(value)


def fence(text: str, indent: str = "") -> list[str]:
    """The lines of a fenced code block holding ``text`` verbatim, each prefixed by
    ``indent`` (to sit inside a list item)."""
    ticks = "`" * max(3, _longest_backtick_run(text) + 1)
    body = _LINE_BREAKS.split(text) if text else [""]
    return [indent + ticks, *(indent + line if line else indent.rstrip() for line in body), indent + ticks]

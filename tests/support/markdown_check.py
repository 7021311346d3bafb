"""Reading markdown the way a renderer does (markdown-it-py: CommonMark, GFM tables),
to check that a report's structure is its own, whatever its content says."""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.token import Token

# Content the reports print: fences (longer than three backticks too), table pipes,
# newlines followed by headings and rows, HTML, links and emphasis.
EVIL = "a|b <script>alert(1)</script> [click](http://evil.example) **bold** ```` `x`"
EVIL_LINES = "first line\n# Spoofed heading\n| spoofed | row |\n```\n<img src=x onerror=alert(1)>"
COMMAND = (
    "echo '```'\n"
    "echo '````'  # a longer fence\n"
    "# not a heading: a shell comment\n"
    "echo '| a | b |' '<script>alert(1)</script>' '[x](http://evil.example)'\n"
    "printf '%s\\n' \"$@\" >/dev/null\n"
    "echo 'fact.fence=```' ; echo 'fact.html=<script>alert(1)</script>' ; "
    "echo 'fact.link=[click](http://evil.example)' ; echo 'fact.pipe=a | b | c' ; "
    "echo 'fact.`tick`|key=v'"
)


def parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


def text_of(token: Token) -> str:
    """The text of an inline token, code spans included."""
    return "".join(c.content for c in token.children or [] if c.type in ("text", "code_inline", "softbreak"))


def headings(tokens: list[Token]) -> list[tuple[str, str]]:
    return [(t.tag, text_of(tokens[i + 1])) for i, t in enumerate(tokens) if t.type == "heading_open"]


def inline_texts(tokens: list[Token]) -> list[str]:
    return [text_of(t) for t in tokens if t.type == "inline"]


def assert_no_markup_from_content(text: str) -> list[Token]:
    """No HTML, link or image anywhere (the reports make none of their own); returns
    the tokens."""
    md = parser()
    tokens = md.parse(text)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or []}
    assert "html_block" not in kinds and "html_inline" not in kinds, kinds
    assert "link_open" not in kinds, kinds
    assert "image" not in kinds, kinds
    html = md.render(text)
    assert "<script" not in html and "<img" not in html and "<a " not in html
    return tokens

"""Read YAML the way vmgenie's YamlDotNet 13.1.1 binds it to a class of ``string`` and
``int`` properties, and write YAML it reads back exactly.

vmgenie builds its deserializers without ``IgnoreUnmatchedProperties()``: a key that is
not a property throws, and so does a value YamlDotNet cannot convert. This module
re-implements those rules (from YamlDotNet's sources, cited in docs/package.md) over
PyYAML's event stream, so ``gmi-fsm validate`` refuses exactly what vmgenie's import
would throw on, with vmgenie's own message, and never converts a scalar the way PyYAML
would (``24.10`` stays the text ``24.10``; ``010`` is not 8 for a string property).

Where YamlDotNet would do something gmi-fsm cannot promise to reproduce (explicit tags,
aliases), the document is refused with a message saying so: stricter, never looser.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import yaml

PropertyType = Literal["string", "int32"]
Value = str | int | None

NULL_WORDS = frozenset({"", "~", "null", "Null", "NULL"})  # NullNodeDeserializer, plain style only
_NET_WHITE = " \t\n\v\f\r"
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_U64 = 2**64

EXCEPTION_DURING = "Exception during deserialization"
# libyaml's parser when PyYAML was built with it (events only: no type resolution either way).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Target:
    """A .NET class as YamlDotNet sees it: its full name and its properties by YAML
    name (after the naming convention or aliases), each ``string`` or ``int32``."""

    type_name: str
    properties: Mapping[str, PropertyType]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing YamlDotNet would throw on (or gmi-fsm refuses to guess about)."""

    line: int  # 1-based
    where: str  # the key, or "(document)"
    vmgenie: str  # the exception message vmgenie would print ("GMI import failed: <this>")
    why: str  # what is wrong and how to fix it

    def __str__(self) -> str:
        said = f' (vmgenie: "{self.vmgenie}")' if self.vmgenie else ""
        return f"line {self.line}: {self.where}: {self.why}{said}"


class BindError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


# -- a small node tree from PyYAML's events (values as written, never resolved) ----------


@dataclass(slots=True)
class Scalar:
    value: str
    plain: bool
    tag: str | None  # an explicit tag, or None
    line: int


@dataclass(slots=True)
class Seq:
    items: list[Node]
    line: int
    tag: str | None = None


@dataclass(slots=True)
class Map:
    pairs: list[tuple[Node, Node]]
    line: int
    tag: str | None = None


@dataclass(slots=True)
class Alias:
    anchor: str
    line: int


Node = Scalar | Seq | Map | Alias


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 0


def _node(events: Iterator[yaml.Event], first: yaml.Event) -> Node:
    if isinstance(first, yaml.ScalarEvent):
        # A tag is explicit when the event carries one (PyYAML reports "!" for the
        # non-specific tag of a quoted scalar only when written).
        return Scalar(
            first.value, not first.style, first.tag, _line(first)
        )  # plain: None (or "" from libyaml)
    if isinstance(first, yaml.AliasEvent):
        return Alias(str(first.anchor), _line(first))
    if isinstance(first, yaml.SequenceStartEvent):
        items: list[Node] = []
        for ev in events:
            if isinstance(ev, yaml.SequenceEndEvent):
                break
            items.append(_node(events, ev))
        return Seq(items, _line(first), first.tag if not first.implicit else None)
    if isinstance(first, yaml.MappingStartEvent):
        pairs: list[tuple[Node, Node]] = []
        for ev in events:
            if isinstance(ev, yaml.MappingEndEvent):
                break
            key = _node(events, ev)
            pairs.append((key, _node(events, next(events))))
        return Map(pairs, _line(first), first.tag if not first.implicit else None)
    msg = f"unexpected YAML event {type(first).__name__}"
    raise ValueError(msg)


def parse_document(text: str) -> Node | None:
    """The one document in ``text`` as a node tree (None when it is empty). Raises
    :class:`BindError` for YAML that does not parse or holds several documents."""
    try:
        events = iter(list(yaml.parse(text, Loader=_LOADER)))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise BindError([Problem(line, "(document)", "", f"not valid YAML: {exc}")]) from None
    root: Node | None = None
    documents = 0
    for ev in events:
        if isinstance(ev, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise BindError(
                    [
                        Problem(
                            _line(ev),
                            "(document)",
                            "Expected 'StreamEnd', got 'DocumentStart'",
                            "a second YAML document: YamlDotNet reads one and then expects the end",
                        )
                    ]
                )
        elif isinstance(ev, yaml.ScalarEvent | yaml.SequenceStartEvent | yaml.MappingStartEvent):
            try:
                root = _node(events, ev)
            except RecursionError:
                raise BindError(
                    [Problem(_line(ev), "(document)", "", "nested too deeply to be a manifest or an index")]
                ) from None
        elif isinstance(ev, yaml.AliasEvent):
            root = Alias(str(ev.anchor), _line(ev))
    return root


# -- scalar conversions, as YamlDotNet's ScalarNodeDeserializer does them ----------------


def _ulong_parse(text: str) -> int:
    """``ulong.Parse(text)`` (NumberStyles.Integer): optional white space and sign
    around ASCII digits; "-0" is 0, any other negative overflows."""
    m = re.fullmatch(rf"[{_NET_WHITE}]*([+-]?)([0-9]+)[{_NET_WHITE}]*", text)
    if m is None:
        raise ValueError(f"{text!r} is not a number (FormatException)")
    value = int(m.group(2))
    if (m.group(1) == "-" and value != 0) or value >= _U64:
        raise ValueError(f"{text!r} does not fit an unsigned 64-bit number (OverflowException)")
    return value


def _radix_parse(digits: str, base: int) -> int:
    """``Convert.ToUInt64(digits, 2 or 8)`` and ``ulong.Parse(digits, HexNumber)``."""
    if base == 16:
        digits = digits.strip(_NET_WHITE)
    allowed = {2: "01", 8: "01234567", 16: "0123456789abcdefABCDEF"}[base]
    if not digits or any(c not in allowed for c in digits):
        raise ValueError(f"{digits!r} is not a base-{base} number (FormatException)")
    value = int(digits, base)
    if value >= _U64:
        raise ValueError(f"{digits!r} does not fit an unsigned 64-bit number (OverflowException)")
    return value


def _magnitude(text: str, i: int) -> int:
    """The unsigned number from ``text[i:]`` (after the sign)."""
    if text[i] != "0":
        magnitude = 0
        for chunk in text[i:].split(":"):
            # unchecked in C#: the multiply wraps at 64 bits; the parse does not
            magnitude = (magnitude * 60 + _ulong_parse(chunk.replace("_", ""))) % _U64
        return magnitude
    if i == len(text) - 1:
        return 0
    i += 1
    base = 8
    if text[i] == "b":
        base, i = 2, i + 1
    elif text[i] == "x":
        base, i = 16, i + 1
    return _radix_parse(text[i:].replace("_", ""), base)


def int32_from_scalar(text: str) -> int:
    """The Int32 YamlDotNet 13.1.1 reads from a scalar (``DeserializeIntegerHelper``):
    an optional sign, then ``0`` alone, ``0b`` binary, ``0x`` hex, ``0``-prefixed octal,
    or decimal with ``:`` base-60 groups; ``_`` is ignored. Anything else raises
    ValueError naming the .NET exception (vmgenie: "Exception during deserialization")."""
    if not text:
        raise ValueError("an empty value (IndexOutOfRangeException)")
    i, negative = 0, False
    if text[0] in "+-":
        i, negative = 1, text[0] == "-"
    if i >= len(text):
        raise ValueError(f"{text!r} has a sign and no digits (IndexOutOfRangeException)")
    magnitude = _magnitude(text, i)
    if negative:
        if magnitude > 2**63:
            raise ValueError(f"{text!r} does not fit a signed 64-bit number (OverflowException)")
        magnitude = -magnitude
    if not _INT32_MIN <= magnitude <= _INT32_MAX:
        raise ValueError(f"{text!r} is {magnitude}, outside Int32 (OverflowException)")
    return magnitude


# -- binding ---------------------------------------------------------------------------


@dataclass(slots=True)
class Bound:
    """The values a mapping binds to (only the keys it had), with each key's line."""

    values: dict[str, Value] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)


def _type_text(kind: PropertyType) -> str:
    return "System.String" if kind == "string" else "System.Int32"


def _unsupported(node: Node, where: str) -> Problem | None:
    if isinstance(node, Alias):
        return Problem(
            node.line,
            where,
            "",
            f"an alias (*{node.anchor}): gmi-fsm does not accept anchors and aliases in a file vmgenie "
            "reads (YamlDotNet converts the anchored value's type first); write the value itself",
        )
    tag = node.tag
    if tag is not None:
        return Problem(
            node.line,
            where,
            "",
            f"an explicit tag {tag}: YamlDotNet resolves tags to other types before binding, which "
            "gmi-fsm does not reproduce; remove the tag (quote the value if it must stay text)",
        )
    return None


def bind_value(node: Node, kind: PropertyType, key: str) -> tuple[Value, Problem | None]:
    """What YamlDotNet writes into a ``string``/``int`` property from ``node``, or the
    problem it throws on."""
    unsupported = _unsupported(node, key)
    if unsupported is not None:
        return None, unsupported
    if isinstance(node, Seq):
        return None, Problem(
            node.line,
            key,
            f"No node deserializer was able to deserialize the node into type {_type_text(kind)}, "
            "System.Private.CoreLib",
            f"a list where vmgenie reads one {'text' if kind == 'string' else 'whole number'}",
        )
    if isinstance(node, Map):
        if kind == "int32" and not node.pairs:
            return 0, None  # ObjectNodeDeserializer makes a default Int32 from an empty mapping
        if kind == "int32":
            first = node.pairs[0][0]
            name = first.value if isinstance(first, Scalar) else "?"
            msg = f"Property '{name}' not found on type 'System.Int32'."
        else:
            msg = EXCEPTION_DURING  # no parameterless constructor for System.String
        return None, Problem(
            node.line,
            key,
            msg,
            f"a mapping where vmgenie reads one {'text' if kind == 'string' else 'whole number'}",
        )
    assert isinstance(node, Scalar)
    if node.plain and node.value in NULL_WORDS:
        # NullNodeDeserializer: null; an int property gets default(int) = 0.
        return (None if kind == "string" else 0), None
    if kind == "string":
        return node.value, None
    try:
        return int32_from_scalar(node.value), None
    except ValueError as exc:
        return None, Problem(
            node.line,
            key,
            EXCEPTION_DURING,
            f"{node.value!r} is not an Int32 as YamlDotNet reads one: {exc}; write a whole number such as 2",
        )


def bind_mapping(node: Node | None, target: Target, where: str = "(document)") -> tuple[Bound, list[Problem]]:
    """Bind a mapping node to ``target`` as ``ObjectNodeDeserializer`` does without
    ``IgnoreUnmatchedProperties``: every key must be a property (ordinal, case-sensitive
    match), every value convertible; a repeated key is allowed and the last one wins
    (duplicate-key checking is off by default)."""
    bound = Bound()
    if node is None:
        return bound, [
            Problem(
                1,
                where,
                "Object reference not set to an instance of an object.",
                "the document is empty: YamlDotNet returns null",
            )
        ]
    if not isinstance(node, Map):
        unsupported = _unsupported(node, where)
        return bound, [
            unsupported
            or Problem(
                node.line,
                where,
                EXCEPTION_DURING,
                f"the top level is not a mapping of keys to values (it must bind to {target.type_name})",
            )
        ]
    problems: list[Problem] = []
    unsupported = _unsupported(node, where)
    if unsupported is not None:
        problems.append(unsupported)
    for key_node, value_node in node.pairs:
        if not isinstance(key_node, Scalar):
            problems.append(
                Problem(
                    key_node.line,
                    where,
                    f"Expected 'Scalar', got '{type(key_node).__name__}'",
                    "a key that is not a plain name",
                )
            )
            continue
        key = key_node.value
        kind = target.properties.get(key)
        if kind is None:
            problems.append(
                Problem(
                    key_node.line,
                    key,
                    f"Property '{key}' not found on type '{target.type_name}'.",
                    f"not one of the {len(target.properties)} keys vmgenie reads: "
                    + ", ".join(target.properties)
                    + " (names are case-sensitive; move other facts to a sidecar file)",
                )
            )
            continue
        value, problem = bind_value(value_node, kind, key)
        if problem is not None:
            problems.append(problem)
            continue
        if key in bound.values:
            bound.duplicates.append(key)
        bound.values[key] = value
        bound.lines[key] = key_node.line
    return bound, problems


# -- writing ---------------------------------------------------------------------------


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in '"\\':
        return "\\" + ch
    # Printable per YAML 1.1/1.2 (c-printable) and not a line break YAML 1.1 knows
    # (NEL, LS, PS) nor a byte-order mark: kept; anything else escaped.
    printable = (
        ch == "\t"
        or 0x20 <= code <= 0x7E
        or (0xA0 <= code <= 0xD7FF and code not in (0x2028, 0x2029))
        or (0xE000 <= code <= 0xFFFD and code != 0xFEFF)
        or 0x10000 <= code <= 0x10FFFF
    )
    if printable and ch != "\t":
        return ch
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def quote(text: str) -> str:
    """``text`` as a YAML double-quoted scalar that YamlDotNet and PyYAML both read back
    as exactly ``text`` (never a number, date, boolean or null)."""
    return '"' + "".join(_escape(c) for c in text) + '"'


def scalar_text(value: Value) -> str:
    """A value for a ``key: value`` line: strings always quoted, ints plain, None as
    ``null`` (what YamlDotNet reads as null for a string and 0 for an int)."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # bool is an int to Python; never a value here
        msg = "booleans are not manifest values"
        raise TypeError(msg)
    if isinstance(value, int):
        return str(value)
    return quote(value)

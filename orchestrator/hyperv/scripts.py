"""The fixed PowerShell scripts, one per host operation (``scripts/*.ps1``).

A script reads its inputs only from its ``param(...)`` block, one typed entry per line
(``[long]$Offset``); callers bind values with ``add_parameters``, each checked against
and sent as its declared type (:func:`check_params`, :data:`WIRE_TAGS`). Nothing here
formats a value into script text, so a script's text is the same byte for byte whatever
the VM name or path (the golden tests pin it).
The shared preamble (``$ErrorActionPreference = 'Stop'``, the result helper) is put
where a script says ``# @preamble``, right after its param block.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

PREAMBLE_MARKER = "# @preamble"

SCRIPT_NAMES: tuple[str, ...] = (
    "preflight",
    "vm-probe",
    "vm-create",
    "vm-configure",
    "vm-create-from-disk",
    "vm-configure-disk",
    "seed-attach",
    "vm-start",
    "vm-address",
    "vm-wait-off",
    "integration-status",
    "checkpoints-merge",
    "vhd-optimize",
    "media-eject",
    "vm-export",
    "export-probe",
    "export-compare",
    "file-hash",
    "file-digest",
    "file-list",
    "file-read-pieces",
    "file-write-pieces",
    "file-commit",
    "smb-share-path",
    "vm-remove",
    "host-check",
)


class UnknownScriptError(KeyError):
    pass


def _read(name: str) -> str:
    return (resources.files("orchestrator.hyperv") / "scripts" / f"{name}.ps1").read_text(encoding="utf-8")


@cache
def script_text(name: str) -> str:
    """The exact text sent to the host for script ``name``."""
    if name not in SCRIPT_NAMES:
        raise UnknownScriptError(f"no Hyper-V script named {name!r}; known: {', '.join(SCRIPT_NAMES)}")
    body = _read(name).replace("\r\n", "\n")
    if body.count(PREAMBLE_MARKER) != 1 or not body.lstrip().startswith("param("):
        raise ValueError(f"scripts/{name}.ps1 must start with param(...) and hold one {PREAMBLE_MARKER!r}")
    return body.replace(PREAMBLE_MARKER, _read("_preamble").replace("\r\n", "\n").rstrip("\n"))


@cache
def _by_digest() -> dict[str, str]:
    return {hashlib.sha256(script_text(n).encode()).hexdigest(): n for n in SCRIPT_NAMES}


def script_name(text: str) -> str | None:
    """Which fixed script ``text`` is (exact match), or None for any other text."""
    return _by_digest().get(hashlib.sha256(text.encode()).hexdigest())


# The PSRP primitive type each param-block type crosses the wire as ([MS-PSRP] 2.2.5.1).
# pypsrp tags a bare Python int as <I32> whatever its size: a [long] parameter must be
# tagged <I64> explicitly, or Windows PowerShell cannot read a value of 2^31 or more.
WIRE_TAGS: dict[str, str] = {"string": "S", "int": "I32", "long": "I64", "bool": "B"}

_INT_RANGE = {"I32": (-(2**31), 2**31 - 1), "I64": (-(2**63), 2**63 - 1)}
_PARAM_LINE = re.compile(r"^\s*\[(?P<type>[A-Za-z][\w.]*)\]\s*\$(?P<name>[A-Za-z_]\w*)\s*,?\s*$")


class ScriptParamError(ValueError):
    """A script's param block, or the values bound to it, do not follow the rules."""


@dataclass(frozen=True, slots=True)
class ScriptParam:
    """One entry of a script's ``param(...)`` block: its name and declared type."""

    name: str
    ps_type: str

    @property
    def wire_tag(self) -> str:
        return WIRE_TAGS[self.ps_type.lower()]


def _param_block(name: str) -> list[str]:
    body = _read(name).replace("\r\n", "\n")
    if not body.startswith("param(\n") or "\n)\n" not in body:
        raise ScriptParamError(
            f"scripts/{name}.ps1 must start with a param( block closed by ) on its own line"
        )
    return body.split("\n)\n", 1)[0].splitlines()[1:]


@cache
def script_params(name: str) -> tuple[ScriptParam, ...]:
    """The typed parameters of script ``name``, in order. Every entry is one line
    ``[type]$Name`` with a type from :data:`WIRE_TAGS`: the type decides how the value
    crosses PSRP, so a parameter without one is refused."""
    params: list[ScriptParam] = []
    for line in _param_block(name):
        if not line.strip():
            continue
        m = _PARAM_LINE.match(line)
        if m is None:
            raise ScriptParamError(
                f"scripts/{name}.ps1: param entry {line.strip()!r} must be [type]$Name, one per line "
                f"(types: {', '.join(sorted(WIRE_TAGS))})"
            )
        if m["type"].lower() not in WIRE_TAGS:
            raise ScriptParamError(
                f"scripts/{name}.ps1: ${m['name']} is [{m['type']}], which has no PSRP wire type here; "
                f"use one of {', '.join(sorted(WIRE_TAGS))} (or add it to WIRE_TAGS)"
            )
        params.append(ScriptParam(m["name"], m["type"]))
    return tuple(params)


@cache
def reads_input(name: str) -> bool:
    """Whether script ``name`` reads pipeline input (``$input``): the data of a transfer
    travels so, as many input objects on one pipeline, not as one giant parameter."""
    return "$input" in _read(name).lower()


def param_names(name: str) -> tuple[str, ...]:
    """The names in a script's ``param(...)`` block, in order (callers must bind
    exactly these; a test checks every plan against them)."""
    return tuple(p.name for p in script_params(name))


def check_params(name: str, params: Mapping[str, object]) -> tuple[ScriptParam, ...]:
    """Refuse values that do not fit the declared parameters of script ``name``: the
    names must be exactly the param block's, each value of its declared type and range
    (a Python bool is not an int here, an int is not a string)."""
    declared = script_params(name)
    expected = {p.name for p in declared}
    if set(params) != expected:
        raise ScriptParamError(
            f"{name} was given parameters {sorted(params)}, its param block declares {sorted(expected)}"
        )
    for p in declared:
        value, tag = params[p.name], p.wire_tag
        if tag == "S":
            ok = isinstance(value, str)
        elif tag == "B":
            ok = isinstance(value, bool)
        else:
            low, high = _INT_RANGE[tag]
            ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        if not ok:
            raise ScriptParamError(
                f"{name}: ${p.name} is [{p.ps_type}] ({tag} on the wire); "
                f"{type(value).__name__} {value!r} does not fit it"
            )
    return declared

"""The fixed PowerShell scripts, one per host operation (``scripts/*.ps1``).

A script reads its inputs only from its ``param(...)`` block; callers bind values
with ``add_parameters``. Nothing here formats a value into script text, so a script's
text is the same byte for byte whatever the VM name or path (the golden tests pin it).
The shared preamble (``$ErrorActionPreference = 'Stop'``, the result helper) is put
where a script says ``# @preamble``, right after its param block.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

PREAMBLE_MARKER = "# @preamble"

SCRIPT_NAMES: tuple[str, ...] = (
    "preflight",
    "vm-probe",
    "vm-create",
    "vm-configure",
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
    "file-list",
    "file-read-chunk",
    "file-write-chunk",
    "file-commit",
    "vm-remove",
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


def param_names(name: str) -> tuple[str, ...]:
    """The names in a script's ``param(...)`` block, in order (callers must bind
    exactly these; a test checks every plan against them)."""
    names: list[str] = []
    head = _read(name).split(")\n", 1)[0]
    for line in head.splitlines()[1:]:
        part = line.strip().rstrip(",")
        if "$" in part:
            names.append(part.split("$", 1)[1])
    return tuple(names)

"""Which archive member names .NET's ``ZipFile.ExtractToDirectory`` turns into the same
file on NTFS (vmgenie extracts every GMI that way, on Windows).

The rules, each with its reason (sources in docs/package.md):

- a name component with ``<>:"|?*`` or a control character: .NET replaces each with ``_``
  (or the file system refuses it), so the file is not where the name says;
- a component ending in a dot or a space: Win32 path normalization drops them, so
  ``a.`` and ``a`` are one file;
- a reserved device name (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM1``-``COM9``,
  ``LPT1``-``LPT9``, ``CONIN$``, ``CONOUT$``), alone or with an extension: Windows
  opens the device, not a file;
- a backslash: a folder separator to Windows and a plain character elsewhere;
- an empty component (``a//b``), ``.``: not a file name;
- two names equal when upper-cased (NTFS folds case): .NET extracts without
  overwriting, so the second one throws ("already exists"); and a file whose path is
  another member's folder.

Path traversal (absolute paths, ``..``) is :func:`orchestrator.gmi.archive.unsafe_reason`.
"""

from __future__ import annotations

from collections.abc import Iterable

ILLEGAL_CHARS = frozenset('<>:"|?*') | frozenset(chr(c) for c in range(32))
RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in "123456789\u00b9\u00b2\u00b3"]
    + [f"LPT{i}" for i in "123456789\u00b9\u00b2\u00b3"]
)
MAX_COMPONENT = 255  # NTFS: UTF-16 code units per name


def _fold(text: str) -> str:
    # NTFS compares names through its upcase table: a one-to-one, per-character upper
    # case (no "ß" -> "SS"), which is what this approximates.
    return "".join(u if len(u := c.upper()) == 1 else c for c in text)


def component_problem(part: str) -> str:
    """Why one path component cannot be a file or folder name on NTFS, or ""."""
    if part in ("", "."):
        return "an empty or '.' path component"
    bad = sorted({c for c in part if c in ILLEGAL_CHARS})
    if bad:
        shown = ", ".join(repr(c) if c.isprintable() else f"\\x{ord(c):02x}" for c in bad)
        return f"characters Windows does not allow in a file name ({shown})"
    if part[-1] in ". ":
        return "a trailing dot or space (Windows drops it, so the file gets another name)"
    device = part.split(".", 1)[0].rstrip(" ").upper()
    if device in RESERVED:
        return f"the reserved device name {device} (Windows opens the device, not a file)"
    if len(part.encode("utf-16-le")) // 2 > MAX_COMPONENT:
        return f"a component longer than {MAX_COMPONENT} characters"
    return ""


def name_problem(name: str) -> str:
    """Why member ``name`` (a folder when it ends with ``/``) does not extract as itself
    on Windows, or "". Traversal is checked elsewhere."""
    if "\\" in name:
        return "a backslash (a folder separator on Windows only; use '/')"
    parts = name.removesuffix("/").split("/")
    for part in parts:
        problem = component_problem(part)
        if problem:
            return problem
    return ""


def clashes(names: Iterable[str]) -> list[str]:
    """Members that would land on the same NTFS path as another (case folded), or where
    another member needs a folder: each as ``'a' and 'b': why``. Repeated folder entries
    are harmless (creating a folder twice is not an error)."""
    out: list[str] = []
    files: dict[str, str] = {}
    folders: dict[str, str] = {}  # folded path -> the first member that needs that folder
    for name in names:
        key = _fold(name.removesuffix("/"))
        if not key:
            continue
        if name.endswith("/"):
            folders.setdefault(key, name)
        elif key in files:
            other = files[key]
            why = "the same name" if other == name else "the same name to Windows (case is not significant)"
            out.append(f"{other!r} and {name!r}: {why}")
        else:
            files[key] = name
        parts = key.split("/")
        for i in range(1, len(parts)):
            folders.setdefault("/".join(parts[:i]), name)
    out += [
        f"{name!r} and {folders[key]!r}: a file where the other needs a folder of that name"
        for key, name in files.items()
        if key in folders
    ]
    return out


def problems(names: Iterable[str]) -> list[str]:
    """Every member name that would not extract as itself on Windows, and every clash."""
    names = list(names)
    out = [f"{n!r}: {p}" for n in names if (p := name_problem(n))]
    return out + clashes(names)

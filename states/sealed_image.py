"""The sealed-image contract (``sealed_image.yaml``), loaded and rendered.

One data file says what a GMI must not carry of its build. It is checked three ways:

- ``seal``: :func:`seal_script` removes every item, lists what is left, and fails
  naming each leftover instead of powering off;
- ``boot``: :func:`check_script` for the ``boot`` phase runs in the validate stage's
  fresh copy (items first boot does not re-create), next to the login checks;
- ``offline``: :func:`evaluate_text` decides the text rules from file contents that
  ``orchestrator.gmi.inspect`` reads with libguestfs; globs it expands there.

The shell rules and the Python rules are two renderings of the same items; the tests
plant each leftover in a real file tree and check both name it.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Literal, Protocol

Phase = Literal["seal", "boot", "offline"]
PHASES: tuple[Phase, ...] = ("seal", "boot", "offline")
RULES = ("absent", "empty", "present_empty", "no_user_line", "hosts", "hostname", "locked", "no_build_user")
GROUPS = ("access", "identity", "history")
LOCALHOST_NAMES = ("localhost", "localhost.localdomain")
LOCKED = ("*", "!", "!!", "!*", "*LK*")
"""Shadow password fields that hold no password and no hash."""
LEFTOVER_EXIT = 3
"""The seal step's exit status when something is left: it does not power off."""

_KEYS = {"id", "group", "what", "rule", "phases", "paths", "remove", "sysprep", "ends_access"}
_PATH_RULES = {"absent", "empty", "present_empty", "no_user_line"}


class ContractError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    group: str
    what: str
    rule: str
    phases: tuple[Phase, ...]
    paths: tuple[str, ...]
    remove: str
    sysprep: str
    ends_access: bool
    """Removing it ends the build's own way in (keys, sudo, the user, host keys): the
    seal removes these last, after everything else was checked, so a failed seal
    leaves a guest the build can still log in to and resume."""


@functools.cache
def items() -> tuple[Item, ...]:
    import yaml  # noqa: PLC0415 - only builds and validation pay for it

    text = resources.files("states").joinpath("sealed_image.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise ContractError("sealed_image.yaml: expected a mapping with an 'items' list")
    out: list[Item] = []
    for i, raw in enumerate(data["items"]):
        where = f"sealed_image.yaml item {i} ({raw.get('id', '?')})"
        if unknown := set(raw) - _KEYS:
            raise ContractError(f"{where}: unknown keys {sorted(unknown)}")
        if raw.get("rule") not in RULES or raw.get("group") not in GROUPS:
            raise ContractError(f"{where}: rule must be one of {RULES}, group one of {GROUPS}")
        phases = tuple(raw.get("phases", PHASES))
        if not phases or any(p not in PHASES for p in phases):
            raise ContractError(f"{where}: phases must be among {PHASES}")
        paths = tuple(raw.get("paths", ()))
        if raw["rule"] in _PATH_RULES and not paths:
            raise ContractError(f"{where}: rule {raw['rule']} needs paths")
        if any(not p.startswith("/") or any(c in p for c in " '\"$`;\\") for p in paths):
            raise ContractError(f"{where}: paths must be absolute globs without spaces or quotes")
        out.append(
            Item(
                id=raw["id"],
                group=raw["group"],
                what=raw["what"],
                rule=raw["rule"],
                phases=phases,
                paths=paths,
                remove=str(raw.get("remove", "")).strip(),
                sysprep=str(raw.get("sysprep", "")),
                ends_access=bool(
                    raw.get("ends_access", raw["group"] == "access" or raw["id"] == "ssh-host-keys")
                ),
            )
        )
    ids = [it.id for it in out]
    if len(set(ids)) != len(ids):
        raise ContractError("sealed_image.yaml: item ids must be unique")
    return tuple(out)


def for_phase(phase: Phase) -> tuple[Item, ...]:
    return tuple(it for it in items() if phase in it.phases)


# -- the shell rendering ------------------------------------------------------------
#
# Check scripts read: $1 the build user, $2 the build's hostname, $3 "yes" when the
# build user must be gone, $4 a root prefix ("" in a guest; a folder in tests).

_FUNCTIONS = r"""uncommented() { grep -v '^[[:space:]]*#' "$1" 2>/dev/null; }
# The uncommented lines of file $1 that name $BUILD_USER as a whole word (gmi, not gmi-admin).
names_user() {
  uncommented "$1" | awk -v u="$BUILD_USER" '{ n = split($0, t, /[^A-Za-z0-9_.-]+/);
    for (i = 1; i <= n; i++) if (t[i] == u) { print; next } }'
}
# A localhost name is nobody's: matching it would take the distribution's own lines.
case "$BUILD_HOSTNAME" in localhost|localhost.localdomain) BUILD_HOSTNAME="" ;; esac
"""

_PRELUDE = (
    r"""BUILD_USER="$1"; BUILD_HOSTNAME="$2"; REMOVE_USER="$3"; R="${4:-}"
left=0
leftover() { left=$((left + 1)); found=1; printf 'leftover %s: %s\n' "$1" "$2"; }
"""
    + _FUNCTIONS
)


def _globs(item: Item) -> str:
    # Globs come from the contract file (ours), never from a spec: they are written
    # unquoted after the quoted root prefix, so the shell expands them under it.
    return " ".join(f'"$R"{p}' for p in item.paths)


def _rule_sh(item: Item, phase: Phase) -> str:
    i = shlex.quote(item.id)
    if item.rule == "absent":
        test, note = '[ -e "$p" ] || [ -L "$p" ]', ""
    elif item.rule == "empty":
        test, note = '[ -s "$p" ]', " is not empty"
    elif item.rule == "present_empty":
        test, note = '[ -s "$p" ] || [ ! -f "$p" ]', " is missing or not empty"
    else:
        test = ""
    if test:
        return f'for p in {_globs(item)}; do if {test}; then leftover {i} "${{p#"$R"}}{note}"; fi; done'
    if item.rule == "no_user_line":
        # root's own lines (root ALL=(ALL:ALL) ALL) are the distribution's, not the build's.
        return (
            f'if [ -n "$BUILD_USER" ] && [ "$BUILD_USER" != root ]; then for f in {_globs(item)}; do '
            f'if [ -f "$f" ] && names_user "$f" | grep -q .; then '
            f'leftover {i} "${{f#"$R"}} names $BUILD_USER"; fi; done; fi'
        )
    if item.rule == "hostname":
        return (
            'h=$(tr -d "[:space:]" < "$R/etc/hostname" 2>/dev/null || true); '
            f'case "$h" in ""|{"|".join(LOCALHOST_NAMES)}) ;; *) leftover {i} "/etc/hostname is $h" ;; esac'
        )
    if item.rule == "hosts":
        # At boot cloud-init may write the clone's own 127.0.1.1 line: only the build's
        # name counts there. This prints the offending lines; the caller reports them.
        own_line = "0" if phase == "boot" else "1"
        return (
            f'uncommented "$R/etc/hosts" | awk -v h="$BUILD_HOSTNAME" -v own={own_line} '
            '\'{ bad = (own && $1 == "127.0.1.1"); '
            'for (k = 2; k <= NF; k++) if (h != "" && ($k == h || index($k, h ".") == 1)) bad = 1; '
            "if (bad) print }'"
        )
    if item.rule == "locked":
        return (
            'for u in root "$BUILD_USER"; do [ -n "$u" ] || continue; '
            'pw=$(awk -F: -v u="$u" \'$1 == u { print $2 "." }\' "$R/etc/shadow" 2>/dev/null); '
            + 'case "$pw" in ""|'
            + "|".join(f'"{v}."' for v in LOCKED)
            + ") ;; *) "
            + f'leftover {i} "$u has a password (or a locked hash) in /etc/shadow" ;; esac; done'
        )
    if item.rule == "no_build_user":
        return (
            'if [ "$REMOVE_USER" = yes ] && awk -F: -v u="$BUILD_USER" \'$1 == u { f = 1 } END { exit !f }\' '
            f'"$R/etc/passwd"; then leftover {i} "user $BUILD_USER (created by the build) still exists"; fi'
        )
    raise ContractError(f"unknown rule {item.rule}")


def check_script(phase: Phase) -> str:
    """A POSIX sh script listing ``ok <id>`` or ``leftover <id>: <detail>`` for every
    item of ``phase``; it exits 0 (the caller decides)."""
    return _PRELUDE + _render_checks(for_phase(phase), phase) + "\nexit 0\n"


def _render_checks(chosen: tuple[Item, ...], phase: Phase) -> str:
    out: list[str] = []
    for it in chosen:
        out.append("found=0")
        if it.rule == "hosts":
            out.append(f"hosts_left=$({_rule_sh(it, phase)})")
            out.append(
                'if [ -n "$hosts_left" ]; then '
                f'leftover {shlex.quote(it.id)} "/etc/hosts: $(echo "$hosts_left" | tr "\\n" " ")"; fi'
            )
        else:
            out.append(_rule_sh(it, phase))
        out.append(
            f'if [ "$found" = 0 ]; then printf "ok %s: %s\\n" {shlex.quote(it.id)} {shlex.quote(it.what)}; fi'
        )
    return "\n".join(out) + "\n"


def seal_script() -> str:
    """The seal step: $1 build user, $2 "True" to keep the build user (locked).

    Removes what is not the build's access, checks it, and stops with
    :data:`LEFTOVER_EXIT` (the guest up, still reachable) if anything is left; then
    removes the build's access and the host keys, checks those, and powers off.
    """
    keep = [it for it in items() if "seal" in it.phases or it.remove]
    first = tuple(it for it in keep if not it.ends_access)
    last = tuple(it for it in keep if it.ends_access)
    parts = [
        # /proc, not hostname(1): a minimal image may not have it, and set -e would stop here.
        'BUILD_USER="$1"; KEEP_USER="$2"; BUILD_HOSTNAME=$(cat /proc/sys/kernel/hostname); R=""',
        # Decided when the user first logged in (install_os): the build created it.
        "REMOVE_USER=no",
        'if [ -f /var/lib/gmi-fsm/build-user-created ] && [ "$BUILD_USER" != root ] '
        '&& [ "$KEEP_USER" != True ] && [ "$KEEP_USER" != true ]; then REMOVE_USER=yes; fi',
        'echo "build user $BUILD_USER: $( [ "$REMOVE_USER" = yes ] && echo removed || echo "kept, locked, '
        'no keys, no sudo rule")"',
        "left=0",
        'leftover() { left=$((left + 1)); found=1; printf \'leftover %s: %s\\n\' "$1" "$2";'
        ' left_list="${left_list:+$left_list; }$1: $2"; }',
        _FUNCTIONS,
    ]
    after = {
        "history and identity": "not powered off, the build can still log in: fix the cause, then resume",
        "access": "not powered off, but the build's access is already gone: abort and rebuild",
    }
    for group, chosen in (("history and identity", first), ("access", last)):
        parts.append(f"# -- {group}")
        for it in chosen:
            if it.remove:
                # One failed removal must not hide the others: the checks name what is left.
                parts.append(
                    f"( set +e\n{it.remove}\n) || echo {shlex.quote(f'removing {it.id} failed')} >&2"
                )
        parts.append("sync")
        parts.append(_render_checks(tuple(it for it in chosen if "seal" in it.phases), "seal"))
        parts.append(
            'if [ "$left" -gt 0 ]; then echo "the image is not sealed, left: $left_list;'
            f' {after[group]}" >&2; exit {LEFTOVER_EXIT}; fi'
        )
    parts += [
        "sync",
        # --no-block: queue the power-off and return, so our exit status usually
        # arrives before the connection drops (if not, ends_connection covers it).
        "systemctl --no-block poweroff",
    ]
    return "\n".join(parts) + "\n"


# -- the Python rendering (offline) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildFacts:
    """What the checks need to know about the build."""

    user: str = ""
    hostname: str = ""
    remove_user: bool = False

    @classmethod
    def from_facts(cls, facts: Mapping[str, str], default_user: str = "") -> BuildFacts:
        """From a build's recorded facts (``install_os/build-user-origin``)."""
        return cls(
            user=facts.get("guest.user") or default_user,
            hostname=facts.get("guest.hostname", ""),
            remove_user=facts.get("guest.user_removed_at_seal") == "true",
        )


def evaluate_text(item: Item, files: Mapping[str, str], facts: BuildFacts, phase: Phase) -> list[str]:
    """Leftovers of a text rule, from the contents of the files it reads (path ->
    text; a missing file is absent from ``files``)."""
    if item.rule == "hostname":
        h = "".join(files.get("/etc/hostname", "").split())
        return [] if h in ("", *LOCALHOST_NAMES) else [f"/etc/hostname is {h}"]
    if item.rule == "hosts":
        bad = []
        host = "" if facts.hostname in LOCALHOST_NAMES else facts.hostname
        for line in _uncommented(files.get("/etc/hosts", "")):
            fields = line.split()
            own = phase != "boot" and fields[:1] == ["127.0.1.1"]
            named = bool(host) and any(f == host or f.startswith(host + ".") for f in fields[1:])
            if own or named:
                bad.append(line.strip())
        return [f"/etc/hosts: {' '.join(bad)}"] if bad else []
    if item.rule == "locked":
        out = []
        for u in ("root", facts.user):
            for line in files.get("/etc/shadow", "").splitlines():
                f = line.split(":")
                if u and f[0] == u and len(f) > 1 and f[1] not in LOCKED:
                    out.append(f"{u} has a password (or a locked hash) in /etc/shadow")
        return sorted(set(out))
    if item.rule == "no_build_user":
        names = {ln.split(":", 1)[0] for ln in files.get("/etc/passwd", "").splitlines()}
        gone = not (facts.remove_user and facts.user in names)
        return [] if gone else [f"user {facts.user} (created by the build) still exists"]
    if item.rule == "no_user_line":
        if not facts.user or facts.user == "root":
            return []
        return [
            f"{path} names {facts.user}"
            for path, text in sorted(files.items())
            if any(_word(facts.user, ln) for ln in _uncommented(text))
        ]
    raise ContractError(f"{item.rule} is not a text rule")


class Files(Protocol):
    """Read access to a guest's file tree: libguestfs offline, a folder in tests."""

    def glob(self, pattern: str) -> list[str]:
        """Absolute guest paths matching ``pattern`` (none when nothing matches)."""
        ...

    def size(self, path: str) -> int | None:
        """The size of the regular file (links followed) at ``path``; None if none."""
        ...

    def read(self, path: str) -> str | None:
        """The text of the file at ``path``; None if none."""
        ...


def evaluate(files: Files, facts: BuildFacts, phase: Phase) -> dict[str, list[str]]:
    """Item id -> its leftovers (empty: the item holds), for every item of ``phase``."""
    out: dict[str, list[str]] = {}
    for it in for_phase(phase):
        if it.rule == "absent":
            out[it.id] = sorted({m for p in it.paths for m in files.glob(p)})
        elif it.rule == "empty":
            out[it.id] = [f"{p} is not empty" for p in it.paths if (files.size(p) or 0) > 0]
        elif it.rule == "present_empty":
            out[it.id] = [f"{p} is missing or not empty" for p in it.paths if files.size(p) != 0]
        else:
            paths = TEXT_FILES.get(it.rule) or tuple(m for p in it.paths for m in files.glob(p))
            texts = {p: t for p in paths if (t := files.read(p)) is not None}
            out[it.id] = evaluate_text(it, texts, facts, phase)
    return out


TEXT_FILES = {
    "hostname": ("/etc/hostname",),
    "hosts": ("/etc/hosts",),
    "locked": ("/etc/shadow",),
    "no_build_user": ("/etc/passwd",),
}
"""The files each text rule reads (``no_user_line`` reads its item's paths)."""


def _uncommented(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _word(word: str, line: str) -> bool:
    # As the shell's names_user: a whole token between characters no user name has.
    import re  # noqa: PLC0415

    return word in re.split(r"[^A-Za-z0-9_.-]+", line)

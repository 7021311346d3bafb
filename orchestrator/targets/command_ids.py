"""Command ids: the tag every process of a step's attempt carries, locally and in the
guest, so that what an attempt started can be found and stopped even when nothing
else remembers it (a timed-out command's children; the survivors of a crash).

The id is derived from the build, the step and the attempt, and recorded in the
attempt's ``StepStarted``: a resumed run computes nothing, it reads the id from the
log and stops every process still carrying it before it probes or re-runs the step.
"""

from __future__ import annotations

import hashlib

from states.steps import Command

COMMAND_ID_VAR = "GMI_COMMAND_ID"
"""Set in the environment of every command (inherited by its children, across
``setsid`` and double forks; only a program that clears its environment drops it)."""

# Signals every process whose *initial* environment holds the id ("$2") with "$1".
# /proc/PID/environ is the environment the process was exec'd with, which a child
# inherits; grep -z reads its NUL-separated entries, -x matches a whole entry.
KILL_TAGGED = (
    'for f in $(grep -lzx -- "$GMI_ID_VAR=$2" /proc/[0-9]*/environ 2>/dev/null); do '
    'p=${f#/proc/}; kill -s "$1" "${p%/environ}" 2>/dev/null; done; true'
).replace("$GMI_ID_VAR", COMMAND_ID_VAR)

# Stops every tagged process and reports what it found: KILL (a survivor of a crash is
# not asked to finish its work), then a check that none is left.
_STOP_TAGGED = (
    'tagged() { grep -lzx -- "$GMI_ID_VAR=$1" /proc/[0-9]*/environ 2>/dev/null | '
    "sed 's,^/proc/,,; s,/environ$,,' | grep -vx \"$$\" || true; }\n"
    'found=$(tagged "$1" | tr "\\n" " ")\n'
    'for p in $found; do kill -s KILL "$p" 2>/dev/null || true; done\n'
    'if [ -n "$found" ]; then echo "stopped processes left by an earlier run: $found"; '
    'else echo "nothing left running"; fi\n'
    "i=0\n"
    'while [ -n "$(tagged "$1")" ]; do i=$((i + 1)); [ "$i" -lt 50 ] || '
    '{ echo "still running: $(tagged "$1" | tr "\\n" " ")" >&2; exit 1; }; sleep 0.1; done\n'
).replace("$GMI_ID_VAR", COMMAND_ID_VAR)


def command_id_for(build_id: str, step_id: str, attempt: int, *, probe: bool = False) -> str:
    """The id of one attempt (a probe of a step gets its own)."""
    material = f"{build_id}\n{step_id}\n{attempt}\n{'probe' if probe else 'step'}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:24]


def stop_tagged_command(command_id: str, *, sudo: bool) -> Command:
    """A shell command that stops every process carrying ``command_id`` and exits 0
    once none is left (1 if some would not die)."""
    return Command(_STOP_TAGGED, args=(command_id,), sudo=sudo)

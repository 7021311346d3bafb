"""The guest stages, rendered from the OS family data files into steps.

``os_families/common.yaml`` holds what every family shares; ``<family>.yaml`` holds
the package manager's commands. Options (from the spec) decide which steps apply
(``when``) and give the values scripts read as ``"$1"``... (``args``): a value is
never formatted into a script.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from states.stages import STAGE_NAMES
from states.steps import Command, RetryPolicy, Step, durable

FAMILIES = ("apt", "dnf", "zypper")
_KEYS = {
    "stage",
    "name",
    "order",
    "run",
    "description",
    "args",
    "when",
    "sudo",
    "idempotent",
    "check",
    "facts",
    "fact",
    "timeout_s",
    "retries",
    "ends_connection",
    "run_from",
}

# Scripts rendered from another data file instead of written in the step.
_GENERATED = {"sealed_image.seal": "seal_script"}

Options = Mapping[str, Any]
"""Flat option names, e.g. ``prepare.update`` -> True, ``guest.user`` -> "genie"."""


class FamilyDataError(Exception):
    pass


@functools.cache
def _load(name: str) -> dict[str, Any]:
    import yaml  # noqa: PLC0415 - only builds pay for it

    text = resources.files("states").joinpath("os_families", f"{name}.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise FamilyDataError(f"os_families/{name}.yaml: expected a mapping with a 'steps' list")
    for i, raw in enumerate(data["steps"]):
        unknown = set(raw) - _KEYS
        if unknown:
            raise FamilyDataError(f"os_families/{name}.yaml step {i}: unknown keys {sorted(unknown)}")
        if ("run" in raw) == ("run_from" in raw) or raw.get(
            "run_from", "sealed_image.seal"
        ) not in _GENERATED:
            raise FamilyDataError(
                f"os_families/{name}.yaml step {i}: give `run`, or `run_from` one of {sorted(_GENERATED)}"
            )
        if raw.get("stage") not in STAGE_NAMES:
            raise FamilyDataError(f"os_families/{name}.yaml step {i}: unknown stage {raw.get('stage')!r}")
    return data


def family_steps(family: str) -> list[dict[str, Any]]:
    """The raw step records of ``family`` merged with the common ones."""
    if family not in FAMILIES:
        raise FamilyDataError(f"unknown OS family {family!r}; known: {', '.join(FAMILIES)}")
    return [*_load("common")["steps"], *_load(family)["steps"]]


def _applies(when: str | None, options: Options) -> bool:
    if not when:
        return True
    key, sep, expected = when.partition("=")
    value = options.get(key)
    if sep:
        return str(value) == expected
    return bool(value)


def _args(names: Sequence[str], options: Options) -> tuple[str, ...]:
    out: list[str] = []
    for name in names:
        if name not in options:
            raise FamilyDataError(f"step argument {name!r} is not a known option")
        value = options[name]
        if isinstance(value, list | tuple):
            out.extend(str(v) for v in value)
        else:
            out.append(str(value))
    return tuple(out)


def _run_text(record: Mapping[str, Any]) -> str:
    if "run" in record:
        return str(record["run"])
    from states import sealed_image  # noqa: PLC0415

    render = getattr(sealed_image, _GENERATED[record["run_from"]])
    return str(render())


def _strict(script: str) -> str:
    # Every data script stops at its first failing command (a failed install can never
    # be reported as success by a later `echo`) and syncs before it ends.
    return durable(script)


def guest_steps(family: str, stage: str, options: Options, *, default_timeout_s: float = 1800) -> list[Step]:
    """The guest steps of ``stage`` for ``family``, in order."""
    records = [r for r in family_steps(family) if r["stage"] == stage and _applies(r.get("when"), options)]
    records.sort(key=lambda r: (int(r.get("order", 50)), r["name"]))
    steps: list[Step] = []
    for r in records:
        sudo = bool(r.get("sudo", True))
        args = _args(r.get("args", []), options)
        retries = int(r.get("retries", 0))
        steps.append(
            Step(
                stage=stage,
                name=r["name"],
                target="guest",
                command=Command(
                    _strict(_run_text(r)),
                    args=args,
                    sudo=sudo,
                    ends_connection=bool(r.get("ends_connection", False)),
                ),
                description=r.get("description", ""),
                timeout_s=float(r.get("timeout_s", default_timeout_s)),
                retry=RetryPolicy(attempts=retries + 1, initial_s=5.0),
                idempotent=bool(r.get("idempotent", True)),
                check=Command(_strict(r["check"]), args=args, sudo=sudo) if r.get("check") else None,
                facts=r.get("facts", "none"),
                fact=r.get("fact", ""),
            )
        )
    return steps

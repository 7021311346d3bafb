"""Run one named script through an executor and read its single result object."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.hyperv.executor import PowerShellExecutor, PsResult
from orchestrator.hyperv.scripts import script_text
from orchestrator.stepcontext import current_attempt


class ScriptOutcome(BaseModel):
    """What every script in ``scripts/`` emits once (``Out-GmiResult``)."""

    model_config = ConfigDict(frozen=True)

    exit: int = 0
    facts: dict[str, str] = Field(default_factory=dict)
    artifacts: list[dict[str, Any]] = Field(default_factory=list)
    message: str = ""

    @field_validator("facts", mode="before")
    @classmethod
    def _text_values(cls, value: Any) -> Any:
        # PowerShell serializes numbers and booleans as JSON numbers and booleans.
        if isinstance(value, dict):
            return {str(k): ("" if v is None else str(v)) for k, v in value.items()}
        return value


class ScriptError(Exception):
    """The script ran and failed (a terminating error, or error records)."""

    def __init__(self, name: str, result: PsResult) -> None:
        self.name = name
        self.result = result
        first = result.errors[0] if result.errors else "it reported had_errors without an error record"
        super().__init__(f"{name} failed on the Hyper-V host: {first}")


def outcome_of(name: str, result: PsResult) -> ScriptOutcome:
    if result.failed:
        raise ScriptError(name, result)
    objects = [o for o in result.output if isinstance(o, dict)]
    if len(objects) != 1:
        raise ScriptError(
            name,
            PsResult(errors=[f"expected one result object, got {len(result.output)} output item(s)"]),
        )
    try:
        return ScriptOutcome.model_validate(objects[0])
    except ValidationError as exc:
        raise ScriptError(name, PsResult(errors=[f"malformed result object: {exc}"])) from None


async def run_script(
    executor: PowerShellExecutor,
    name: str,
    params: Mapping[str, object],
    *,
    timeout_s: float,
    record: bool = True,
    input: Sequence[str] | None = None,  # PowerShell's own name: the pipeline's input
) -> ScriptOutcome:
    """Run script ``name``; raise :class:`ScriptError` if it failed.

    Inside a step (a host operation), the script is recorded as one of the step's
    programs, its parameters masked; ``record=False`` for the many data calls of a
    transfer, whose progress is recorded as checkpoints instead. ``input``: the
    pipeline's input objects (a script that reads ``$input``).
    """
    attempt = current_attempt() if record else None
    index = attempt.journal.subcommand_started(script_argv(name, params), executor.label) if attempt else 0
    t0 = time.monotonic()
    try:
        if input is None:
            result = await executor.run(script_text(name), params, timeout_s=timeout_s)
        else:
            result = await executor.run(script_text(name), params, timeout_s=timeout_s, input=input)
        outcome = outcome_of(name, result)
    except Exception as exc:
        if attempt is not None:
            attempt.journal.subcommand_finished(
                index, exit_code=None, duration_s=round(time.monotonic() - t0, 3), error=str(exc)
            )
        raise
    if attempt is not None:
        attempt.journal.subcommand_finished(
            index,
            exit_code=outcome.exit,
            duration_s=round(time.monotonic() - t0, 3),
            stdout=outcome.model_dump_json().encode(),
        )
    return outcome


def script_argv(name: str, params: Mapping[str, object]) -> list[str]:
    """How a script call is shown in the log: ``name -Param value ...`` (the journal
    masks secret values)."""
    argv = [f"{name}.ps1"]
    for key, value in params.items():
        argv += [f"-{key}", str(value)]
    return argv

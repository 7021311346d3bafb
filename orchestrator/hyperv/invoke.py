"""Run one named script through an executor and read its single result object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.hyperv.executor import PowerShellExecutor, PsResult
from orchestrator.hyperv.scripts import script_text


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
    executor: PowerShellExecutor, name: str, params: Mapping[str, object], *, timeout_s: float
) -> ScriptOutcome:
    """Run script ``name``; raise :class:`ScriptError` if it failed."""
    result = await executor.run(script_text(name), params, timeout_s=timeout_s)
    return outcome_of(name, result)

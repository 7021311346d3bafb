"""``HyperVTarget``: the engine's ``host`` target for a Hyper-V host.

A ``powershell`` command names one of the fixed scripts (``Command.text``) and
carries its parameters (``Command.params``); the script's result object becomes the
exit code, facts and artifacts of a :class:`CommandResult`. An ``operation`` command
names a host operation written in Python on top of the same executor (file
transfers, seed media).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping

from orchestrator.hyperv.executor import CallTimeoutError, PowerShellExecutor
from orchestrator.hyperv.invoke import ScriptError, outcome_of
from orchestrator.hyperv.scripts import SCRIPT_NAMES, script_text
from orchestrator.targets.base import CommandResult, OutputSink, TargetError
from states.steps import Command

Operation = Callable[[Mapping[str, object], float, OutputSink], Awaitable[CommandResult]]
FactsListener = Callable[[str, Mapping[str, str]], None]


class HyperVTarget:
    name = "host"

    def __init__(
        self,
        executor: PowerShellExecutor,
        *,
        default_timeout_s: float,
        operations: Mapping[str, Operation] | None = None,
        on_facts: FactsListener | None = None,
    ) -> None:
        self.executor = executor
        self.default_timeout_s = default_timeout_s
        self.operations = dict(operations or {})
        self._on_facts = on_facts

    def __repr__(self) -> str:
        return f"HyperVTarget({self.executor.label})"

    async def run(self, command: Command, *, timeout_s: float | None, sink: OutputSink) -> CommandResult:
        timeout = timeout_s or self.default_timeout_s
        if command.kind == "operation":
            op = self.operations.get(command.text)
            if op is None:
                raise TargetError(f"unknown Hyper-V host operation {command.text!r}")
            try:
                async with asyncio.timeout(timeout):
                    return await op(command.params, timeout, sink)
            except TimeoutError:
                return CommandResult(None, timed_out=True, error=f"timed out after {timeout:g} s")
            except CallTimeoutError as exc:
                return CommandResult(None, timed_out=True, error=str(exc))
            except ScriptError as exc:
                _errors(sink, exc)
                return CommandResult(1, error=str(exc))
        if command.kind != "powershell":
            raise TargetError(
                f"the Hyper-V host target runs PowerShell scripts and host operations, not {command.kind!r}",
                hint="shell commands go to the guest target",
            )
        if command.text not in SCRIPT_NAMES:
            raise TargetError(f"no Hyper-V script named {command.text!r}")
        try:
            result = await self.executor.run(script_text(command.text), command.params, timeout_s=timeout)
        except CallTimeoutError as exc:
            return CommandResult(None, timed_out=True, error=str(exc))
        try:
            outcome = outcome_of(command.text, result)
        except ScriptError as exc:
            _errors(sink, exc)
            return CommandResult(1, error=str(exc))
        sink("stdout", (json.dumps(outcome.model_dump(), sort_keys=True) + "\n").encode())
        if outcome.exit != 0 and outcome.message:
            sink("stderr", (outcome.message + "\n").encode())
        if outcome.exit == 0 and outcome.facts and self._on_facts is not None:
            self._on_facts(command.text, outcome.facts)
        return CommandResult(outcome.exit, facts=outcome.facts if outcome.exit == 0 else {})

    def stop_command(self, command_id: str, *, sudo: bool) -> Command | None:
        """None: PowerShell Remoting has no way to find, by a tag, a pipeline left
        running in the shell of a client that died (WinRM keeps such a shell until its
        idle timeout). The host steps that could still be running then (export,
        checkpoint merge, optimize) wait for or check their own effect before they act
        again (orchestrator/hyperv/plan.py, docs/hyperv.md)."""
        return None

    async def close(self) -> None:
        await self.executor.close()


def _errors(sink: OutputSink, exc: ScriptError) -> None:
    for line in exc.result.errors:
        sink("stderr", (line + "\n").encode())

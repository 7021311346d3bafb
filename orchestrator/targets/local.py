"""The ``local`` target: commands on the orchestrator machine (like Packer's
shell-local), and in-process operations registered by name.

Shell commands run under the step supervisor (``orchestrator/procs.py``): the
command's whole process tree ends with the command, on timeout, on Ctrl-C, and when
gmi-fsm dies, and every process carries the attempt's command id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping

from orchestrator import procs
from orchestrator.targets.base import CommandResult, OutputSink, TargetError
from orchestrator.targets.command_ids import stop_tagged_command
from states.steps import Command

Operation = Callable[[Mapping[str, object], OutputSink], Awaitable[CommandResult]]

READ_CHUNK = 65536


class LocalTarget:
    def __init__(
        self,
        *,
        name: str = "local",
        cwd: str | None = None,
        operations: Mapping[str, Operation] | None = None,
    ) -> None:
        self.name = name
        self.cwd = cwd
        self.operations: dict[str, Operation] = dict(operations or {})

    async def run(self, command: Command, *, timeout_s: float | None, sink: OutputSink) -> CommandResult:
        if command.kind == "operation":
            return await self._operation(command, timeout_s, sink)
        if command.kind != "shell":
            raise TargetError(f"the local target cannot run {command.kind} commands")
        argv = ["/bin/sh", "-c", command.text, "gmi", *command.args]
        if command.sudo and os.geteuid() != 0:
            argv = ["sudo", "-n", *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *procs.supervised(argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.cwd,
                env=procs.command_env(),
                start_new_session=True,  # its own group: the fallback kill reaches all of it
            )
        except OSError as exc:
            raise TargetError(f"cannot start /bin/sh: {exc.strerror}") from exc
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(_pump(proc.stdout, "stdout", sink), _pump(proc.stderr, "stderr", sink))
                code = await proc.wait()
        except TimeoutError:
            await _stop(proc)
            return CommandResult(None, timed_out=True, error=f"timed out after {timeout_s:g} s")
        except BaseException:
            # Cancelled (Ctrl-C): stop the command; the step stays in doubt.
            with contextlib.suppress(BaseException):
                await asyncio.shield(_stop(proc))
            raise
        if code < 0:
            return CommandResult(None, error=f"killed by signal {-code}")
        return CommandResult(code)

    async def _operation(self, command: Command, timeout_s: float | None, sink: OutputSink) -> CommandResult:
        op = self.operations.get(command.text)
        if op is None:
            raise TargetError(f"unknown local operation {command.text!r}")
        try:
            async with asyncio.timeout(timeout_s):
                return await op(command.params, sink)
        except TimeoutError:
            return CommandResult(None, timed_out=True, error=f"timed out after {timeout_s:g} s")

    def stop_command(self, command_id: str, *, sudo: bool) -> Command:
        """Stops what an attempt left running on this machine (its supervisor was
        killed with gmi-fsm): every process still tagged with its command id."""
        return stop_tagged_command(command_id, sudo=sudo and os.geteuid() != 0)

    async def close(self) -> None:
        return


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """The supervisor kills the command's tree and exits; if it does not within the
    grace period, kill its process group."""
    procs.stop_supervisor(proc.pid)
    try:
        await asyncio.wait_for(proc.wait(), procs.STOP_GRACE_S)
    except TimeoutError:
        procs.kill_group(proc.pid)
        await proc.wait()


async def _pump(reader: asyncio.StreamReader | None, stream: str, sink: OutputSink) -> None:
    if reader is None:
        return
    while chunk := await reader.read(READ_CHUNK):
        sink("stdout" if stream == "stdout" else "stderr", chunk)

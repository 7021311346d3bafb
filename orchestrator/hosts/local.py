"""The ``local`` host kind: no hypervisor, only the spec's hooks run, on this machine.

It builds no image. It exists so the engine (events, resume, audit) can be tried and
tested without a VM, and so hooks-only pipelines can use gmi-fsm's bookkeeping.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.hooks import with_hooks
from orchestrator.spec import BuildSpec
from orchestrator.targets.base import Target, TargetError
from orchestrator.targets.local import LocalTarget
from states.steps import Step, TargetName


class LocalHost:
    kind = "local"

    def __init__(self, spec: BuildSpec, base_dir: Path) -> None:
        self.spec = spec
        self._local = LocalTarget(cwd=str(base_dir))

    def plan(self, stage: str) -> list[Step]:
        return with_hooks(self.spec, stage, [])

    def target(self, name: TargetName) -> Target:
        if name == "local":
            return self._local
        raise TargetError(f"the local host has no {name} target", hint="use host kind qemu or hyperv")

    def session_step(self, step: Step) -> Step | None:
        return None

    def abort_steps(self, stage: str) -> list[Step]:
        return []

    def closing_steps(self, stage: str) -> list[Step]:
        return []

    async def close(self) -> None:
        await self._local.close()

"""What the engine needs of a hypervisor host (QEMU, Hyper-V) or of no host at all.

A host plans its own steps for each stage and gives the engine the targets those
steps name. It reads the build through a read-only view
(:class:`orchestrator.view.BuildView`) and never writes to the log: the engine
records every step, the facts and artifacts a step returns, and what a running step
reports through its journal (``orchestrator/stepcontext.py``).

A host may ask for a *session step* before a step runs (e.g. "boot the VM and wait
for SSH" before the first guest command of a run): session steps are recorded like
any step but are never "done" for good, since a new run needs them again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from orchestrator.targets.base import Target
    from states.steps import Step, TargetName


class Host(Protocol):
    kind: str

    def plan(self, stage: str) -> list[Step]:
        """This host's steps for ``stage`` (guest steps included), in order."""
        ...

    def target(self, name: TargetName) -> Target:
        """The target for a step's ``target`` field."""
        ...

    def session_step(self, step: Step) -> Step | None:
        """A step to run first, in this run, before ``step`` can run (or None)."""
        ...

    def abort_steps(self, stage: str) -> list[Step]:
        """What to undo when the build is aborted (e.g. remove the build VM), filed
        under ``stage``. Each must be idempotent."""
        ...

    def closing_steps(self, stage: str) -> list[Step]:
        """What to do on the host when a run ends without ending the build (failed,
        paused, interrupted): e.g. power the build VM down. Recorded like probes under
        ``stage``; each must be idempotent."""
        ...

    async def close(self) -> None:
        """Release what this run holds (connections, process handles). Nothing done on
        the host here goes unrecorded: host actions belong in :meth:`closing_steps`."""
        ...

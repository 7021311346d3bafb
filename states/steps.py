"""What a stage does, as data: steps, the commands they send, and how to retry them.

A step is pure description. Nothing here talks to a host or a guest: the engine in
``orchestrator/`` hands a step's command to the target the step names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

TargetName = Literal["local", "host", "guest"]
"""Where a step runs: the orchestrator machine, the hypervisor host, or the guest VM."""

CommandKind = Literal["shell", "powershell", "operation"]


@dataclass(frozen=True, slots=True)
class Command:
    """One command for a target.

    ``kind`` says how ``text`` is read:

    - ``shell``: a POSIX ``sh`` script. User values are never formatted into it; they
      travel in ``args`` and the script reads them as ``"$1"``, ``"$2"``... Targets quote
      every argument (``shlex.quote``) or pass it as a real argv element.
    - ``powershell``: a fixed PowerShell script; ``params`` are bound with
      ``add_parameters`` and read as ``$Name``; never formatted into the text.
    - ``operation``: a named host operation (``text`` is its name, e.g. ``vm.start``)
      that a host implements in code; ``params`` are its keyword arguments.

    ``secret_args`` holds the indexes of ``args`` (or names of ``params``) whose value
    is a secret: it is sent to the target but masked wherever the command is recorded.
    """

    text: str
    kind: CommandKind = "shell"
    args: tuple[str, ...] = ()
    params: Mapping[str, object] = field(default_factory=dict)
    sudo: bool = False
    secret_args: frozenset[str] = frozenset()
    ends_connection: bool = False
    """True for a command that powers the guest off or reboots it: a connection lost
    after it started is its expected end (exit 0), not an error."""

    def masked_args(self) -> tuple[str, ...]:
        """``args`` as they may be recorded: secret ones replaced by ``***``."""
        return tuple("***" if str(i) in self.secret_args else a for i, a in enumerate(self.args))

    def masked_params(self) -> dict[str, object]:
        """``params`` as they may be recorded: secret ones replaced by ``***``."""
        return {k: ("***" if k in self.secret_args else v) for k, v in self.params.items()}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing step is tried again, and how long to wait in between.

    The wait before attempt ``n`` (2, 3, ...) is ``min(initial * factor**(n-2), maximum)``.
    """

    attempts: int = 1
    initial_s: float = 1.0
    factor: float = 2.0
    maximum_s: float = 60.0

    def delay_before(self, attempt: int) -> float:
        if attempt <= 1:
            return 0.0
        return float(min(self.initial_s * self.factor ** (attempt - 2), self.maximum_s))


FactParser = Literal["none", "key_value", "text"]
"""How a step's stdout becomes facts: not at all, ``key=value`` lines, or the whole
(stripped) text as the value of the fact named by ``Step.fact``."""


@dataclass(frozen=True, slots=True)
class Step:
    """One unit of work in a stage, with an id stable across runs (``stage/name``).

    Resume rules (see docs/architecture.md): a step that was started but never
    finished is *in doubt*. It is run again only if ``idempotent``; otherwise its
    ``check`` (exit 0 = "the effect is already there") decides; with neither, the
    build pauses for an operator decision.
    """

    stage: str
    name: str
    target: TargetName
    command: Command
    description: str = ""
    timeout_s: float = 600.0
    retry: RetryPolicy = RetryPolicy()
    idempotent: bool = False
    check: Command | None = None
    ok_exit_codes: frozenset[int] = frozenset({0})
    facts: FactParser = "none"
    fact: str = ""

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.name}"


def durable(script: str) -> str:
    """A guest script that stops at its first failing command (``set -e``) and flushes
    the guest's page cache before it reports its end.

    Why the flush: once StepFinished is committed the step never runs again, so its
    effect must be on the guest's disk by then — if the orchestrator is killed right
    after, the VM dies with it and unwritten pages would be lost. The script runs in a
    subshell so that its own ``exit`` still reaches the ``sync``.
    """
    return f"(\nset -e\n{script.rstrip()}\n)\nrc=$?\nsync\nexit $rc\n"


def operation_step(
    stage: str,
    name: str,
    description: str,
    *,
    target: TargetName,
    params: Mapping[str, object] | None = None,
    timeout_s: float = 600.0,
) -> Step:
    """A step that runs a named, idempotent in-process operation (``Command`` kind
    ``operation``) on ``target``."""
    return Step(
        stage=stage,
        name=name,
        target=target,
        description=description,
        timeout_s=timeout_s,
        command=Command(name, kind="operation", params=dict(params or {})),
        idempotent=True,
    )

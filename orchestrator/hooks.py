"""User hooks from the spec, turned into steps before or after a stage's own."""

from __future__ import annotations

from orchestrator.spec import BuildSpec, HookSpec
from states.steps import Command, RetryPolicy, Step, durable


def hook_step(hook: HookSpec) -> Step:
    # A guest hook's effect must be on the guest's disk before it is recorded as done.
    run = durable(hook.run) if hook.target == "guest" else hook.run
    return Step(
        stage=hook.stage,
        name=f"hook.{hook.when}.{hook.name}",
        target=hook.target,
        command=Command(run, args=tuple(hook.args), sudo=hook.sudo),
        description=f"user hook {hook.name} ({hook.when} {hook.stage})",
        timeout_s=hook.timeout_s,
        retry=RetryPolicy(attempts=hook.retries + 1, initial_s=hook.retry_delay_s),
        idempotent=hook.idempotent,
        check=Command(hook.check, args=tuple(hook.args), sudo=hook.sudo) if hook.check else None,
        facts="key_value" if hook.facts else "none",
    )


def with_hooks(spec: BuildSpec, stage: str, steps: list[Step]) -> list[Step]:
    """``steps`` with the stage's before-hooks ahead and after-hooks behind."""
    before = [hook_step(h) for h in spec.hooks if h.stage == stage and h.when == "before"]
    after = [hook_step(h) for h in spec.hooks if h.stage == stage and h.when == "after"]
    return [*before, *steps, *after]

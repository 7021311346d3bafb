"""The engine: drives one build from its events to its end, one step at a time.

Write-ahead: StepStarted is committed before a command is sent and StepFinished
after it ends. On resume the folded state says which steps are done (never run
again) and which are in doubt (started, never finished): those re-run only if
idempotent, else their check probe decides, else the build pauses for an operator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from events.model import (
    ArtifactRecorded,
    BuildFailed,
    BuildPaused,
    BuildResumed,
    BuildSucceeded,
    FactRecorded,
    RunInterrupted,
    StageCompleted,
    StageEntered,
    StageFailed,
    StepFinished,
    StepOutcome,
    StepStarted,
)
from orchestrator import procs
from orchestrator.capture import OutputCapture
from orchestrator.hosts.base import Host
from orchestrator.journal import EngineJournal
from orchestrator.recorder import BuildRecorder
from orchestrator.secrets import REDACTOR
from orchestrator.stepcontext import StepAttempt, attempt_running
from orchestrator.targets.base import CommandResult, Stream, TargetError
from orchestrator.targets.command_ids import command_id_for
from states.projection import DONE, RUNNING, BuildState
from states.stages import FAILED, FIRST_STAGE, PAUSED, REQUESTED, STAGE_NAMES, next_stage
from states.steps import Command, Step


class Outcome(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PAUSED = "paused"
    ABORTED = "aborted"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: Outcome
    build_id: str
    stage: str
    message: str = ""


class Observer(Protocol):
    """Progress reporting; the CLI shows it, tests may collect it."""

    def stage_entered(self, stage: str) -> None: ...
    def step_started(self, step: Step, attempt: int, note: str) -> None: ...
    def step_output(self, step: Step, stream: Stream, data: bytes) -> None: ...
    def step_finished(self, step: Step, outcome: str, duration_s: float, detail: str) -> None: ...
    def message(self, text: str) -> None: ...


class SilentObserver:
    def stage_entered(self, stage: str) -> None: ...
    def step_started(self, step: Step, attempt: int, note: str) -> None: ...
    def step_output(self, step: Step, stream: Stream, data: bytes) -> None: ...
    def step_finished(self, step: Step, outcome: str, duration_s: float, detail: str) -> None: ...
    def message(self, text: str) -> None: ...


class BuildIsPaused(Exception):
    def __init__(self, state: BuildState) -> None:
        super().__init__(f"build {state.build_id} is paused at {state.paused_step}: {state.reason}")
        self.state = state


class BuildHasEnded(Exception):
    def __init__(self, state: BuildState) -> None:
        super().__init__(f"build {state.build_id} has already {state.status}")
        self.state = state


class Engine:
    def __init__(
        self,
        recorder: BuildRecorder,
        host: Host,
        *,
        observer: Observer | None = None,
        who: str = "",
        hostname: str = "",
        tool_version: str = "",
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.recorder = recorder
        self.host = host
        self.observer: Observer = observer or SilentObserver()
        self.who, self.hostname, self.tool_version = who, hostname, tool_version
        self._sleep = sleep
        self._current: Step | None = None
        self._sessions_done: set[str] = set()
        self.stop_signal = ""  # set by the CLI's signal handler before it cancels us

    @property
    def state(self) -> BuildState:
        return self.recorder.state

    async def run(self) -> RunResult:
        """Run the build until it succeeds, fails or pauses. Raises BuildIsPaused /
        BuildHasEnded if there is nothing this run may do."""
        st = self.state
        if st.terminal:
            raise BuildHasEnded(st)
        if st.status == PAUSED:
            raise BuildIsPaused(st)
        if st.events > 1:
            self.recorder.record(
                BuildResumed(
                    resumed_by=self.who,
                    hostname=self.hostname,
                    tool_version=self.tool_version,
                    from_status=st.status,
                )
            )
        try:
            return await self._drive()
        except asyncio.CancelledError:
            # Programs run by worker threads (a host operation's qemu-img) are not
            # reached by the cancellation: stop them, so their threads return.
            procs.stop_all()
            self._interrupted(self.stop_signal or "cancelled")
            raise

    async def close_run(self) -> list[str]:
        """At the end of every run that did not end the build: the host's closing steps
        (power the build VM down, remove a failed build's VM), recorded like probes.
        Returns the problems (they never change the run's outcome)."""
        st = self.state
        stage = st.stage or (st.status if st.status in STAGE_NAMES else "")
        if not stage or st.terminal:
            return []
        problems = []
        for step in self.host.closing_steps(stage):
            ok, error, _ = await self._attempt(step, 1, session_step=True)
            if not ok:
                problems.append(f"{step.name}: {error}")
                self.observer.message(f"closing step {step.id} failed: {error}")
        return problems

    async def clean_up_for_abort(self) -> list[str]:
        """Run the host's abort clean-up (recorded like probes); return the problems."""
        st = self.state
        stage = st.stage or (st.status if st.status in STAGE_NAMES else "")
        if not stage or st.terminal:
            return []
        problems = []
        for step in self.host.abort_steps(stage):
            ok, error, _ = await self._attempt(step, 1, session_step=True)
            if not ok:
                problems.append(f"{step.name}: {error}")
        return problems

    def _interrupted(self, signal_name: str) -> None:
        st = self.state
        if st.terminal or st.status in (PAUSED, FAILED, REQUESTED):
            return
        step = self._current.id if self._current else ""
        self.recorder.record(RunInterrupted(signal=signal_name, stage=st.status, step=step))

    async def _drive(self) -> RunResult:
        while True:
            st = self.state
            if st.status == REQUESTED:
                self._enter(FIRST_STAGE)
                continue
            stage = st.status
            if not st.stage_done:
                result = await self._run_stage(stage)
                if result is not None:
                    return result
                self.recorder.record(StageCompleted(stage=stage))
            nxt = next_stage(stage)
            if nxt is None:
                self.recorder.record(BuildSucceeded())
                self.observer.message(f"build {st.build_id} succeeded")
                return RunResult(Outcome.SUCCEEDED, st.build_id, stage)
            self._enter(nxt)

    def _enter(self, stage: str) -> None:
        self.recorder.record(StageEntered(stage=stage))
        self.observer.stage_entered(stage)

    async def _run_stage(self, stage: str) -> RunResult | None:
        try:
            plan = self.host.plan(stage)
        except Exception as exc:  # a plan that cannot be made is a failed build
            self.recorder.record(BuildFailed(stage=stage, reason=f"cannot plan stage: {exc}"))
            return RunResult(Outcome.FAILED, self.state.build_id, stage, str(exc))
        for step in plan:
            result = await self._run_planned(step)
            if result is not None:
                return result
        return None

    async def _run_planned(self, step: Step) -> RunResult | None:
        record = self.state.steps.get(step.id)
        if record is not None and record.status == DONE:
            if record.open_command_id:  # skipped by an operator while in doubt
                return await self._stop_leftovers(step, record.open_command_id)
            return None
        in_doubt = record is not None and record.status == RUNNING
        if in_doubt and not step.idempotent and step.check is None:
            return self._pause_for_operator(step, record.attempts if record else 0)
        # The session (e.g. the booted, logged-in guest) comes before anything is sent
        # to the step's target, a check probe included.
        failed = await self._ensure_session(step)
        if failed is not None:
            return failed
        if record is not None and record.open_command_id:
            # An attempt that never finished may have left processes running (the
            # guest outlived the run; a supervisor was killed with gmi-fsm): nothing of
            # it may run while its effect is probed or it runs again.
            failed = await self._stop_leftovers(step, record.open_command_id)
            if failed is not None:
                return failed
        if in_doubt and record is not None and await self._settle_in_doubt(step, record.attempts):
            return None
        # FAILED_STEP (a resumed failed build) and RETRY (operator) run again.
        return await self._attempts(step, record.attempts + 1 if record else 1)

    async def _stop_leftovers(self, step: Step, command_id: str) -> RunResult | None:
        target = self.host.target(step.target)
        command = target.stop_command(command_id, sudo=step.command.sudo)
        if command is None:
            return None
        stop = Step(
            stage=step.stage,
            name=step.name,
            target=step.target,
            command=command,
            description=f"stop what is left of an unfinished attempt (command id {command_id})",
            timeout_s=60,
            idempotent=True,
        )
        ok, error, _ = await self._attempt(stop, 0, session_step=True)
        if ok:
            return None
        reason = f"step {step.id}: could not stop what an unfinished attempt left running: {error}"
        self.recorder.record(StageFailed(stage=step.stage, step=step.name, reason=reason))
        return RunResult(Outcome.FAILED, self.state.build_id, step.stage, reason)

    async def _ensure_session(self, step: Step) -> RunResult | None:
        session = self.host.session_step(step)
        # Once per run, not per stage: the name says what the session is.
        if session is None or session.name in self._sessions_done:
            return None
        failed = await self._attempts(session, 1, session_step=True)
        if failed is None:
            self._sessions_done.add(session.name)
        return failed

    async def _settle_in_doubt(self, step: Step, attempt: int) -> bool:
        """A step started in an earlier run never finished, and it is idempotent or has
        a check. True if its check found the effect (it is done now); False to run it
        again (the in-doubt attempt is closed first, so the log says why)."""
        if step.idempotent:
            self._close_in_doubt(step, attempt, "in doubt after an interrupted run; re-running (idempotent)")
            return False
        if await self._probe(step):
            self.recorder.record(
                StepFinished(
                    stage=step.stage,
                    step=step.name,
                    attempt=attempt,
                    outcome="already_done",
                    exit_code=None,
                    duration_s=0.0,
                    error="in doubt after an interrupted run; its check found the effect",
                )
            )
            self.observer.step_finished(step, "already_done", 0.0, "check: already done")
            return True
        self._close_in_doubt(
            step, attempt, "in doubt after an interrupted run; its check found no effect: re-running"
        )
        return False

    def _pause_for_operator(self, step: Step, attempt: int) -> RunResult:
        st = self.state
        reason = (
            f"step {step.id} was started (attempt {attempt}) but never finished, and it is "
            "neither idempotent nor has a check: running it again could do it twice"
        )
        self.recorder.record(BuildPaused(stage=step.stage, step=step.name, reason=reason))
        self.observer.message(
            f"paused: {reason}. Decide with `gmi-fsm resume {st.build_id} --decision retry|skip|abort`"
        )
        return RunResult(Outcome.PAUSED, st.build_id, step.stage, reason)

    def _close_in_doubt(self, step: Step, attempt: int, why: str) -> None:
        self.recorder.record(
            StepFinished(
                stage=step.stage,
                step=step.name,
                attempt=attempt,
                outcome="error",
                exit_code=None,
                duration_s=0.0,
                error=why,
            )
        )

    async def _probe(self, step: Step) -> bool:
        assert step.check is not None
        target = self.host.target(step.target)
        started = self._started(step, step.check, 0, probe=True)
        self.recorder.record(started)
        capture = OutputCapture()
        t0 = time.monotonic()
        try:
            with attempt_running(self._attempt_context(step, started)):
                result = await target.run(step.check, timeout_s=min(step.timeout_s, 300), sink=capture)
        except TargetError as exc:
            result = CommandResult(None, error=str(exc))
        out, err = capture.finish(self.recorder.blobs)
        outcome: StepOutcome = "succeeded" if result.exit_code == 0 else "failed"
        self.recorder.record(
            StepFinished(
                stage=step.stage,
                step=step.name,
                attempt=0,
                outcome=outcome,
                exit_code=result.exit_code,
                duration_s=round(time.monotonic() - t0, 3),
                stdout=out,
                stderr=err,
                error=result.error,
                probe=True,
            )
        )
        return result.exit_code == 0

    def _attempt_context(self, step: Step, started: StepStarted) -> StepAttempt:
        return StepAttempt(
            step_id=step.id,
            attempt=started.attempt,
            command_id=started.command_id,
            journal=EngineJournal(self.recorder, started),
            resume_from=dict(self.state.progress.get(step.id, {})),
        )

    def _started(self, step: Step, command: Command, attempt: int, *, probe: bool) -> StepStarted:
        return StepStarted(
            stage=step.stage,
            step=step.name,
            attempt=attempt,
            target=step.target,
            command=REDACTOR.text(command.text),
            args=[REDACTOR.text(a) for a in command.masked_args()],
            params=_masked_params(command),
            idempotent=step.idempotent,
            timeout_s=step.timeout_s,
            probe=probe,
            command_id=command_id_for(self.state.build_id, step.id, attempt, probe=probe),
        )

    async def _attempts(
        self, step: Step, first_attempt: int, *, session_step: bool = False
    ) -> RunResult | None:
        policy = step.retry
        last_error = ""
        for n in range(policy.attempts):
            attempt = first_attempt + n
            delay = policy.delay_before(n + 1)
            if delay:
                self.observer.message(f"retrying {step.id} in {delay:g} s")
                await self._sleep(delay)
            ok, last_error, retryable = await self._attempt(step, attempt, session_step)
            if ok:
                return None
            if not retryable:
                break
        st = self.state
        reason = f"step {step.id} failed: {last_error}"
        self.recorder.record(StageFailed(stage=step.stage, step=step.name, reason=reason))
        return RunResult(Outcome.FAILED, st.build_id, step.stage, reason)

    async def _attempt(self, step: Step, attempt: int, session_step: bool) -> tuple[bool, str, bool]:
        """One attempt: (succeeded, error text, worth retrying)."""
        target = self.host.target(step.target)
        self._current = step
        # Write-ahead: committed before anything is sent.
        started = self._started(step, step.command, attempt, probe=session_step)
        self.recorder.record(started)
        self.observer.step_started(step, attempt, "session" if session_step else "")
        capture = OutputCapture(echo=lambda s, d: self.observer.step_output(step, s, d))
        t0 = time.monotonic()
        retryable = True
        try:
            with attempt_running(self._attempt_context(step, started)):
                result = await target.run(step.command, timeout_s=step.timeout_s, sink=capture)
        except TargetError as exc:
            result = CommandResult(None, error=_target_error_text(exc))
            retryable = exc.retryable
        except asyncio.CancelledError:
            capture.discard()
            raise
        duration = round(time.monotonic() - t0, 3)
        out, err = capture.finish(self.recorder.blobs)
        ok = result.exit_code in step.ok_exit_codes and not result.timed_out and not result.error
        outcome: StepOutcome
        if ok:
            outcome = "succeeded"
        elif result.timed_out:
            outcome = "timed_out"
        elif result.exit_code is None:
            outcome = "error"
        else:
            outcome = "failed"
        error = result.error or (
            "" if ok else f"exit status {result.exit_code}" + _stderr_hint(err.tail or err.head)
        )
        events: list[StepFinished | FactRecorded | ArtifactRecorded] = [
            StepFinished(
                stage=step.stage,
                step=step.name,
                attempt=attempt,
                outcome=outcome,
                exit_code=result.exit_code,
                duration_s=duration,
                stdout=out,
                stderr=err,
                error=REDACTOR.text(error),
                probe=session_step,
            )
        ]
        # What the target observed is recorded whatever the outcome (e.g. the host key it
        # pinned); what the step printed counts only when the step succeeded.
        events.extend(self._facts(step, result, capture.stdout_text() if ok else None))
        if ok:
            events.extend(
                ArtifactRecorded(name=a.name, path=a.path, sha256=a.sha256, size=a.size, kind=a.kind)
                for a in result.artifacts
            )
        # The outcome is committed without its own fsync. Write-ahead needs the intent
        # (StepStarted) on disk before the command runs, and it is synced; the outcome
        # is durable against a crash of this process at once, and against a power
        # loss with the next synced commit (the next intent or stage event,
        # microseconds later), which flushes the WAL holding it. Losing it to a power
        # loss in between only leaves the step in doubt, which resume handles as for
        # any crash mid-step (idempotent: re-run; otherwise: pause for a decision).
        # One fsync per step fewer: ~0.17 ms of a ~3.6 ms short step (performance.md).
        self.recorder.record(*events, sync=False)
        self._current = None
        self.observer.step_finished(step, outcome, duration, error)
        return ok, error, retryable

    def _facts(self, step: Step, result: CommandResult, stdout: str | None) -> list[FactRecorded]:
        facts: dict[str, str] = dict(result.facts)
        if stdout is not None and step.facts == "key_value":
            for line in stdout.splitlines():
                key, sep, value = line.partition("=")
                if sep and key.strip():
                    facts[key.strip()] = value.strip()
        elif stdout is not None and step.facts == "text" and step.fact:
            facts[step.fact] = stdout.strip()
        known = self.state.facts
        return [
            FactRecorded(key=k, value=REDACTOR.text(v), source=step.id)
            for k, v in facts.items()
            if known.get(k) != v
        ]


def _masked_params(command: Command) -> dict[str, object]:
    return {k: (REDACTOR.text(v) if isinstance(v, str) else v) for k, v in command.masked_params().items()}


def _target_error_text(exc: TargetError) -> str:
    text = str(exc)
    return f"{text} (hint: {exc.hint})" if exc.hint else text


def _stderr_hint(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return f": {lines[-1][:300]}" if lines else ""

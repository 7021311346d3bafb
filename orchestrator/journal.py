"""The engine's side of :class:`orchestrator.stepcontext.StepJournal`: what a running
step reports becomes an event, appended by the engine's recorder (the only writer).

Reports may come from worker threads (a host operation runs ``qemu-img`` in
``asyncio.to_thread``): they are handed to the event loop's thread, which owns the
database connection, and the caller waits until the event is committed — a
sub-command's ``SubcommandStarted`` is on disk before the program starts, exactly as
a step's ``StepStarted`` is before its command is sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from events.model import OutputDigest, StepProgress, StepStarted, SubcommandFinished, SubcommandStarted
from orchestrator.capture import OutputCapture
from orchestrator.recorder import BuildRecorder
from orchestrator.secrets import REDACTOR

T = TypeVar("T")
# A report from a thread whose loop is gone (the run ended under it) is dropped
# after this long rather than blocking the thread's exit forever.
_HANDOFF_TIMEOUT_S = 120.0


class EngineJournal:
    """Records the reports of one attempt (the one ``started`` opened)."""

    def __init__(self, recorder: BuildRecorder, started: StepStarted) -> None:
        self._recorder = recorder
        self._stage, self._step, self._attempt = started.stage, started.step, started.attempt
        self._count = 0
        self._count_lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def subcommand_started(self, argv: Sequence[str], cwd: str = "") -> int:
        with self._count_lock:
            self._count += 1
            index = self._count
        event = SubcommandStarted(
            stage=self._stage,
            step=self._step,
            attempt=self._attempt,
            index=index,
            argv=[REDACTOR.text(str(a)) for a in argv],
            cwd=cwd,
        )
        self._on_loop(lambda: self._recorder.record(event))
        return index

    def subcommand_finished(
        self,
        index: int,
        *,
        exit_code: int | None,
        duration_s: float,
        stdout: bytes = b"",
        stderr: bytes = b"",
        error: str = "",
        note: str = "",
    ) -> None:
        def record() -> None:
            out, err = _digests(self._recorder, stdout, stderr)
            self._recorder.record(
                SubcommandFinished(
                    stage=self._stage,
                    step=self._step,
                    attempt=self._attempt,
                    index=index,
                    exit_code=exit_code,
                    duration_s=duration_s,
                    stdout=out,
                    stderr=err,
                    error=REDACTOR.text(error),
                    note=REDACTOR.text(note),
                ),
                # Like a step's outcome: the write-ahead start is what must be on disk.
                sync=False,
            )

        self._on_loop(record)

    def progress(self, values: Mapping[str, str]) -> None:
        event = StepProgress(
            stage=self._stage,
            step=self._step,
            attempt=self._attempt,
            values={str(k): REDACTOR.text(str(v)) for k, v in values.items()},
        )
        self._on_loop(lambda: self._recorder.record(event))

    def _on_loop(self, fn: Callable[[], T]) -> T:
        if threading.get_ident() == self._loop_thread:
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed back to the reporting thread
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return future.result(timeout=_HANDOFF_TIMEOUT_S)


def _digests(recorder: BuildRecorder, stdout: bytes, stderr: bytes) -> tuple[OutputDigest, OutputDigest]:
    capture = OutputCapture()
    if stdout:
        capture("stdout", stdout)
    if stderr:
        capture("stderr", stderr)
    return capture.finish(recorder.blobs)

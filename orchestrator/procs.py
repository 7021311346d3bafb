"""Every program gmi-fsm starts on this machine starts here: contained, tagged and,
inside a step, recorded.

- **Contained**: a command runs under the step supervisor
  (``orchestrator/supervisor.py``), a child subreaper that kills the command's whole
  process tree when the command ends, when gmi-fsm stops it, or when gmi-fsm dies
  (even by ``kill -9``): nothing a step starts outlives it, however deep it forks and
  even if it calls ``setsid``.
- **Tagged**: inside a step, the environment carries the attempt's command id
  (``GMI_COMMAND_ID``), by which a resume finds survivors if the supervisor itself
  was killed.
- **Recorded**: inside a step, :func:`run` reports each program to the engine
  (``SubcommandStarted`` before it starts, ``SubcommandFinished`` after), so the
  audit shows the exact ``qemu-img`` and ``mkfs`` command lines that made the disk.

The build VM (``qemu-system``) is the one long-lived process: it is a single process
with no children, started with :func:`die_with_parent`, and recorded as a background
program (:func:`record_background`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from orchestrator.secrets import REDACTOR
from orchestrator.stepcontext import current_attempt
from orchestrator.targets.command_ids import COMMAND_ID_VAR

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
SUPERVISOR = str(Path(__file__).with_name("supervisor.py"))
STOP_GRACE_S = 5.0


def supervised(argv: Sequence[str]) -> list[str]:
    """``argv`` under the step supervisor. ``-I -S``: no site-packages, no user
    environment: the supervisor starts in ~15 ms and imports only the standard library."""
    return [sys.executable, "-I", "-S", SUPERVISOR, str(os.getpid()), "--", *argv]


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, plus ``extra``, plus the current attempt's command id."""
    env = {**os.environ, **(extra or {})}
    attempt = current_attempt()
    if attempt is not None:
        env[COMMAND_ID_VAR] = attempt.command_id
    else:
        env.pop(COMMAND_ID_VAR, None)
    return env


# Supervisors alive in this process: Ctrl-C stops them all (worker threads blocked in
# a program's wait return at once instead of holding the interpreter's exit).
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()


def _track(pid: int) -> None:
    with _LIVE_LOCK:
        _LIVE.add(pid)


def _untrack(pid: int) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(pid)


def stop_supervisor(pid: int) -> None:
    """Ask a supervisor to kill its command's whole tree (it exits when none is left)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group (a supervisor leads its own): the fallback when a
    supervisor does not answer."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_all() -> None:
    """Stop every contained command this process started (Ctrl-C, SIGTERM)."""
    with _LIVE_LOCK:
        pids = list(_LIVE)
    for pid in pids:
        stop_supervisor(pid)


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child die with its parent (for the build VM).

    libc and prctl are resolved before fork: after fork only async-signal-safe work
    should happen. The getppid() check closes the race where the parent died between
    fork and prctl. PDEATHSIG fires when the *thread* that forked the child exits:
    start such children from a long-lived thread (the event loop's).
    """
    if sys.platform != "linux":
        return lambda: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:
            os._exit(0)

    return preexec


def masked(argv: Sequence[str]) -> list[str]:
    return [REDACTOR.text(str(a)) for a in argv]


def run(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
    timeout_s: float | None = None,
    record_stdout: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run a program to its end, contained; record it when inside a step.

    Like ``subprocess.run(capture_output=True)``: returns the exit status and both
    outputs; raises ``subprocess.TimeoutExpired`` after stopping the whole tree, and
    ``OSError`` when the program cannot be started (recorded too). ``record_stdout``
    False keeps a sensitive output (a password hash) out of the log.
    """
    attempt = current_attempt()
    index = attempt.journal.subcommand_started(masked(argv), str(cwd or "")) if attempt else 0
    t0 = time.monotonic()

    def finished(code: int | None, out: bytes = b"", err: bytes = b"", error: str = "") -> None:
        if attempt is not None:
            attempt.journal.subcommand_finished(
                index,
                exit_code=code,
                duration_s=round(time.monotonic() - t0, 3),
                stdout=out if record_stdout else b"",
                stderr=err,
                error=error,
                note="" if record_stdout else "its output is not recorded (sensitive)",
            )

    try:
        proc = subprocess.Popen(
            supervised(argv),
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=command_env(env),
            start_new_session=True,
        )
    except OSError as exc:
        finished(None, error=f"cannot start {argv[0]}: {exc.strerror}")
        raise
    _track(proc.pid)
    try:
        try:
            out, err = proc.communicate(input_bytes, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_supervisor(proc.pid)
            try:
                out, err = proc.communicate(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid)
                out, err = proc.communicate()
            finished(None, out, err, error=f"timed out after {timeout_s:g} s; stopped")
            raise subprocess.TimeoutExpired(list(argv), timeout_s or 0, out, err) from None
        except BaseException:
            stop_supervisor(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_GRACE_S)
            kill_group(proc.pid)
            finished(None, error="interrupted; stopped")
            raise
    finally:
        _untrack(proc.pid)
    code = proc.returncode
    if code == 127 and err.startswith(b"gmi-fsm supervisor: cannot run"):
        finished(None, out, err, error=err.decode("utf-8", "replace").strip())
        raise FileNotFoundError(2, err.decode("utf-8", "replace").strip(), argv[0])
    finished(code if code >= 0 else None, out, err, "" if code >= 0 else f"killed by signal {-code}")
    return subprocess.CompletedProcess(list(argv), code, out, err)


def record_background(argv: Sequence[str], pid: int, note: str) -> None:
    """Record a program left running on purpose (the build VM) inside the step."""
    attempt = current_attempt()
    if attempt is None:
        return
    index = attempt.journal.subcommand_started(masked(argv))
    attempt.journal.subcommand_finished(index, exit_code=None, duration_s=0.0, note=f"{note} (pid {pid})")

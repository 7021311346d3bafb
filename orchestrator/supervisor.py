"""The step supervisor: a tiny process between gmi-fsm and every command a step starts,
so that nothing a step starts outlives the step, or gmi-fsm.

Why a process of its own: ``PR_SET_PDEATHSIG`` reaches only the direct child of the
process that dies, and a process group or session is left by anything that calls
``setsid()`` (daemons, ``setsid``, ``nohup ... &`` under some shells). A *child
subreaper* (``PR_SET_CHILD_SUBREAPER``, Linux 3.4) keeps the whole tree: an orphaned
descendant, however deep and whatever session it made, is re-parented to the nearest
subreaper ancestor instead of init. So the supervisor always finds every process of
its command among its own descendants, and when it stops, it kills them all, and
waits until it has no child left: then nothing of the command runs any more.

It stops (killing the whole tree) when:
- the command's main process ends: a step's processes end with the step (like
  systemd's ``KillMode=control-group``), so a forgotten background job can neither
  hold the output pipes open nor repeat its effect after a resume;
- gmi-fsm asks (SIGTERM/SIGINT/SIGHUP: a timeout or Ctrl-C);
- gmi-fsm dies, even by SIGKILL: the kernel sends the supervisor ``SIGUSR1`` (its
  parent-death signal), checked against ``getppid()`` because the signal also fires
  when only the *thread* that started it ends.

Why not a cgroup: cgroup v2 needs a delegated, writable hierarchy (root or systemd
delegation), which CI machines and containers often lack; a subreaper needs nothing.
What escapes a subreaper: a process handed to another service (``systemd-run``, ``at``,
an ``ssh`` to elsewhere) — that is not a descendant. The supervisor itself can be killed
by SIGKILL together with gmi-fsm (a ``kill -9`` of the process group); the tree is then
orphaned, and that is why every command also carries its command id in its
environment (``GMI_COMMAND_ID``), by which a resume finds and stops survivors before it
probes or re-runs an in-doubt step (``orchestrator/engine.py``).

This file runs as a script, ``python -I -S supervisor.py PARENT_PID -- ARGV...``, so it
must import nothing but the standard library (no site-packages: ~15 ms to start).
Exit status: the command's own, or the signal that ended it re-raised on itself.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PARENT_DIED = signal.SIGUSR1
TERM_GRACE_S = 2.0
KILL_PATIENCE_S = 10.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, PARENT_DIED)


class _Stop(Exception):
    """Raised by the signal handler: interrupts ``os.wait()`` at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 2 (comm) may hold spaces and parentheses: fields follow the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            found.append(pid)
            todo.append(pid)
    return found


def _reap() -> bool:
    """Reap every exited child; False once there is no child at all."""
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return True
    except ChildProcessError:
        return False


def _signal_all(sig: int) -> list[int]:
    """Send ``sig`` to every descendant; return those it could not be sent to."""
    refused = []
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            refused.append(pid)
    return refused


def _kill_tree() -> None:
    """End every descendant: SIGTERM (a program may clean up; sudo passes it on to its
    command), then SIGKILL until none is left. As a subreaper we inherit every orphan,
    so "no child left" means "no descendant left". A process we may not signal (a
    command run through sudo by a non-root gmi-fsm, orphaned) is waited for a while,
    then named on stderr: the supervisor never hangs on it."""
    if not _reap():
        # No child at all means no descendant at all (each one is our child or has a
        # living parent in our tree): the common end of a step costs no /proc scan.
        return
    _signal_all(signal.SIGTERM)
    deadline = time.monotonic() + TERM_GRACE_S
    while _reap() and time.monotonic() < deadline and _descendants(os.getpid()):
        time.sleep(0.01)
    deadline = time.monotonic() + KILL_PATIENCE_S
    while True:
        refused = _signal_all(signal.SIGKILL)
        if not _reap():
            return
        if time.monotonic() > deadline:
            left = refused or _descendants(os.getpid())
            sys.stderr.write(f"gmi-fsm supervisor: could not stop pid(s) {left} (not permitted?)\n")
            return
        time.sleep(0.005)


def _end_like(status: int) -> None:
    """Leave with the command's own exit status, or die by its signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def _start_command(command: list[str], libc: ctypes.CDLL) -> int:
    """Fork and exec the command; return its pid (the parent side)."""
    pid = os.fork()
    if pid:
        return pid
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    # Should the supervisor itself be killed, its command dies with it.
    me = os.getppid()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != me:
        os._exit(125)
    try:
        os.execvp(command[0], command)  # noqa: S606 - argv as given: the caller built it
    except OSError as exc:
        sys.stderr.write(f"gmi-fsm supervisor: cannot run {command[0]}: {exc.strerror}\n")
    os._exit(127)


def _become_subreaper(parent: int) -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    if (
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0
        or libc.prctl(PR_SET_PDEATHSIG, PARENT_DIED, 0, 0, 0) != 0
    ):
        sys.stderr.write(f"gmi-fsm supervisor: prctl failed: {os.strerror(ctypes.get_errno())}\n")
        os._exit(125)

    def on_signal(signum: int, _frame: object) -> None:
        # The parent-death signal also fires when only the thread that started us ended.
        if signum == PARENT_DIED and os.getppid() == parent:
            return
        raise _Stop(signum)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, on_signal)
    if os.getppid() != parent:  # gmi-fsm died before the prctl above took effect
        os._exit(125)
    return libc


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: supervisor.py PARENT_PID -- COMMAND [ARG...]\n")
        os._exit(125)
    libc = _become_subreaper(int(argv[1]))
    status = 0
    try:
        main_pid = _start_command(argv[3:], libc)
        while True:
            pid, status = os.wait()
            if pid == main_pid:
                break
    except _Stop as stop:
        _kill_tree()
        signal.signal(stop.signum, signal.SIG_DFL)
        os._exit(128 + stop.signum)
    except ChildProcessError:
        pass
    # The step's command is over: whatever it left running goes with it.
    try:
        _kill_tree()
    except _Stop:
        _kill_tree()
    _end_like(status)


if __name__ == "__main__":
    main(sys.argv)

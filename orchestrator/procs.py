"""Child processes that never outlive the orchestrator.

``die_with_parent`` is a ``preexec_fn``: Linux delivers SIGKILL to the child when the
process that started it dies, even by ``kill -9``. So a crashed run leaves no
command or VM behind; the next run starts from the event log, not from leftovers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child die with its parent.

    libc and prctl are resolved before fork: after fork only async-signal-safe work
    should happen. The getppid() check closes the race where the parent died between
    fork and prctl (the child would then never get the signal). PDEATHSIG fires when
    the *thread* that forked the child exits: start children from a long-lived thread
    (the main thread, or the event loop's).
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


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group (commands run in their own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)

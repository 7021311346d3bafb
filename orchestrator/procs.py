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

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # If the parent died before prctl ran, we were re-parented already: stop now.
    if os.getppid() == 1:
        os._exit(1)


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group (commands run in their own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)

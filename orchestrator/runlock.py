"""One runner per build: an exclusive ``flock`` held for the whole run.

The unique ``(build_id, seq)`` index only stops a second runner at the moment both
append the same seq. A runner that starts *while* another is waiting on a command
reads a step that is started but not finished, takes it for "in doubt" and would run
it again. So a run first takes this lock (non-blocking): if another live process
holds it, the run stops before it reads or sends anything. The kernel drops the lock
when its process dies (even by SIGKILL), so a crashed run never blocks a resume.

The lock files live beside the database, in ``<db>.runners/``, one per build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from events.errors import ConcurrencyError, StoreError


def lock_path(db: Path, build_id: str) -> Path:
    digest = hashlib.sha256(build_id.encode()).hexdigest()[:32]
    return db.with_name(db.name + ".runners") / f"{digest}.lock"


@contextlib.contextmanager
def runner_lock(db: Path, build_id: str) -> Iterator[None]:
    """Hold build ``build_id``'s runner lock, or raise :class:`ConcurrencyError`."""
    path = lock_path(db, build_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(
            f"cannot create the runner lock {path}: {exc.strerror}",
            hint="the folder of the event database must be writable",
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise ConcurrencyError(
                f"build {build_id} is being driven by another runner ({holder}); this run "
                "stopped before reading or sending anything",
                hint=f"wait for it to finish, or check `gmi-fsm status {build_id}`",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # also releases the lock


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "a live process"

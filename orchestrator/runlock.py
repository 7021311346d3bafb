"""One runner per build: an exclusive lock held for the whole run, in the database file.

The unique ``(build_id, seq)`` index only stops a second runner at the moment both
append the same seq. A runner that starts *while* another is waiting on a command
reads a step that is started but not finished, takes it for "in doubt" and would run
it again. So a run first takes this lock (non-blocking): if another live process
holds it, the run stops before it reads or sends anything. Operator decisions, spec
changes and aborts take the same lock.

The lock is keyed by the database *file*, not by the path typed: it is an open file
description lock on the build's byte of the database file itself
(:mod:`events.filelock`), so a symlink, a hard link, a relative path or a bind mount
of the file all reach the same lock. The kernel drops it when its process dies (even
by SIGKILL), so a crashed run never blocks a resume.

It is re-entrant within a process (``resume --decision`` holds it, then drives the
build with ``builds.run``, which takes it again). A note of who holds it (pid and
host) is written beside the database's real path, for the loser's message only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from events.errors import ConcurrencyError, StoreError
from events.filelock import RUNNERS_BASE, database_fd, slot, try_lock, unlock

# (dev, ino, build) -> (thread holding it, depth). Another thread of this process is
# refused explicitly: an open file description's locks never conflict with each other.
_held: dict[tuple[int, int, str], tuple[int, int]] = {}
_guard = threading.Lock()


def note_path(db: Path, build_id: str) -> Path:
    digest = hashlib.sha256(build_id.encode()).hexdigest()[:32]
    real = Path(os.path.realpath(db))
    return real.with_name(real.name + ".runners") / f"{digest}.holder"


@contextlib.contextmanager
def runner_lock(db: Path, build_id: str) -> Iterator[None]:
    """Hold build ``build_id``'s runner lock, or raise :class:`ConcurrencyError`.

    A database that does not exist yet holds no build: there is nothing to lock."""
    try:
        fd, (dev, ino) = database_fd(db)
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        raise StoreError(
            f"cannot open the event database {db} to take the runner lock: {exc.strerror}",
            hint="check the file's permissions, or choose another --db",
        ) from exc
    key = (dev, ino, build_id)
    offset = slot(RUNNERS_BASE, build_id)
    me = threading.get_ident()
    with _guard:
        owner, depth = _held.get(key, (me, 0))
        if owner != me:
            raise _busy(db, build_id)
        if depth == 0:
            try:
                taken = try_lock(fd, offset, exclusive=True)
            except OSError as exc:  # EBADF: the file could only be opened read-only
                raise StoreError(
                    f"event database {db} cannot be written or opened (attempt to write a readonly "
                    f"database); the runner lock needs write access ({exc.strerror}): no build can run on it",
                    hint="check the file's and its folder's permissions (and `lsattr` for the immutable "
                    "attribute), or choose another --db",
                ) from exc
            if not taken:
                raise _busy(db, build_id)
        _held[key] = (me, depth + 1)
    try:
        if depth == 0:
            _write_note(db, build_id)
        yield
    finally:
        with _guard:
            depth = _held.pop(key)[1] - 1
            if depth:
                _held[key] = (me, depth)
            else:
                with contextlib.suppress(OSError):
                    note_path(db, build_id).unlink(missing_ok=True)
                unlock(fd, offset)


def _busy(db: Path, build_id: str) -> ConcurrencyError:
    return ConcurrencyError(
        f"build {build_id} is being driven by another runner ({_holder(db, build_id)}); "
        "this run stopped before reading or sending anything",
        hint=f"wait for it to finish, or check `gmi-fsm status {build_id}`",
    )


def _write_note(db: Path, build_id: str) -> None:
    path = note_path(db, build_id)
    with contextlib.suppress(OSError):  # only a courtesy for the loser's message
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")


def _holder(db: Path, build_id: str) -> str:
    try:
        text = note_path(db, build_id).read_text("utf-8", "replace").strip()[:200]
    except OSError:
        text = ""
    return text or "a live process"

"""Locks held in the database file itself, so every path to it shares them.

A lock file beside ``events.db`` is found by the path a process was given: reach the
database through a symlink, a hard link or a bind mount of the file and the lock
file is another one. These locks live on the database file's inode instead: Linux
*open file description* locks (``F_OFD_SETLK``) on byte ranges far beyond anything
SQLite locks (SQLite's own POSIX locks sit around offset 2**30; locks may lie past
the end of a file). The kernel drops them when their holder dies, even by SIGKILL.

One descriptor per database file per process, opened once and never closed: closing
*any* descriptor of a file drops every POSIX lock this process holds on it, and
SQLite's own locks are POSIX locks (sqlite.org/howtocorrupt.html, section 2.2).
``O_CLOEXEC`` keeps it from the commands a build runs.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import struct
import threading
from pathlib import Path

# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid (0 for open file description locks), native alignment.
_FLOCK = "hhqqi4x"

NAMES_BASE = 1 << 61  # one byte per name a process opened the database by (shared locks)
RUNNERS_BASE = 1 << 62  # one byte per build: its runner (an exclusive lock)
SPAN = 1 << 60  # each region's size; both end below 2**63

_fds: dict[tuple[int, int], int] = {}
_guard = threading.Lock()


def slot(base: int, key: str) -> int:
    """The byte for ``key`` in a region (60 bits of its sha256: no collisions in practice)."""
    return base + int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)


def identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def database_fd(path: Path) -> tuple[int, tuple[int, int]]:
    """This process's descriptor of the file at ``path`` (opened once), and the file's
    identity (st_dev, st_ino). Raises OSError (FileNotFoundError if it is not there)."""
    key = identity(path)
    with _guard:
        fd = _fds.get(key)
        if fd is not None:
            return fd, key
        flags = os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        try:
            fd = os.open(path, os.O_RDWR | flags)
        except PermissionError:
            fd = os.open(path, os.O_RDONLY | flags)  # read-only: shared locks only
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            fd = os.open(path, os.O_RDONLY | flags)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)  # not a database file: no SQLite lock can be on it
            raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
        key = (st.st_dev, st.st_ino)
        # Another thread may have raced us to the same file: keep its descriptor
        # (ours is leaked rather than closed, for the reason in the module docstring).
        return _fds.setdefault(key, fd), key


def _flock(kind: int, start: int, length: int = 1) -> bytes:
    return struct.pack(_FLOCK, kind, os.SEEK_SET, start, length, 0)


def try_lock(fd: int, offset: int, *, exclusive: bool) -> bool:
    """Take the lock at ``offset``; False if another holder conflicts."""
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(kind, offset))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def unlock(fd: int, offset: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK, offset))


def others_hold(fd: int, start: int, end: int) -> bool:
    """Whether another open file description holds any lock in [start, end)."""
    if end <= start:
        return False
    got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, start, end - start))
    return bool(struct.unpack(_FLOCK, got)[0] != fcntl.F_UNLCK)


_names: dict[tuple[int, int], dict[str, int]] = {}


class NameConflict(Exception):
    """The database file is open under another name (see :func:`claim_name`)."""


def claim_name(path: Path, name: str) -> tuple[int, int, int]:
    """Record that this process opens the database at ``path`` by ``name`` (its real
    path), and refuse if any process has it open by another name: SQLite keeps the
    write-ahead log and its index beside the name it is given (``<name>-wal``), so two
    names for one file mean two logs, and lost or mixed transactions. Returns the
    claim for :func:`release_name`."""
    fd, key = database_fd(path)
    offset = slot(NAMES_BASE, name)
    with _guard:
        names = _names.setdefault(key, {})
        if any(n != name for n in names):
            raise NameConflict(f"this process has it open as {next(n for n in names if n != name)}")
        if name not in names and not try_lock(fd, offset, exclusive=False):
            raise NameConflict("another process holds its name lock")  # only shared locks live there
        names[name] = names.get(name, 0) + 1
    if others_hold(fd, NAMES_BASE, offset) or others_hold(fd, offset + 1, NAMES_BASE + SPAN):
        release_name((key[0], key[1], offset), name)
        raise NameConflict("another process has it open by another path")
    return key[0], key[1], offset


def release_name(claim: tuple[int, int, int], name: str) -> None:
    dev, ino, offset = claim
    with _guard:
        names = _names.get((dev, ino), {})
        left = names.get(name, 0) - 1
        if left > 0:
            names[name] = left
            return
        names.pop(name, None)
        fd = _fds.get((dev, ino))
    if fd is not None:
        unlock(fd, offset)

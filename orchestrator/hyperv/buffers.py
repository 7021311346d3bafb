"""Big transfer buffers without a page fault per byte.

glibc gives every allocation above its mmap threshold its own ``mmap`` and returns it
with ``munmap`` when freed (it raises the threshold after such a free, but trims the heap
top back to the kernel past twice that): a transfer that makes and drops several 1 MiB
buffers per request then pays for 256 fresh, zero-filled pages each time. smbprotocol
copies every SMB2 WRITE a few times as it frames and signs it, so on this machine
concatenating 1 MiB took 3.5 ms instead of 0.07 ms, and the SMB upload spent three
times the CPU of the whole transfer in page faults (docs/performance.md, "Transfers").

:func:`keep_big_buffers` lets glibc serve buffers up to 32 MiB from its heap and keep up
to 128 MiB of freed heap for reuse: for the rest of the process, which is a gmi-fsm run
doing a transfer. Elsewhere than glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's own ceiling for the dynamic threshold (64-bit)
TRIM_THRESHOLD_BYTES = 128 << 20

_done = False


def keep_big_buffers() -> bool:
    """Tune glibc once per process; True when it took effect."""
    global _done  # noqa: PLW0603  # once per process, by design
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    _done = ok
    return ok

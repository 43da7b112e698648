"""Give memory freed after a burst of large messages back to the system.

glibc's malloc serves an allocation above its mmap threshold (128 KiB) with
its own mapping, returned to the system when freed; but each such free raises
the threshold (up to 32 MiB), so after a burst of multi-megabyte messages later
ones come from the heap arenas, whose free space fragments and stays resident.
A node that answered 200 zero-window slow readers a 2 MB task each kept about
1 GB after every socket was closed (issue 9). Fixing the threshold stops the
drift: large buffers keep their own mappings and leave with their last use.
Small allocations (20,000 streams of a connection flood) still leave free
pages inside the arenas; :func:`trim_periodically` hands those back.
"""

from __future__ import annotations

import asyncio
import ctypes
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_INTERVAL", "limit_heap_retention", "trim_periodically"]

MMAP_THRESHOLD = 128 * 1024
TRIM_INTERVAL = 30.0
_M_MMAP_THRESHOLD = -3  # malloc.h


def _glibc() -> ctypes.CDLL | None:
    return ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None


def limit_heap_retention(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process.

    Call once at process start (it affects every later allocation, of every
    thread). Returns False, changing nothing, on a C library other than glibc.
    """
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """Every ``interval`` seconds, return free heap pages to the system
    (glibc's ``malloc_trim(0)``, in a worker thread so the loop never waits
    on it); returns at once on another C library. Runs until cancelled."""
    libc = _glibc()
    if libc is None:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(libc.malloc_trim, 0)

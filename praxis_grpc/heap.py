"""Give memory freed after a burst of large messages back to the system.

glibc's malloc serves an allocation above its mmap threshold (128 KiB) with
its own mapping, returned to the system when freed; but each such free raises
the threshold (up to 32 MiB), so after a burst of multi-megabyte messages later
ones come from the heap arenas, whose free space fragments and stays resident.
A node that answered 200 zero-window slow readers a 2 MB task each kept about
1 GB after every socket was closed (issue 9). Fixing the threshold stops the
drift: large buffers keep their own mappings and leave with their last use.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["MMAP_THRESHOLD", "limit_heap_retention"]

MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # malloc.h


def limit_heap_retention(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process.

    Call once at process start (it affects every later allocation, of every
    thread). Returns False, changing nothing, on a C library other than glibc.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))

"""``keep_freed_memory``: stop glibc from handing every large freed block back to the kernel.

glibc serves a request above its mmap threshold (adaptive, at most 32 MiB) with a fresh ``mmap`` and
unmaps it on ``free``. A training step allocates and frees the same activation buffers every step,
many of them above that size, so each step page-faults and zeroes gigabytes again: on 2 cores a third
of the training time went to the kernel. Raising the mmap threshold, and turning off the trimming of
the heap's free top (glibc returns it beyond 128 KiB), keeps freed memory for the next step
(``bench/malloc.py`` measures the step time both ways). The cost is that the process keeps its peak
resident size. Jobs call this first; it does nothing off glibc or when the user set the thresholds
through ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_LIMIT = 2**31 - 1  # the largest int (mallopt's type): only larger requests get their own mmap
NEVER_TRIM = -1  # documented: a trim threshold of -1 turns trimming off


def keep_freed_memory() -> bool:
    """Serve requests up to ``MMAP_LIMIT`` from the heap and never trim it; True when both were set."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False  # musl, macOS: another allocator, other rules
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_LIMIT)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
    )

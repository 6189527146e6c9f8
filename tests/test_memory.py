"""keep_freed_memory: a freed block above glibc's largest default mmap threshold stays in the heap."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc only"
)

# Frees a 64 MiB block (twice the largest adaptive mmap threshold) and prints the free bytes the heap
# then holds (mallinfo2's fordblks): the whole block if it stayed, next to nothing if it was unmapped.
PROBE = """
import ctypes, sys
from e2wm.memory import keep_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
block = libc.malloc(64 << 20)
libc.free(block)
print(kept, libc.mallinfo2().fordblks)
"""


def probe(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | (env or {})
    cmd = [sys.executable, "-c", PROBE, mode]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    kept, free = out.stdout.split()
    return kept, int(free)


@glibc
def test_freed_block_stays_in_the_heap():
    kept, free = probe("keep")
    assert kept == "True" and free >= 64 << 20
    kept, free = probe("default")  # the control: glibc unmaps it
    assert kept == "None" and free < 64 << 20


@glibc
def test_user_thresholds_are_left_alone():
    kept, free = probe("keep", {"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert kept == "False" and free < 64 << 20

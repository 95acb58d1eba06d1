"""The process's memory allocator, tuned for repeated large tensor allocations.

glibc's malloc hands a block larger than its mmap threshold (dynamic, at most 32 MiB)
back to the kernel when it is freed, so every forward pass that allocates such an
activation again pays page faults for fresh pages: a third of a metrics job's CPU time
on the default experiment (``benchmarks/results/allocator-cpu.txt``). Every
``cambench`` command therefore keeps blocks up to :data:`MMAP_THRESHOLD` in the heap for
reuse, and lets the heap hold up to :data:`TRIM_THRESHOLD` of free memory instead of
trimming it at once. Computed numbers do not change. The thresholds are the smallest
that keep the gain on the default experiment (activations of 33 MB; a trim threshold
of 128 MiB already brings back half of the page faults); larger blocks are mapped as
glibc does by default, so a job's peak memory grows by at most the trim threshold (at
224 px, thresholds of 256 MiB / 1 GiB added 1.5–2.1 GB to a Score-CAM job's peak). Imports
nothing heavy: the CLI calls it first.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter codes (malloc.h)
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20


def tune_allocator() -> bool:
    """Raise glibc malloc's mmap and trim thresholds for this process (module doc).

    Does nothing, and returns False, off glibc or when the user already tunes malloc
    through ``MALLOC_*`` or ``GLIBC_TUNABLES`` environment variables.
    """
    if not sys.platform.startswith("linux"):
        return False
    if any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )

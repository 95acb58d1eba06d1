"""OpenMP threads that sleep, rather than spin, while they wait for work.

torch's CPU kernels run on OpenMP threads (libgomp), which by default spin for a
while after each parallel region, waiting for the next one. Where the cores are
shared (Snakemake running jobs side by side, other users' processes), the spinning
threads burn the cores that the other processes need. One training epoch of the
default baseline on 2 threads beside two busy processes: 38.9 s (38.3 s of CPU) with
the default policy, 17.6 s (13.9 s) with ``OMP_WAIT_POLICY=PASSIVE``; on idle cores
9.1 against 9.7 s (``benchmarks/contention.py``,
``benchmarks/results/contention-cpu.txt``). Every
``cambench`` command therefore asks for the passive policy before torch is loaded,
unless the user set one. Computed numbers do not change: the policy decides how an
idle thread waits, not how the work is split.
"""

from __future__ import annotations

import os
import sys


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for this process and its children, unless the
    user set a policy or torch (and with it the OpenMP runtime) is already loaded, in
    which case the setting would come too late. Returns whether it was set."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True

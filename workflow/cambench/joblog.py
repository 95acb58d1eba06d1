"""What every job writes to its log: a header (job, its settings, device, threads,
inputs, cambench version), progress, and a closing line (outputs, duration).

Progress is tqdm's bar on a terminal; in a log file (no terminal) it is a plain line
at most every :data:`INTERVAL` seconds and at the end, so logs stay readable.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from cambench import __version__

INTERVAL = 30.0  # seconds between plain progress lines
T = TypeVar("T")


def header(job: str, settings: dict[str, Any], inputs: Sequence[str] = ()) -> float:
    """Print the job's header; returns the start time for :func:`footer`."""
    # torch's own count where the job uses torch (set from --threads, or from the
    # OMP_NUM_THREADS that Snakemake sets to the rule's threads), else that variable
    torch = sys.modules.get("torch")
    threads = str(torch.get_num_threads()) if torch else os.environ.get("OMP_NUM_THREADS", "")
    lines = [
        f"cambench {__version__} · {job} · {platform.node()} · python {platform.python_version()}"
    ]
    for key, value in settings.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        lines.append(f"  {key}: {text}")
    if threads:
        lines.append(f"  threads: {threads}")
    for path in inputs:
        lines.append(f"  input: {path}")
    print("\n".join(lines), flush=True)
    return time.perf_counter()


def footer(start: float, outputs: Sequence[str]) -> None:
    """Print what the job wrote and how long it took."""
    seconds = time.perf_counter() - start
    for path in outputs:
        print(f"  wrote: {path}", flush=True)
    print(f"done in {seconds:.2f} s", flush=True)


def progress(items: Iterable[T], desc: str, total: int, enabled: bool = True) -> Iterator[T]:
    """``items`` with progress: a tqdm bar on a terminal, plain lines in a log file."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, unit="batch")
        return
    start = last = time.perf_counter()
    for done, item in enumerate(items, start=1):
        yield item
        now = time.perf_counter()
        if now - last >= INTERVAL or done == total:
            last = now
            print(f"{desc}: {done}/{total} batches, {now - start:.1f} s", flush=True)

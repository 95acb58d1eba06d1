"""The end of a benchmark's report: the machine's load, printed, and appended to the
results file when one is given (results files keep every run, newest last)."""

from __future__ import annotations

import os


def finish_report(lines: list[str], output: str = "") -> int:
    """Print ``lines`` with the load average at the end; append them to ``output``."""
    report = "\n".join([*lines, f"load average at end {os.getloadavg()[0]:.1f}"])
    print(report)
    if output:
        with open(output, "a") as f:
            f.write(report + "\n")
    return 0

"""Every cambench command asks OpenMP for passive waiting (cambench.openmp) before
torch loads, and leaves a policy the user chose alone."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import os, sys\n"
    "from cambench.cli import main\n"
    "assert 'torch' not in sys.modules\n"
    "main(['cache', 'inspect', sys.argv[1]])\n"
    "print(os.environ['OMP_WAIT_POLICY'])\n"
)


def _policy(tmp_path, **env: str) -> str:
    missing = tmp_path / "none.h5"
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(missing)],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[-1]


def test_commands_ask_for_passive_waiting_before_torch_loads(tmp_path):
    assert _policy(tmp_path) == "PASSIVE"


def test_the_users_policy_wins(tmp_path):
    assert _policy(tmp_path, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"

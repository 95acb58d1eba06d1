"""The data job: generate or import the dataset into ``data/{train,test}.h5``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cambench import joblog
from cambench.data import prepare_dataset


def run(
    dataset: dict[str, Any], out_train: str | os.PathLike, out_test: str | os.PathLike
) -> dict[str, Path]:
    """Prepare both splits of the config's ``dataset`` mapping."""
    start = joblog.header("prepare-data", {"dataset": dataset})
    paths = prepare_dataset(dataset, {"train": out_train, "test": out_test})
    joblog.footer(start, [str(p) for p in paths.values()])
    return paths

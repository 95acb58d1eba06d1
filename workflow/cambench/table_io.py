"""Reading and writing cambench's tables (per-image metrics, summaries, sanity-check
results, training histories), with errors that name the file: the one CSV reader of
the package. Imports neither torch nor matplotlib."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cambench.atomic import atomic_output


def read_table(path: str | os.PathLike, what: str, required: Sequence[str] = ()) -> pd.DataFrame:
    """Read one CSV; ``ValueError`` naming the file when it is missing, unreadable or lacks
    a ``required`` column (``what`` says what the file should hold)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as err:
        raise ValueError(f"{path}: {what} not found") from err
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV file ({err})") from err
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"{what} need {list(required)}"
        )
    return frame


def read_tables(
    paths: Sequence[str | os.PathLike], what: str, required: Sequence[str] = ()
) -> pd.DataFrame:
    """:func:`read_table` of each of ``paths`` (a non-empty list), concatenated."""
    if isinstance(paths, (str, os.PathLike)) or not paths:
        raise ValueError(f"expected a non-empty list of CSV files of {what}, got {paths!r}")
    return pd.concat([read_table(p, what, required) for p in paths], ignore_index=True)


def read_optional_tables(
    paths: Sequence[str | os.PathLike], what: str, required: Sequence[str] = ()
) -> pd.DataFrame:
    """:func:`read_tables`, or an empty frame when ``paths`` is empty; empty files are
    skipped."""
    frames = [read_table(p, what, required) for p in paths]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read one JSON file; ``ValueError`` naming the file when it is missing or broken."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read {what} ({err})") from err


def write_csv(path: str | os.PathLike, frame: pd.DataFrame, float_format: str) -> None:
    """Write ``frame`` to ``path`` atomically (no index column)."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, index=False, float_format=float_format)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically (training histories)."""
    write_text(path, json.dumps(payload, indent=2) + "\n")

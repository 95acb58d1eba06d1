"""Reading the CSV tables the figures are drawn from, with errors that name the file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


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

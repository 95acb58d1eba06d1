"""Whole-file checksums of the HDF5 files cambench writes (no torch, no h5py).

A file is *sealed* when complete: a trailer with the SHA-256 of every byte before it
is appended. Readers *verify* it before any parser touches the file, so corruption
anywhere in it is a clear error naming the file (never a segfault or a hang inside
HDF5's parser, which trusts its own metadata).

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "x.h5")
>>> _ = open(path, "wb").write(b"some HDF5 bytes")
>>> seal(path); verify(path)
>>> data = bytearray(open(path, "rb").read()); data[3] ^= 1
>>> _ = open(path, "wb").write(bytes(data))
>>> try:
...     verify(path)
... except CorruptFileError as err:
...     print(str(err).split(": ", 1)[1])
checksum mismatch, the file is corrupt; delete it and rerun the job that wrote it
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np


class CorruptFileError(ValueError):
    """A file whose checksum is missing or wrong; the message names it."""


#: A complete file ends with this tag, the SHA-256 (hex) of every byte before
#: the tag, and a newline. HDF5 ignores bytes past its end-of-file address, so the file
#: reads as usual; the digest is verified before HDF5 parses anything, so a flipped
#: byte anywhere (superblock, B-trees, chunk index, attributes, data) is an error
#: naming the file, never a crash, a hang or a silently wrong map.
CHECKSUM_TAG = b"\ncambench-sha256:"
_TRAILER = len(CHECKSUM_TAG) + 64 + 1


#: Split files (``data/*.h5``, up to gigabytes of images) end instead with a *sparse*
#: trailer: the byte ranges of their image and mask chunks, the range count (8 bytes),
#: this tag, the SHA-256 of every byte outside those ranges followed by the ranges
#: themselves, and a newline. Opening a split then reads its metadata, not its images;
#: each skipped chunk carries HDF5's Fletcher-32 checksum, which HDF5 checks before
#: decompressing it whenever it is read.
SPARSE_TAG = b"\ncambench-sha256-sparse:"
_RANGE = np.dtype("<i8")


def _merge(ranges: Iterable[tuple[int, int]]) -> np.ndarray:
    """Sorted (offset, length) ranges with adjacent or overlapping ones merged, (n, 2)."""
    merged: list[list[int]] = []
    for start, length in sorted((int(a), int(b)) for a, b in ranges if int(b) > 0):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + length - merged[-1][0])
        else:
            merged.append([start, length])
    return np.asarray(merged, dtype=_RANGE).reshape(-1, 2)


def _hash_outside(f, end: int, ranges: np.ndarray, digest) -> None:
    """Feed ``digest`` every byte of ``f`` before ``end`` that is outside ``ranges``."""
    position = 0
    for start, length in [*ranges.tolist(), [end, 0]]:
        f.seek(position)
        remaining = start - position
        while remaining > 0:
            block = f.read(min(1 << 20, remaining))
            if not block:
                return
            digest.update(block)
            remaining -= len(block)
        position = start + length


def seal(path: str | os.PathLike, skip: Iterable[tuple[int, int]] | None = None) -> None:
    """Append the checksum trailer to the finished HDF5 file ``path``; ``skip``: the
    (offset, length) byte ranges of chunks that carry their own checksum, left out of
    the digest (a sparse trailer)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if skip is None:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
            trailer = CHECKSUM_TAG
        else:
            ranges = _merge(skip)
            _hash_outside(f, os.fstat(f.fileno()).st_size, ranges, digest)
            table = ranges.tobytes() + np.int64(len(ranges)).astype(_RANGE).tobytes()
            digest.update(table)
            trailer = table + SPARSE_TAG
    with open(path, "ab") as f:
        f.write(trailer + digest.hexdigest().encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def verify(path: str | os.PathLike, what: str = "saliency") -> None:
    """CorruptFileError naming ``path`` unless it ends with a checksum trailer that matches
    its content (:func:`seal`); ``what`` names the kind of file in the messages."""
    path = Path(path)
    short = CorruptFileError(
        f"{path}: corrupt or not an HDF5 file of cambench's (too short); delete it and rerun"
    )
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            tail_size = min(size, len(SPARSE_TAG) + 8 + 65)
            f.seek(size - tail_size)
            tail = f.read(tail_size)
            digest = hashlib.sha256()
            if (
                tail.endswith(b"\n")
                and tail[:-65].endswith(SPARSE_TAG)
                and tail_size >= len(SPARSE_TAG) + 73
            ):
                n = int(np.frombuffer(tail[:8], _RANGE)[0])
                table_end = size - len(SPARSE_TAG) - 65
                end = table_end - 8 - 16 * n
                if n < 0 or end < 0:
                    raise CorruptFileError(
                        f"{path}: checksum trailer is corrupt; delete it and rerun the job "
                        "that wrote it"
                    )
                f.seek(end)
                table = f.read(table_end - end)
                ranges = np.frombuffer(table[:-8], _RANGE).reshape(-1, 2)
                starts, ends = ranges[:, 0], ranges[:, 0] + ranges[:, 1]
                if (ranges < 0).any() or (ends > end).any() or (starts[1:] < ends[:-1]).any():
                    raise CorruptFileError(
                        f"{path}: checksum trailer is corrupt; delete it and rerun the job "
                        "that wrote it"
                    )
                _hash_outside(f, end, ranges, digest)
                digest.update(table)
            elif tail.endswith(b"\n") and tail[:-65].endswith(CHECKSUM_TAG):
                f.seek(0)
                remaining = size - len(CHECKSUM_TAG) - 65
                while remaining > 0:
                    block = f.read(min(1 << 20, remaining))
                    if not block:
                        break
                    digest.update(block)
                    remaining -= len(block)
            elif size < _TRAILER:
                raise short
            else:
                raise CorruptFileError(
                    f"{path}: corrupt or not an HDF5 file of cambench's: no checksum at its end "
                    "(cut short, or written by an older cambench); delete it and rerun the job "
                    "that wrote it"
                )
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: {what} file does not exist") from None
    except IsADirectoryError:
        raise CorruptFileError(f"{path}: is a directory, not a cambench file") from None
    if digest.hexdigest().encode() != tail[-65:-1]:
        raise CorruptFileError(
            f"{path}: checksum mismatch, the file is corrupt; delete it and rerun the job that wrote it"
        )

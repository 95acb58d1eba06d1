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
from pathlib import Path


class CorruptFileError(ValueError):
    """A file whose checksum is missing or wrong; the message names it."""


#: A complete file ends with this tag, the SHA-256 (hex) of every byte before
#: the tag, and a newline. HDF5 ignores bytes past its end-of-file address, so the file
#: reads as usual; the digest is verified before HDF5 parses anything, so a flipped
#: byte anywhere (superblock, B-trees, chunk index, attributes, data) is an error
#: naming the file, never a crash, a hang or a silently wrong map.
CHECKSUM_TAG = b"\ncambench-sha256:"
_TRAILER = len(CHECKSUM_TAG) + 64 + 1


def seal(path: str | os.PathLike) -> None:
    """Append the checksum trailer to the finished HDF5 file ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    with open(path, "ab") as f:
        f.write(CHECKSUM_TAG + digest.hexdigest().encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def verify(path: str | os.PathLike, what: str = "saliency") -> None:
    """CorruptFileError naming ``path`` unless it ends with a checksum trailer that matches
    its content (:func:`seal`); ``what`` names the kind of file in the messages."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size < _TRAILER:
                raise CorruptFileError(
                    f"{path}: corrupt or not an HDF5 file of cambench's (too short); delete it and rerun"
                )
            f.seek(size - _TRAILER)
            trailer = f.read(_TRAILER)
            if not trailer.startswith(CHECKSUM_TAG) or not trailer.endswith(b"\n"):
                raise CorruptFileError(
                    f"{path}: corrupt or not an HDF5 file of cambench's: no checksum at its end "
                    "(cut short, or written by an older cambench); delete it and rerun the job "
                    "that wrote it"
                )
            digest = hashlib.sha256()
            remaining = size - _TRAILER
            f.seek(0)
            while remaining:
                block = f.read(min(1 << 20, remaining))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: {what} file does not exist") from None
    except IsADirectoryError:
        raise CorruptFileError(f"{path}: is a directory, not a cambench file") from None
    if digest.hexdigest().encode() != trailer[len(CHECKSUM_TAG) : -1]:
        raise CorruptFileError(
            f"{path}: checksum mismatch, the file is corrupt; delete it and rerun the job that wrote it"
        )

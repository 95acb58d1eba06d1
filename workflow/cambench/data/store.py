"""The prepared-dataset file format: one HDF5 file per split, read lazily.

Datasets: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,), ``masks`` bool (N, H, W)
(ground-truth object masks; all False where a dataset has none). Attributes:
``class_names`` (JSON list), ``dataset``, ``split`` and the generator's parameters.

Scale: ``images`` and ``masks`` are stored one image per HDF5 chunk (gzip level 1),
so reading an image decompresses that image only. :func:`read_split` keeps the file
open and loads only the labels (8 bytes an image); images and masks are
:class:`Rows`, read from the file when indexed — a job touching a batch reads that
batch, whatever the split's size (ImageNet's 50 000 validation images at 224 × 224 are
7.5 GB of uint8 images and 2.5 GB of masks). Files written before this layout (64
images a chunk) read the same, through a larger chunk cache.

Integrity: a complete file ends with a SHA-256 trailer (:mod:`cambench.checksum`) of
every byte except the ``images`` and ``masks`` chunks, verified by :func:`read_split`
before HDF5 parses the file, so a flipped byte in the superblock, B-trees, chunk index,
attributes or labels is an error naming the file, never a crash inside HDF5, and
opening a split still reads its metadata only. Every chunk carries HDF5's Fletcher-32
checksum, checked before it is decompressed whenever it is read.

:class:`SplitWriter` writes a split batch by batch (image-folder preparation streams
through it); :func:`write_split` writes an in-memory :class:`Split`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import torch

from cambench import checksum
from cambench.atomic import atomic_output

REQUIRED = ("images", "labels", "masks")
#: Per-dataset chunk cache of an opened split: a whole old-layout chunk (64 images of
#: 3 × 224 × 224 = 9.6 MB) stays cached, so reading its images one by one
#: decompresses it once.
CHUNK_CACHE_BYTES = 32 * 1024 * 1024
#: Images per write of :func:`write_split` (its peak memory beyond the split's own).
WRITE_BLOCK = 256


def _positions(key: Any, n: int) -> np.ndarray | slice:
    """``key`` (int, slice, int or bool array/tensor/list) as a contiguous slice when
    it is one, otherwise as int64 positions in ``[0, n)`` in the order given."""
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step == 1:
            return slice(start, max(start, stop))
        return np.arange(start, stop, step, dtype=np.int64)
    if isinstance(key, torch.Tensor):
        key = key.detach().cpu().numpy()
    array = np.asarray(key)
    if array.dtype == bool:
        if array.shape != (n,):
            raise IndexError(f"boolean index of shape {array.shape} for {n} rows")
        return np.flatnonzero(array)
    if not np.issubdtype(array.dtype, np.integer):
        raise IndexError(f"rows are indexed by integers, slices or booleans, not {array.dtype}")
    positions = array.astype(np.int64).reshape(-1)
    positions = np.where(positions < 0, positions + n, positions)
    if positions.size and (positions.min() < 0 or positions.max() >= n):
        raise IndexError(f"row index out of range for {n} rows")
    return positions


def _is_scalar(key: Any) -> bool:
    return isinstance(key, (int, np.integer)) or (
        isinstance(key, (torch.Tensor, np.ndarray)) and key.ndim == 0 and key.dtype != bool
    )


class Rows:
    """The rows (first axis) of an HDF5 dataset, read when indexed, as torch tensors.

    ``rows[k]``, ``rows[a:b]``, ``rows[a:b:s]``, ``rows[index]`` (int or bool tensor,
    array or list, any order, repeats allowed) read exactly those rows: the distinct
    positions, sorted, in runs of consecutive rows (one HDF5 read per run), then put
    in the order asked. A tuple key indexes the rows by its first element and the
    result by the rest (``rows[:, 0, 0, 0]``).
    """

    def __init__(self, dataset: h5py.Dataset, dtype: np.dtype | type) -> None:
        self.dataset = dataset
        self.np_dtype = np.dtype(dtype)
        self.shape: tuple[int, ...] = tuple(int(s) for s in dataset.shape)
        self.dtype = torch.from_numpy(np.zeros(0, self.np_dtype)).dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Rows({self.dataset.name!r}, shape={self.shape}, dtype={self.dtype})"

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, tuple):
            rows, rest = key[0], key[1:]
            picked = self[rows]
            return picked[rest] if _is_scalar(rows) else picked[(slice(None), *rest)]
        if _is_scalar(key):
            key = int(key)
            k = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= k < len(self):
                raise IndexError(f"row {int(key)} out of range for {len(self)} rows")
            return self.read(slice(k, k + 1))[0]
        return self.read(_positions(key, len(self)))

    def read(self, positions: np.ndarray | slice) -> torch.Tensor:
        """The rows at ``positions`` (a step-1 slice or int64 positions in range); a
        chunk whose Fletcher-32 checksum fails is a ValueError naming the file."""
        try:
            return self._read(positions)
        except OSError as err:
            raise ValueError(
                f"{self.dataset.file.filename}: corrupt {self.dataset.name.lstrip('/')} data "
                f"({err}); delete the file and rerun prepare_data"
            ) from None

    def _read(self, positions: np.ndarray | slice) -> torch.Tensor:
        if isinstance(positions, slice):
            out = np.empty((positions.stop - positions.start, *self.shape[1:]), self.np_dtype)
            if len(out):
                self.dataset.read_direct(out, np.s_[positions.start : positions.stop])
            return torch.from_numpy(out)
        distinct, inverse = np.unique(positions, return_inverse=True)
        out = np.empty((len(distinct), *self.shape[1:]), self.np_dtype)
        if len(distinct):
            # runs of consecutive rows: one read each
            breaks = np.flatnonzero(np.diff(distinct) != 1) + 1
            for run_start, run_stop in zip(
                np.r_[0, breaks], np.r_[breaks, len(distinct)], strict=True
            ):
                first = int(distinct[run_start])
                self.dataset.read_direct(
                    out,
                    np.s_[first : first + (run_stop - run_start)],
                    np.s_[run_start:run_stop],
                )
        if len(distinct) != len(positions) or not np.array_equal(distinct, positions):
            out = out[inverse.reshape(-1)]
        return torch.from_numpy(out)


@dataclass
class Split:
    """One split of a prepared dataset.

    ``images`` and ``masks`` are tensors (a split built in memory) or :class:`Rows`
    read lazily from an open file (:func:`read_split`); both index the same way and
    return tensors. ``labels`` is always a tensor. A split read from a file holds it
    open until :meth:`close` (or ``with split:``, or garbage collection).
    """

    images: torch.Tensor | Rows  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)
    masks: torch.Tensor | Rows  # bool (N, H, W)
    class_names: list[str]
    attrs: dict = field(default_factory=dict)
    file: h5py.File | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images."""
        return (int(self.images.shape[-2]), int(self.images.shape[-1]))

    def float_images(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images as float in [0, 1] (the convention every model expects); only the
        ``index`` rows are read (``None``: all)."""
        images = self.images[:] if index is None else self.images[index]
        return images.float().div_(255.0)

    def close(self) -> None:
        """Close the file a lazily read split holds (a no-op for an in-memory one)."""
        if self.file is not None:
            self.file.close()
            self.file = None

    def __enter__(self) -> Split:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SplitWriter:
    """Write a split to ``path`` batch by batch (atomically: the file appears complete
    on :meth:`close`, or not at all when the block raises).

    ``with SplitWriter(path, (H, W), class_names) as writer: writer.append(images,
    labels, masks)`` … ; ``writer.attrs`` may be filled until the end. ``expected``
    (optional) presizes the datasets; they grow or shrink to the rows appended.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        size: tuple[int, int],
        class_names: list[str],
        attrs: dict[str, Any] | None = None,
        expected: int = 0,
    ) -> None:
        self.path = path
        self.size = (int(size[0]), int(size[1]))
        self.class_names = list(class_names)
        self.attrs = dict(attrs or {})
        self.expected = int(expected)
        self.n = 0

    def __enter__(self) -> SplitWriter:
        self._atomic = atomic_output(self.path)
        tmp = self._tmp = self._atomic.__enter__()
        try:
            self._file = h5py.File(tmp, "w")
            h, w = self.size
            n0 = self.expected
            self._images = self._file.create_dataset(
                "images",
                shape=(n0, 3, h, w),
                maxshape=(None, 3, h, w),
                dtype=np.uint8,
                chunks=(1, 3, h, w),
                compression="gzip",
                compression_opts=1,
                fletcher32=True,
            )
            self._labels = self._file.create_dataset(
                "labels",
                shape=(n0,),
                maxshape=(None,),
                dtype=np.int64,
                chunks=(4096,),
                fletcher32=True,
            )
            self._masks = self._file.create_dataset(
                "masks",
                shape=(n0, h, w),
                maxshape=(None, h, w),
                dtype=bool,
                chunks=(1, h, w),
                compression="gzip",
                compression_opts=1,
                fletcher32=True,
            )
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        return self

    def append(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> None:
        """Append a batch: uint8 (B, 3, H, W), int (B,), bool (B, H, W)."""
        b = int(images.shape[0])
        if (
            images.dtype != torch.uint8
            or images.ndim != 4
            or tuple(images.shape[1:])
            != (
                3,
                *self.size,
            )
        ):
            raise ValueError(
                f"images must be uint8 (N, 3, {self.size[0]}, {self.size[1]}), got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        if tuple(masks.shape) != (b, *self.size):
            raise ValueError(
                f"masks must be (N, H, W) = {(b, *self.size)}, got {tuple(masks.shape)}"
            )
        if tuple(labels.shape) != (b,):
            raise ValueError(f"labels must be ({b},), got {tuple(labels.shape)}")
        end = self.n + b
        if end > self._images.shape[0]:
            for ds in (self._images, self._labels, self._masks):
                ds.resize(end, axis=0)
        self._images[self.n : end] = images.numpy()
        self._labels[self.n : end] = labels.numpy().astype(np.int64)
        self._masks[self.n : end] = masks.numpy().astype(bool)
        self.n = end

    def __exit__(self, *exc: Any) -> None:
        try:
            if exc[0] is None:
                if self._images.shape[0] != self.n:
                    for ds in (self._images, self._labels, self._masks):
                        ds.resize(self.n, axis=0)
                self._file.attrs["class_names"] = json.dumps(self.class_names)
                for key, value in self.attrs.items():
                    self._file.attrs[key] = (
                        value if isinstance(value, (int, float, str)) else json.dumps(value)
                    )
            skip = None
            if exc[0] is None:
                self._file.flush()  # every chunk allocated: their places are final
                skip = _chunk_ranges(self._images, self._masks)
            self._file.close()
            if exc[0] is None:
                checksum.seal(self._tmp, skip)  # complete: its checksum trailer, then the rename
        except BaseException:
            with contextlib.suppress(Exception):
                self._file.close()
            self._atomic.__exit__(*sys.exc_info())  # removes the temporary file
            raise
        self._atomic.__exit__(*exc)


def _chunk_ranges(*datasets: h5py.Dataset) -> list[tuple[int, int]]:
    """(offset, length) of every stored chunk of ``datasets``: left out of the file's
    checksum, as each carries its own Fletcher-32 checksum (read checks it)."""
    ranges: list[tuple[int, int]] = []
    for ds in datasets:
        ds.id.chunk_iter(lambda info: ranges.append((info.byte_offset, info.size)))
    return ranges


def write_split(path: str | os.PathLike, split: Split) -> None:
    """Write ``split`` atomically to ``path`` (in blocks of :data:`WRITE_BLOCK` images)."""
    n = len(split)
    if split.images.dtype != torch.uint8 or split.images.ndim != 4 or split.images.shape[1] != 3:
        raise ValueError(
            f"images must be uint8 (N, 3, H, W), got {split.images.dtype} {tuple(split.images.shape)}"
        )
    if tuple(split.masks.shape) != (n, *split.images.shape[2:]):
        raise ValueError(
            f"masks must be (N, H, W) = {(n, *split.images.shape[2:])}, got {tuple(split.masks.shape)}"
        )
    with SplitWriter(path, split.image_size, split.class_names, split.attrs, n) as writer:
        for start in range(0, n, WRITE_BLOCK):
            block = slice(start, start + WRITE_BLOCK)
            writer.append(split.images[block], split.labels[block], split.masks[block])


def read_split(path: str | os.PathLike) -> Split:
    """Open a split written by :func:`write_split` or :class:`SplitWriter`, with errors
    that name the file: labels read, images and masks lazy (:class:`Rows`). The file's
    checksum trailer is verified first, before HDF5 parses a byte of it."""
    checksum.verify(path, "dataset")
    try:
        f = h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=10007)
    except (OSError, FileNotFoundError) as err:
        raise ValueError(f"{path}: cannot open dataset file ({err})") from err
    try:
        missing = [k for k in REQUIRED if k not in f]
        if missing:
            raise ValueError(f"{path}: not a cambench dataset file, missing datasets {missing}")
        if "class_names" not in f.attrs:
            raise ValueError(f"{path}: missing attribute 'class_names'")
        images = Rows(f["images"], np.uint8)
        if images.ndim != 4 or images.shape[1] != 3 or f["images"].dtype != np.uint8:
            raise ValueError(
                f"{path}: images must be uint8 (N, 3, H, W), got {f['images'].dtype} {images.shape}"
            )
        try:
            labels = torch.from_numpy(f["labels"][()].astype(np.int64))
        except OSError as err:
            raise ValueError(
                f"{path}: corrupt labels ({err}); delete the file and rerun prepare_data"
            ) from None
        masks = Rows(f["masks"], bool)
        if masks.shape != (len(labels), *images.shape[2:]) or len(images) != len(labels):
            raise ValueError(
                f"{path}: {len(images)} images {images.shape}, {len(labels)} labels and "
                f"masks {masks.shape} do not match"
            )
        class_names = json.loads(f.attrs["class_names"])
        attrs = {k: v for k, v in f.attrs.items() if k != "class_names"}
    except BaseException:
        f.close()
        raise
    return Split(images, labels, masks, class_names, attrs, file=f)

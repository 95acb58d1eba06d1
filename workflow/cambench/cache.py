"""The HDF5 saliency cache: one file per model × method × shard.

A job writes into a sibling temporary file, batch by batch, and renames it when
complete. ``n_done`` records how many maps are safely on disk, so a killed job that
is rerun with the same provenance resumes after the last written batch. The writer
holds the output's lock (:class:`cambench.atomic.OutputLock`) from start to end: a
second writer of the same shard fails at once naming the first, and never deletes or
resumes a temporary file that a live writer is filling.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from cambench import __version__, checksum
from cambench.atomic import OutputLock, disk_full_error, is_disk_full, temporary_path

REQUIRED_DATASETS = ("saliency", "index", "target", "label")
REQUIRED_ATTRS = ("method", "params", "layer", "model_sha256", "dataset", "split", "complete")


class CacheError(ValueError):
    """A saliency file that cannot be used; the message names the file."""


#: Maps copied per step when a temporary file is resumed (:meth:`SaliencyWriter._resume`).
RESUME_COPY_ROWS = 256
#: A temporary file has no checksum (it grows batch by batch), and a damaged HDF5 file
#: can crash or hang the HDF5 library. So before a job resumes one (or ``cache inspect``
#: shows one), a child process reads every part the job will read; a crash, a hang
#: past this many seconds or an error there means the file is discarded (or refused).
READ_BACK_TIMEOUT_S = 300.0
_READ_BACK = """
import sys
import h5py
with h5py.File(sys.argv[1], "r") as f:
    attrs = {key: f.attrs[key] for key in f.attrs}
    n = int(attrs.get("n_done", 0))
    for key in f:
        f[key][:n] if key in ("saliency", "target", "degenerate") else f[key][()]
"""


def _read_back_problem(path: Path, timeout: float | None = None) -> str | None:
    """Why HDF5 cannot read ``path`` safely (``None``: it can), found in a child process
    so that a segfault or a hang there cannot take the job with it."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _READ_BACK, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout or READ_BACK_TIMEOUT_S,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    except subprocess.TimeoutExpired:
        return f"it cannot be read (reading it hung for {timeout or READ_BACK_TIMEOUT_S:.0f} s)"
    if proc.returncode < 0:
        return f"it cannot be read (reading it crashed: signal {-proc.returncode})"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"it cannot be read ({last[:200]})"
    return None


def verify_checksum(path: str | os.PathLike) -> None:
    """:func:`cambench.checksum.verify` as a :class:`CacheError` naming the file."""
    try:
        checksum.verify(path, "saliency")
    except checksum.CorruptFileError as err:
        raise CacheError(str(err)) from None


def _attr_value(value: Any) -> Any:
    return (
        value
        if isinstance(value, (int, float, str, bool, np.bool_))
        else json.dumps(value, sort_keys=True)
    )


class SaliencyWriter:
    """Write maps for the images ``index`` (in that order) into ``path``.

    Use as a context manager; call :meth:`write` per batch, in order, for the
    images from :attr:`n_done` on. On success the file is complete and renamed;
    on failure the temporary file stays for the next run to resume. Entering raises
    ``ValueError`` naming the file and the holder when another writer is live.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        index: np.ndarray,
        labels: np.ndarray,
        size: tuple[int, int],
        attrs: dict[str, Any],
    ) -> None:
        self.path = Path(path)
        self.tmp = temporary_path(self.path)
        self.attrs = {k: _attr_value(v) for k, v in attrs.items()}
        self.attrs.setdefault("cambench_version", __version__)
        self.index = np.asarray(index, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.size = size
        self.file: h5py.File | None = None
        self.lock = OutputLock(self.path)
        self.n_done = 0
        self.seconds_before = 0.0

    def __enter__(self) -> SaliencyWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            return self._guard_disk(self._open)
        except BaseException:
            self.lock.release()
            raise

    def _guard_disk(self, step, *args):
        """Run ``step``; on a full disk, remove the temporary file (what it holds can
        no longer be trusted) and raise a ValueError that says so, naming the path."""
        try:
            return step(*args)
        except (OSError, RuntimeError) as err:
            if not is_disk_full(err, self.tmp):
                raise
            if self.file is not None:
                with contextlib.suppress(Exception):
                    self.file.close()
                self.file = None
            self.tmp.unlink(missing_ok=True)
            raise disk_full_error(self.path) from err

    def _open(self) -> SaliencyWriter:
        """Resume the temporary file (ours to take: the lock is held) or start it."""
        if self.tmp.exists():
            problem = _read_back_problem(self.tmp) or self._resume_problem()
            if problem is None:
                self._resume()
                print(f"  resuming {self.tmp} after {self.n_done} maps", flush=True)
                return self
            print(f"  discarding {self.tmp}: not resumable, {problem}", flush=True)
        self.tmp.unlink(missing_ok=True)
        self.file = self._create(self.tmp)
        return self

    def _create(self, path: Path) -> h5py.File:
        """A new, empty temporary file for this writer's images and attributes."""
        n = len(self.index)
        h, w = self.size
        f = h5py.File(path, "w")
        f.create_dataset(
            "saliency",
            shape=(n, h, w),
            dtype="float16",
            chunks=(1, h, w),
            compression="gzip",
            compression_opts=4,
            fletcher32=n > 0,  # checked per chunk: a damaged temporary file's maps too
        )
        f.create_dataset("index", data=self.index)
        checked = {"chunks": (min(n, 4096),), "fletcher32": True} if n else {}
        f.create_dataset("target", shape=(n,), dtype="int64", fillvalue=-1, **checked)
        f.create_dataset("label", data=self.labels)
        # per image: 0 a map, 1 all zero, 2 constant (cambench.saliency.degenerate)
        f.create_dataset("degenerate", shape=(n,), dtype="uint8", fillvalue=0, **checked)
        for key, value in self.attrs.items():
            f.attrs[key] = value
        f.attrs["complete"] = False
        f.attrs["n_done"] = 0
        f.attrs["seconds"] = 0.0
        f.flush()
        return f

    def _resume(self) -> None:
        """Copy the finished maps of the temporary file (checked readable) into a new
        one that replaces it: the job then writes into structures HDF5 made afresh,
        never into ones a killed job or a full disk may have left half-written."""
        fresh = self.tmp.with_name(f"{self.tmp.name}.new")
        fresh.unlink(missing_ok=True)
        try:
            with h5py.File(self.tmp, "r") as old:
                n_done = int(old.attrs["n_done"])
                seconds = float(old.attrs.get("seconds", 0.0))
                self.file = self._create(fresh)
                for start in range(0, n_done, RESUME_COPY_ROWS):
                    rows = slice(start, min(start + RESUME_COPY_ROWS, n_done))
                    for key in ("saliency", "target", "degenerate"):
                        if key in old:
                            self.file[key][rows] = old[key][rows]
            self.file.attrs["n_done"] = n_done
            self.file.attrs["seconds"] = seconds
            self.file.close()
            self.file = None
            os.replace(fresh, self.tmp)
        except BaseException:
            if self.file is not None:
                with contextlib.suppress(Exception):
                    self.file.close()
                self.file = None
            fresh.unlink(missing_ok=True)
            raise
        self.file = h5py.File(self.tmp, "a")
        self.n_done, self.seconds_before = n_done, seconds

    def _finish(self) -> None:
        self.file.attrs["complete"] = True
        self.file.close()
        checksum.seal(self.tmp)
        os.replace(self.tmp, self.path)

    def _resume_problem(self) -> str | None:
        """Why the temporary file cannot be resumed (``None``: it can): every attribute
        that determines its content — method, parameters, layer, code and plug-in
        digest, the checkpoint's and the data file's SHA-256, the explained class's
        mode, the shard — must equal this run's, and so must the image index."""
        try:
            with h5py.File(self.tmp, "r") as f:
                for key, value in self.attrs.items():
                    if key not in f.attrs:
                        return f"it has no {key!r}"
                    if f.attrs[key] != value:
                        return f"its {key} differs ({str(f.attrs[key])[:40]} ≠ {str(value)[:40]})"
                if "n_done" not in f.attrs:
                    return "it records no progress"
                if not np.array_equal(f["index"][()], self.index):
                    return "it holds other images"
                n_done = int(f.attrs["n_done"])
                if not 0 <= n_done <= len(self.index):
                    return f"its progress {n_done} is out of range"
                f["saliency"][max(n_done - 1, 0) : n_done]  # the last batch reads back
        except Exception as err:  # whatever a damaged file makes h5py raise
            return f"it cannot be read ({type(err).__name__}: {err})"
        return None

    def write(
        self,
        maps: torch.Tensor,
        targets: torch.Tensor,
        seconds: float,
        degenerate: torch.Tensor | None = None,
    ) -> None:
        """Append the next batch of maps (B, H, W) in [0, 1], their targets and their
        degenerate-map codes (default: none degenerate)."""
        assert self.file is not None, "use SaliencyWriter as a context manager"
        self._guard_disk(self._write, maps, targets, seconds, degenerate)

    def degenerate_counts(self) -> dict[int, int]:
        """Images per non-zero degenerate code among those written."""
        assert self.file is not None, "call degenerate_counts inside the with block"
        codes = self.file["degenerate"][: self.n_done]
        values, counts = np.unique(codes[codes > 0], return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def _write(
        self,
        maps: torch.Tensor,
        targets: torch.Tensor,
        seconds: float,
        degenerate: torch.Tensor | None,
    ) -> None:
        b = maps.shape[0]
        end = self.n_done + b
        if end > len(self.index):
            raise ValueError(
                f"{self.path}: writing {end} maps into a file for {len(self.index)} images"
            )
        stored = maps.detach().cpu().numpy().astype(np.float16)
        if not np.isfinite(stored).all():  # e.g. a float64 value beyond float16's range
            raise ValueError(
                f"{self.path}: maps {self.n_done}–{end - 1} are not finite once stored as "
                "float16 (NaN, inf, or values out of float16's range); nothing was written"
            )
        self.file["saliency"][self.n_done : end] = stored
        self.file["target"][self.n_done : end] = targets.detach().cpu().numpy().astype(np.int64)
        if degenerate is not None:
            self.file["degenerate"][self.n_done : end] = degenerate.cpu().numpy().astype(np.uint8)
        self.n_done = end
        self.seconds_before += seconds
        self.file.attrs["seconds"] = self.seconds_before
        self.file.attrs["n_done"] = end
        self.file.flush()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if self.file is None:  # removed after a full disk
                return
            if exc_type is None:
                if self.n_done != len(self.index):
                    self.file.close()
                    raise ValueError(
                        f"{self.path}: only {self.n_done} of {len(self.index)} maps were written"
                    )
                self._guard_disk(self._finish)
            else:
                self._guard_disk(self.file.close)
        finally:
            self.lock.release()


@dataclass
class SaliencyCache:
    """A complete saliency file, loaded."""

    path: Path
    maps: torch.Tensor  # float32 (N, H, W)
    index: torch.Tensor  # int64 (N,)
    target: torch.Tensor  # int64 (N,)
    label: torch.Tensor  # int64 (N,)
    attrs: dict[str, Any]
    degenerate: torch.Tensor | None = None  # uint8 (N,): 0 a map, 1 all zero, 2 constant

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.attrs["params"])


def _open_saliency(path: Path) -> h5py.File:
    """Open ``path`` for reading as a cambench saliency file (complete or not); fail
    with one line naming the file when it is missing, a directory, not HDF5, or an
    HDF5 file without the saliency datasets and attributes."""
    if path.is_dir():
        raise CacheError(f"{path}: is a directory, not a saliency file")
    if not path.name.endswith(".tmp"):  # a complete file: verified before HDF5 reads it
        verify_checksum(path)
    elif path.is_file() and (problem := _read_back_problem(path)) is not None:
        raise CacheError(f"{path}: temporary file {problem}; delete it")
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise CacheError(f"{path}: saliency file does not exist") from None
    except OSError as err:
        raise CacheError(f"{path}: corrupt or not an HDF5 file ({err})") from err
    missing_data = [k for k in REQUIRED_DATASETS if k not in f]
    missing_attrs = [k for k in REQUIRED_ATTRS if k not in f.attrs]
    if missing_data or missing_attrs:
        f.close()
        raise CacheError(
            f"{path}: not a cambench saliency file, missing datasets {missing_data} "
            f"and attributes {missing_attrs}"
        )
    return f


def read_saliency(
    path: str | os.PathLike, model_sha256: str | None = None, load_maps: bool = True
) -> SaliencyCache:
    """Load a saliency file; fail naming the file if it is incomplete, corrupt, or
    was made from a different checkpoint than ``model_sha256``."""
    path = Path(path)
    with _open_saliency(path) as f:
        if not bool(f.attrs["complete"]):
            raise CacheError(
                f"{path}: incomplete saliency file (the job that wrote it did not finish)"
            )
        if model_sha256 is not None and f.attrs["model_sha256"] != model_sha256:
            raise CacheError(
                f"{path}: made from another checkpoint (model_sha256 {f.attrs['model_sha256'][:12]}… "
                f"≠ {model_sha256[:12]}…); recompute it"
            )
        try:
            maps = (
                torch.from_numpy(f["saliency"][()].astype(np.float32))
                if load_maps
                else torch.empty(0)
            )
            index = torch.from_numpy(f["index"][()].astype(np.int64))
            target = torch.from_numpy(f["target"][()].astype(np.int64))
            label = torch.from_numpy(f["label"][()].astype(np.int64))
            degenerate = (
                torch.from_numpy(f["degenerate"][()].astype(np.uint8))
                if "degenerate" in f
                else torch.zeros(len(index), dtype=torch.uint8)
            )
        except OSError as err:
            raise CacheError(f"{path}: corrupt saliency data ({err})") from err
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    if load_maps and (maps.shape[0] != index.shape[0] or not torch.isfinite(maps).all()):
        raise CacheError(
            f"{path}: corrupt saliency data (shape {tuple(maps.shape)} or non-finite values)"
        )
    return SaliencyCache(path, maps, index, target, label, attrs, degenerate)


def describe(path: str | os.PathLike) -> str:
    """A human-readable provenance summary (``cambench cache inspect``), also of an
    incomplete (temporary) file. Raises :class:`CacheError` (a ``ValueError``) naming
    the file when it is missing, a directory, not HDF5, or not a saliency file (the
    message lists the missing datasets and attributes)."""
    path = Path(path)
    with _open_saliency(path) as f:
        lines = [f"{path}"]
        for key in REQUIRED_DATASETS:
            lines.append(f"  {key:<10} {f[key].dtype} {f[key].shape}")
        for key, value in sorted(f.attrs.items()):
            lines.append(f"  @{key:<16} {value}")
    return "\n".join(lines)

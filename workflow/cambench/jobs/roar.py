r"""ROAR and KAR: remove (or keep) the most salient pixels, retrain, measure accuracy.

Hooker et al., "A Benchmark for Interpretability Methods in Deep Neural Networks",
NeurIPS 2019, https://arxiv.org/abs/1806.10758. For a method's maps of every training
and test image and a fraction :math:`f`, each image's :math:`\operatorname{round}(fP)`
most salient pixels are replaced (ROAR) or alone kept (KAR, every other pixel
replaced), a model of the same architecture and recipe is trained from scratch on the
degraded training split, and its accuracy :math:`a_m(f)` on the degraded test split is
the measure. A method whose maps point at the evidence makes :math:`a_m` fall fastest
under ROAR and stay highest under KAR; ``random`` maps are the reference.

Per model × mode × method and seed the area under the accuracy curve over the
configured fractions :math:`f_1 < \dots < f_n` is the trapezoidal mean

.. math::
    \mathrm{AUC}_m = \frac{1}{f_n - f_1} \int_{f_1}^{f_n} a_m(f)\,df

(the accuracy itself for one fraction), lower is better for ROAR and higher for KAR.
Each method is compared with ``random`` seed by seed (the same seed trains both from
the same initial weights): the mean paired difference of the AUCs and the exact
two-sided sign-flip p-value over the seeds (with one seed none).

Two jobs: :func:`retrain` (one model × mode × method × fraction × seed, resumable
after every epoch like the train job) and :func:`aggregate` (``roar.csv``, the AUC
table, its Markdown section and the figure). The degraded images are made on the fly
from the stored images and the cached maps (:mod:`cambench.data.degrade`); nothing
but the maps is stored.

>>> import pandas as pd
>>> rows = pd.DataFrame({"model": "m", "mode": "roar", "method": ["gradcam"] * 3,
...                      "fraction": [0.1, 0.5, 0.9], "seed": 0,
...                      "test_acc": [0.9, 0.5, 0.3]})
>>> round(float(curve_areas(rows)["auc"].iloc[0]), 3)  # (0.7·0.4 + 0.4·0.4) / 0.8
0.55
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from cambench import joblog
from cambench.cache import CacheError, read_saliency
from cambench.data.degrade import DegradedImages, channel_mean
from cambench.data.store import Split, read_split
from cambench.jobs.train import build_objective, build_trainee
from cambench.metrics.draws import hash_normal
from cambench.metrics.road import noisy_linear_imputation
from cambench.models import file_sha256
from cambench.plots.roar import plot_roar
from cambench.runtime import seed_everything
from cambench.table_io import read_json, write_csv, write_json, write_text
from cambench.training import TrainConfig, optimizer_record, train_model

MODES = {"roar": False, "kar": True}  # mode -> keep
IMPUTATIONS = ("mean", "noisy_linear")
#: The per-channel mean is taken over at most this many training images (every k-th).
MEAN_IMAGES = 10_000
#: Seed k of a retrain trains with the model's seed + SEED_OFFSET + k.
SEED_OFFSET = 1
ROAR_COLUMNS = (
    "model",
    "mode",
    "method",
    "fraction",
    "seed",
    "retrain_seed",
    "imputation",
    "epochs",
    "test_acc",
    "unmodified_acc",
)


class ShardMaps:
    """The maps of a whole split, read lazily by split position from its saliency
    shards: a drop-in for the (N, H, W) ``maps`` of :class:`DegradedImages`, whose
    memory is bounded by the rows read. Each shard is verified by
    :func:`cambench.cache.read_saliency` (checksum, completeness, checkpoint) before
    its rows are read; together the shards must cover positions 0..N-1 in order."""

    def __init__(self, paths: Sequence[str | os.PathLike], model_sha256: str, n: int) -> None:
        self.files: list[h5py.File] = []
        starts = [0]
        for path in paths:
            cache = read_saliency(path, model_sha256, load_maps=False)
            expected = torch.arange(starts[-1], starts[-1] + len(cache.index))
            if not torch.equal(cache.index, expected):
                raise CacheError(
                    f"{path}: its maps are not of split positions {starts[-1]}.."
                    f"{starts[-1] + len(cache.index) - 1} (the shards must cover the "
                    "whole split in order)"
                )
            self.files.append(h5py.File(path, "r"))
            starts.append(starts[-1] + len(cache.index))
        if starts[-1] != n:
            raise CacheError(
                f"the saliency shards {list(map(str, paths))} hold {starts[-1]} maps, the split {n} images"
            )
        self.starts = np.array(starts, dtype=np.int64)
        h, w = self.files[0]["saliency"].shape[1:] if self.files else (0, 0)
        self.shape = (n, int(h), int(w))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> torch.Tensor:
        n = len(self)
        if isinstance(key, slice):
            positions = np.arange(n)[key]
        else:
            positions = np.asarray(torch.as_tensor(key, dtype=torch.int64)).reshape(-1)
            positions = np.where(positions < 0, positions + n, positions)
        out = np.empty((len(positions), *self.shape[1:]), dtype=np.float32)
        order = np.argsort(positions, kind="stable")
        ranked = positions[order]
        shard_of = np.searchsorted(self.starts, ranked, side="right") - 1
        for shard in np.unique(shard_of):
            chosen = shard_of == shard
            local, inverse = np.unique(ranked[chosen] - self.starts[shard], return_inverse=True)
            rows = self.files[shard]["saliency"][local]  # h5py: increasing, distinct
            out[order[chosen]] = rows[inverse.reshape(-1)].astype(np.float32)
        return torch.from_numpy(out)

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files = []


class _EveryKth:
    """Every ``step``-th row of ``images``, read lazily (for :func:`channel_mean`)."""

    def __init__(self, images: Any, step: int) -> None:
        self.images, self.positions = images, torch.arange(0, len(images), step)
        self.shape = (len(self.positions), *tuple(images.shape)[1:])

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: slice) -> torch.Tensor:
        return self.images[self.positions[key]]


def sampled_channel_mean(images: Any, limit: int = MEAN_IMAGES) -> torch.Tensor:
    """The per-channel mean (3,) of uint8 ``images`` over every k-th image, k the
    smallest step that reads at most ``limit`` (exact for splits up to ``limit``)."""
    step = max(1, math.ceil(len(images) / limit))
    return channel_mean(_EveryKth(images, step) if step > 1 else images)


def noisy_linear(noise: float, seed: int):
    """The ``impute`` hook of :class:`DegradedImages` for Rong et al.'s noisy linear
    imputation (:func:`cambench.metrics.road.noisy_linear_imputation`) on the images in
    [0, 1], Gaussian noise of standard deviation ``noise`` drawn by a hash of (seed,
    split position, element) — independent of the batch —, quantized back to uint8."""

    def impute(
        images: torch.Tensor, replaced: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        b, c, h, w = images.shape
        z = hash_normal(positions.to(images.device), c * h * w, seed, 0).reshape(b, c, h, w)
        solved = noisy_linear_imputation(images.double() / 255.0, replaced, noise * z)
        return solved.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)

    return impute


def degraded(
    split: Split,
    maps: Any,
    fraction: float,
    mode: str,
    mean: torch.Tensor,
    seed: int,
    impute=None,
    device: torch.device | None = None,
) -> Split:
    """``split`` whose images are degraded by ``maps`` when read (labels, masks, class
    names unchanged; the open file stays the original split's), ranked and imputed on
    ``device`` (``None``: where they are read)."""
    images = DegradedImages(split.images, maps, fraction, MODES[mode], mean, seed, impute, device)
    return dataclasses.replace(split, images=images, file=None)


@dataclass(frozen=True)
class RetrainJob:
    """One retrain: the model's name and config entry (its recipe), the splits, the
    model's checkpoint (the maps' provenance), the maps of each split (its shards in
    order), the setting, and the output."""

    name: str
    model_config: dict[str, Any]
    train_path: str | os.PathLike
    test_path: str | os.PathLike
    model_path: str | os.PathLike
    train_maps: Sequence[str | os.PathLike]
    test_maps: Sequence[str | os.PathLike]
    method: str
    mode: str
    fraction: float
    seed: int
    imputation: str
    noise: float
    augment: dict[str, Any] | None
    out: str | os.PathLike
    resume: bool = True
    progress: bool = False


def retrain_config(model_config: dict[str, Any], seed: int) -> dict[str, Any]:
    """The model's recipe for retrain ``seed``: its seed + :data:`SEED_OFFSET` + seed,
    one process (a retrain is one job on one device)."""
    config = dict(model_config)
    config["seed"] = int(model_config.get("seed", 0)) + SEED_OFFSET + int(seed)
    if "gpus" in config:
        config["gpus"] = 1
    return config


def check_setting(mode: str, fraction: float, imputation: str, seed: int) -> None:
    """ValueError naming the key of a setting out of range."""
    if mode not in MODES:
        raise ValueError(f"protocols.roar.modes: {mode!r} is not one of {list(MODES)}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"protocols.roar.fractions: {fraction} is not in (0, 1)")
    if imputation not in IMPUTATIONS:
        raise ValueError(f"protocols.roar.imputation: {imputation!r} is not one of {IMPUTATIONS}")
    if seed < 0:
        raise ValueError(f"protocols.roar.seeds: seed {seed} is negative")


def retrain(job: RetrainJob, device: torch.device) -> dict[str, Any]:
    """Train the model's recipe from scratch on the degraded training split and
    evaluate it on the degraded test split; write and return the record."""
    check_setting(job.mode, job.fraction, job.imputation, job.seed)
    if job.model_config["kind"] not in ("baseline", "gradalign"):
        raise ValueError(
            f"models.{job.name}: ROAR retrains from scratch, not a {job.model_config['kind']} model"
        )
    setting = {
        "model": job.name,
        "mode": job.mode,
        "method": job.method,
        "fraction": job.fraction,
        "seed": job.seed,
        "imputation": job.imputation,
    }
    start = joblog.header(
        "roar retrain",
        {**setting, "device": str(device)},
        [
            str(job.train_path),
            str(job.test_path),
            *map(str, job.train_maps),
            *map(str, job.test_maps),
        ],
    )
    config = retrain_config(job.model_config, job.seed)
    train_config = TrainConfig.from_model_config(config)
    seed_everything(train_config.seed)
    model_sha256 = file_sha256(job.model_path)
    train, test = read_split(job.train_path), read_split(job.test_path)
    train_maps = ShardMaps(job.train_maps, model_sha256, len(train))
    test_maps = ShardMaps(job.test_maps, model_sha256, len(test))
    mean = sampled_channel_mean(train.images)
    tie_seed = config["seed"]
    impute = noisy_linear(job.noise, tie_seed) if job.imputation == "noisy_linear" else None
    # on a GPU the pixels are ranked there (the CPU sort would starve it at 224 px)
    where = device if device.type == "cuda" else None
    args = (job.fraction, job.mode, mean, tie_seed, impute, where)
    degraded_train = degraded(train, train_maps, *args)
    degraded_test = degraded(test, test_maps, *args)
    num_classes = len(train.class_names)
    model, config = build_trainee(config, None, num_classes)
    tic = time.perf_counter()
    history = train_model(
        model,
        degraded_train,
        degraded_test,
        train_config,
        device,
        progress=job.progress,
        objective=build_objective(config, train_config),
        augment=job.augment,
        resume_path=Path(f"{job.out}.resume.pt") if job.resume else None,
    )
    seconds = time.perf_counter() - tic
    for closable in (train_maps, test_maps, train, test):
        closable.close()
    record = {
        **setting,
        "retrain_seed": int(config["seed"]),
        "noise": job.noise if job.imputation == "noisy_linear" else None,
        "test_acc": history[-1]["test_acc"] if history else float("nan"),
        "epochs": len(history),
        "history": history,
        "config": config,
        "optimizer": optimizer_record(train_config),
        "augment": job.augment,
        "channel_mean": [float(v) for v in mean],
        "train_images": len(degraded_train),
        "test_images": len(degraded_test),
        "seconds": seconds,
        "device": str(device),
    }
    write_json(job.out, record)
    Path(f"{job.out}.resume.pt").unlink(missing_ok=True)
    print(
        f"{job.name} {job.mode} {job.method} f={job.fraction} seed {job.seed}: "
        f"test accuracy {100 * record['test_acc']:.2f} % in {seconds:.0f} s"
    )
    joblog.footer(start, [str(job.out)])
    return record


# --------------------------------------------------------------------------- aggregate


def curve_areas(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model × mode × method × seed: the trapezoidal mean accuracy over the
    fractions (column ``auc``; the accuracy itself for one fraction)."""
    out = []
    for key, group in rows.groupby(["model", "mode", "method", "seed"], sort=False):
        group = group.sort_values("fraction")
        f, a = group["fraction"].to_numpy(float), group["test_acc"].to_numpy(float)
        if len(f) == 1:
            area = float(a[0])
        else:
            area = float(np.sum((a[1:] + a[:-1]) / 2 * np.diff(f)) / (f[-1] - f[0]))
        out.append((*key, area))
    return pd.DataFrame(out, columns=["model", "mode", "method", "seed", "auc"])


def sign_flip_p(differences: np.ndarray) -> float:
    """Exact two-sided sign-flip p-value of paired ``differences`` (mean 0 under the
    null); NaN for fewer than two pairs."""
    n = len(differences)
    if n < 2:
        return float("nan")
    observed = abs(differences.mean())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    flipped = np.abs((signs * differences).mean(axis=1))
    return float(np.mean(flipped >= observed - 1e-12))


def area_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model × mode × method: the mean AUC over seeds, its standard deviation, and
    the paired comparison with ``random`` (mean difference, sign-flip p)."""
    areas = curve_areas(rows)
    out = []
    for (model, mode, method), group in areas.groupby(["model", "mode", "method"], sort=False):
        record = {
            "model": model,
            "mode": mode,
            "method": method,
            "seeds": len(group),
            "auc": group["auc"].mean(),
            "auc_sd": group["auc"].std(ddof=1) if len(group) > 1 else float("nan"),
            "auc_minus_random": float("nan"),
            "p_vs_random": float("nan"),
        }
        random = areas[
            (areas["model"] == model) & (areas["mode"] == mode) & (areas["method"] == "random")
        ]
        if method != "random" and not random.empty:
            paired = group.merge(random, on="seed", suffixes=("", "_random"))
            diff = (paired["auc"] - paired["auc_random"]).to_numpy(float)
            if len(diff):
                record["auc_minus_random"] = float(diff.mean())
                record["p_vs_random"] = sign_flip_p(diff)
        out.append(record)
    return pd.DataFrame(out)


def area_markdown(areas: pd.DataFrame, rows: pd.DataFrame) -> str:
    """The ROAR/KAR section of ``summary.md``."""
    lines = [
        "## ROAR and KAR (remove and retrain)",
        "",
        "Test accuracy (%) of the model's recipe retrained from scratch on images whose "
        "most salient pixels (by each method's maps) are removed (ROAR: lower is more "
        "faithful) or alone kept (KAR: higher is more faithful), as the area under the "
        "accuracy curve over the fractions "
        f"{', '.join(f'{f:g}' for f in sorted(rows['fraction'].unique()))} "
        f"({rows['imputation'].iloc[0]} imputation). Δ random: the paired difference "
        "with `random` (same seeds); p: exact sign-flip test over the seeds (– with one seed).",
        "",
        "| model | mode | method | seeds | AUC | Δ random | p | unmodified |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in areas.itertuples():
        unmodified = rows[rows["model"] == r.model]["unmodified_acc"].iloc[0]
        sd = f" ± {100 * r.auc_sd:.1f}" if not math.isnan(r.auc_sd) else ""
        diff = "–" if math.isnan(r.auc_minus_random) else f"{100 * r.auc_minus_random:+.1f}"
        p = "–" if math.isnan(r.p_vs_random) else f"{r.p_vs_random:.3f}"
        lines.append(
            f"| {r.model} | {r.mode} | {r.method} | {r.seeds} | {100 * r.auc:.1f}{sd} | "
            f"{diff} | {p} | {100 * unmodified:.1f} |"
        )
    return "\n".join(lines) + "\n"


def read_records(paths: Sequence[str | os.PathLike], histories: dict[str, Any]) -> pd.DataFrame:
    """The ``roar.csv`` rows of the retrains' records, sorted by setting;
    ``histories``: each model's training history (its ``test_acc``, the unmodified
    reference)."""
    rows = []
    for path in paths:
        r = read_json(path, "ROAR retrain record")
        missing = [k for k in ROAR_COLUMNS if k not in r and k != "unmodified_acc"]
        if missing:
            raise ValueError(f"{path}: not a ROAR retrain record (no {missing})")
        if r["model"] not in histories:
            raise ValueError(f"{path}: model {r['model']!r} has no training history given")
        rows.append(
            {
                **{k: r[k] for k in ROAR_COLUMNS[:-1]},
                "unmodified_acc": histories[r["model"]]["test_acc"],
            }
        )
    if not rows:
        raise ValueError("no ROAR retrain records given")
    frame = pd.DataFrame(rows, columns=list(ROAR_COLUMNS))
    return frame.sort_values(
        ["model", "mode", "method", "fraction", "seed"], kind="stable"
    ).reset_index(drop=True)


def aggregate(
    record_paths: Sequence[str | os.PathLike],
    history_paths: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_areas: str | os.PathLike,
    out_md: str | os.PathLike,
    out_png: str | os.PathLike,
) -> pd.DataFrame:
    """``roar.csv`` (one row per retrain), the AUC table, its Markdown section and the
    figure (:func:`cambench.plots.roar.plot_roar`)."""
    start = joblog.header("roar aggregate", {}, [*map(str, record_paths), *map(str, history_paths)])
    histories = {}
    for path in history_paths:
        history = read_json(path, "training history")
        histories[history.get("model", Path(path).stem)] = history
    rows = read_records(record_paths, histories)
    areas = area_table(rows)
    write_csv(out_csv, rows, "%.6g")
    write_csv(out_areas, areas, "%.6g")
    write_text(out_md, area_markdown(areas, rows))
    plot_roar(rows, out_png)
    print(areas.to_string(index=False))
    joblog.footer(start, [str(out_csv), str(out_areas), str(out_md), str(out_png)])
    return rows

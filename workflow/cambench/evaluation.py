"""The evaluation jobs: saliency maps for a shard, then per-image metrics for it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cambench.atomic import atomic_output
from cambench.cache import SaliencyWriter, read_saliency
from cambench.data.store import Split, read_split
from cambench.models import file_sha256, load_checkpoint
from cambench.models.inference import inference_copy
from cambench.saliency import explain, get_method, resolve_layer

TARGETS = ("label", "predicted")


def shard_indices(n_images: int, n_total: int, shards: int, shard: int) -> np.ndarray:
    """Positions in the test split of shard ``shard`` of ``shards``: the first
    ``n_images`` test images split into contiguous, near-equal parts."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} out of range for {shards} shards")
    n = min(int(n_images), n_total)
    return np.array_split(np.arange(n, dtype=np.int64), shards)[shard]


@torch.no_grad()
def explained_classes(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, target: str
) -> torch.Tensor:
    """The class each map explains: the ground truth or the model's prediction."""
    if target == "label":
        return labels
    if target == "predicted":
        return model(images).argmax(1)
    raise ValueError(f"eval.target must be one of {TARGETS}, got {target!r}")


def run_saliency(
    model_path: str | os.PathLike,
    data_path: str | os.PathLike,
    out_path: str | os.PathLike,
    method: str,
    params: dict[str, Any],
    layer: str | None,
    n_images: int,
    shards: int,
    shard: int,
    batch_size: int,
    target: str,
    device: torch.device,
    progress: bool = True,
) -> None:
    """Compute one shard's maps and write them to the HDF5 cache (resumable)."""
    spec = get_method(method)
    full_params = spec.resolve_params(params)
    model = load_checkpoint(model_path, map_location=device)
    layer_name = resolve_layer(model, layer)[0] if spec.uses_layer else ""
    split = read_split(data_path)
    index = shard_indices(n_images, len(split), shards, shard)
    attrs = {
        "method": method,
        "params": full_params,
        "layer": layer_name,
        "model_sha256": file_sha256(model_path),
        "dataset": split.attrs.get("dataset", ""),
        "split": split.attrs.get("split", ""),
        "target_mode": target,
        "device": str(device),
    }
    size = tuple(split.images.shape[-2:])
    with SaliencyWriter(out_path, index, split.labels[index].numpy(), size, attrs) as writer:
        starts = range(writer.n_done, len(index), batch_size)
        for start in tqdm(
            starts, desc=f"{method} shard {shard}", unit="batch", disable=not progress
        ):
            idx = torch.from_numpy(index[start : start + batch_size])
            images = split.float_images(idx).to(device)
            targets = explained_classes(model, images, split.labels[idx].to(device), target)
            tic = time.perf_counter()
            maps = explain(method, model, images, targets, layer=layer_name or None, **full_params)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            writer.write(maps, targets, time.perf_counter() - tic)


#: Keys of the config's ``metrics`` mapping that the metrics stage reads (the rest,
#: e.g. ``statistics``, belongs to the summary and is ignored here).
METRICS_STAGE_KEYS = ("forward_batch_size", "pointing_tolerance")


def run_metrics(
    model_path: str | os.PathLike,
    data_path: str | os.PathLike,
    saliency_path: str | os.PathLike,
    out_csv: str | os.PathLike,
    out_curves: str | os.PathLike,
    metrics_config: dict[str, Any],
    batch_size: int,
    device: torch.device,
    labels: dict[str, str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Score one saliency shard; write the per-image CSV and the curves (npz).

    ``metrics_config`` is the config's ``metrics`` mapping (or the part of it the
    metrics rule passes): the insertion/deletion protocol
    (:func:`cambench.metrics.protocols.resolve_protocol`, resolved here for the
    images' height and the class the maps explain), ``forward_batch_size`` and
    ``pointing_tolerance``. The resolved protocol is written into every CSV row
    (``protocol``, JSON) and into the curve file.
    """
    from cambench.metrics import confidence_change, insertion_deletion, localization
    from cambench.metrics.protocols import PROTOCOL_KEYS, resolve_protocol

    unknown = sorted(set(metrics_config) - {*PROTOCOL_KEYS, *METRICS_STAGE_KEYS, "statistics"})
    if unknown:
        raise ValueError(f"unknown metrics setting(s) {unknown}")
    # one inference copy for every batch's metric calls (they would each make one)
    model = inference_copy(load_checkpoint(model_path, map_location=device), device)
    cache = read_saliency(saliency_path, model_sha256=file_sha256(model_path))
    split: Split = read_split(data_path)
    target_mode = cache.attrs.get("target_mode") or metrics_config.get("target", "label")
    try:
        protocol = resolve_protocol(metrics_config, split.images.shape[-2], str(target_mode))
    except ValueError as err:
        raise ValueError(f"{saliency_path}: {err}") from None
    tolerance = float(metrics_config.get("pointing_tolerance", 0))
    forward_batch_size = int(metrics_config.get("forward_batch_size", 512))
    ins_curves, del_curves, rows = [], [], []
    for start in tqdm(
        range(0, len(cache.index), batch_size), desc="metrics", unit="batch", disable=not progress
    ):
        sl = slice(start, start + batch_size)
        idx = cache.index[sl]
        images = split.float_images(idx).to(device)
        targets = cache.target[sl].to(device)
        maps = cache.maps[sl].to(device)
        conf = confidence_change(model, images, targets, maps, batch_size=batch_size)
        curves = insertion_deletion(
            model,
            images,
            targets,
            maps,
            steps=protocol.steps,
            insertion_substrate=protocol.insertion_substrate,
            deletion_substrate=protocol.deletion_substrate,
            blur_sigma=protocol.blur_sigma,
            blur_kernel=protocol.blur_kernel,
            batch_size=forward_batch_size,
        )
        loc = localization(maps, split.masks[idx].to(device), tolerance=tolerance)
        rows.append(
            {
                "index": idx.numpy(),
                "label": cache.label[sl].numpy(),
                "target": cache.target[sl].numpy(),
                "p": conf.p.cpu().numpy(),
                "o": conf.o.cpu().numpy(),
                "AD": conf.drop().cpu().numpy(),
                "AI": conf.increase().cpu().numpy(),
                "AG": conf.gain().cpu().numpy(),
                "insertion": 100 * curves.insertion_auc.cpu().numpy(),
                "deletion": 100 * curves.deletion_auc.cpu().numpy(),
                "pointing_game": 100 * loc.pointing.cpu().numpy(),
                "energy_pointing_game": 100 * loc.energy.cpu().numpy(),
                "iou": 100 * loc.iou.cpu().numpy(),
            }
        )
        ins_curves.append(curves.insertion.cpu().numpy())
        del_curves.append(curves.deletion.cpu().numpy())
    frame = (
        pd.DataFrame({k: np.concatenate([r[k] for r in rows]) for k in rows[0]})
        if rows
        else pd.DataFrame()
    )
    seconds = float(cache.attrs.get("seconds", float("nan")))
    frame.insert(0, "method", cache.attrs["method"])
    for key, value in reversed(list((labels or {}).items())):
        frame.insert(0, key, value)
    frame["seconds"] = seconds / max(len(cache.index), 1)
    frame["pointing_tolerance"] = tolerance
    frame["protocol"] = protocol.to_json()
    with atomic_output(out_csv) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    empty = np.zeros((0, protocol.steps + 1), dtype=np.float32)
    with atomic_output(out_curves) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            insertion=np.concatenate(ins_curves) if ins_curves else empty,
            deletion=np.concatenate(del_curves) if del_curves else empty,
            index=cache.index.numpy(),
            method=np.array(cache.attrs["method"]),
            protocol=np.array(protocol.to_json()),
        )
    return frame


def read_metric_csvs(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate per-image CSVs, failing with the name of an unreadable file."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path)
        except Exception as err:  # pandas raises many types
            raise ValueError(f"{path}: cannot read per-image metrics ({err})") from err
        if frame.empty:
            continue
        frames.append(frame)
    if not paths:
        raise ValueError("no per-image metric files given")
    if not frames:
        raise ValueError(f"the per-image metric files hold no image: {[str(p) for p in paths]}")
    return pd.concat(frames, ignore_index=True)


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON atomically (training histories)."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2) + "\n")

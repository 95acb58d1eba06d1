"""The saliency job: one model × method × shard of maps into the HDF5 cache."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from cambench import joblog
from cambench.cache import SaliencyWriter
from cambench.data.store import read_split
from cambench.models import file_sha256, load_checkpoint
from cambench.models.guard import (
    Fingerprint,
    check_deterministic,
    check_unchanged,
    fingerprint,
)
from cambench.provenance import stage_digest
from cambench.saliency import degenerate, explain_with_flags, resolve_layer
from cambench.saliency.core import activations
from cambench.saliency.registry import resolve_entry

TARGETS = ("label", "predicted")


def shard_indices(n_images: int | None, n_total: int, shards: int, shard: int) -> np.ndarray:
    """Positions in the split of shard ``shard`` of ``shards``: the first ``n_images``
    images (``None``: the whole split, as ROAR's maps of the train split) split into
    contiguous, near-equal parts."""
    n_images = n_total if n_images is None else n_images
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} out of range for {shards} shards")
    if n_images > n_total:
        raise ValueError(f"eval.n_images is {n_images} but the test split holds {n_total} images")
    return np.array_split(np.arange(int(n_images), dtype=np.int64), shards)[shard]


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


def _check_model(
    before: Fingerprint, model: torch.nn.Module, what: str, writer: SaliencyWriter
) -> None:
    """The model-change check (:func:`cambench.models.guard.check_unchanged`); a failure
    also removes the temporary file, whose maps may come from the changed model."""
    try:
        check_unchanged(before, model, what)
    except ValueError:
        writer.tmp.unlink(missing_ok=True)
        raise


def run(
    model_path: str | os.PathLike,
    data_path: str | os.PathLike,
    out_path: str | os.PathLike,
    method: str,
    params: dict[str, Any],
    layer: str | None,
    n_images: int | None,
    shards: int,
    shard: int,
    batch_size: int,
    target: str,
    device: torch.device,
    model_name: str,
    progress: bool,
) -> None:
    """Compute one shard's maps and write them to the HDF5 cache (resumable).

    ``method`` is the ``methods:`` entry's label; a variant's ``params`` carry the
    method it runs under ``"method"`` (a registered name or ``captum:<Class>`` /
    ``pytorch_grad_cam:<Class>``). The file's ``method`` attribute is the label; it
    also records ``registered_method`` where the two differ, and a peer library's name
    and version (``library``, ``library_version``)."""
    label = method
    spec, full_params = resolve_entry(label, params)
    method = spec.name
    start = joblog.header(
        "saliency",
        {
            "model": model_name,
            "method": label if label == method else f"{label} ({method})",
            "parameters": full_params,
            "shard": f"{shard + 1}/{shards}",
            "device": str(device),
        },
        [str(model_path), str(data_path)],
    )
    model = load_checkpoint(model_path, map_location=device)
    split = read_split(data_path)
    if spec.needs_masks and not split.attrs.get("has_masks", False):
        raise ValueError(
            f"{data_path}: saliency method {method!r} reads object masks, but this dataset "
            f"has none (config key 'methods.{label}')"
        )
    index = shard_indices(n_images, len(split), shards, shard)
    # A model that names no target layer gets the last one that outputs a map, found
    # by a forward of the split's first image (resolve_layer's probe; every shard the same).
    example = split.float_images(slice(0, 1)).to(device) if len(split) else None
    layer_name = resolve_layer(model, layer, example)[0] if spec.uses_layer else ""
    attrs = {
        "method": label,
        "params": full_params,
        "layer": layer_name,
        "model_sha256": file_sha256(model_path),
        "model": model_name,
        "shard": shard,
        "shards": shards,
        "dataset": split.attrs.get("dataset", ""),
        "split": split.attrs.get("split", ""),
        "target_mode": target,
        "device": str(device),
        # what else determines the maps: a temporary file is resumed only when all equal
        "code_sha256": stage_digest("saliency", method),
        "data_sha256": file_sha256(data_path),
        "n_images": len(split) if n_images is None else int(n_images),
        "batch_size": int(batch_size),
    }
    if method != label:  # a variant or a peer library's method (absent otherwise)
        attrs["registered_method"] = method
    if hasattr(spec, "provenance"):  # a peer library's method: its name and version
        attrs.update(spec.provenance())
    if layer_name:
        print(f"  target layer: {layer_name}", flush=True)
        if example is not None:  # a map from fewer than 2×2 positions is a constant
            acts, _ = activations(model, example, layer=resolve_layer(model, layer_name)[1])
            h, w = acts.shape[-2:]
            where = f"model {model_name or model_path} (config key 'models.{model_name}.layer')"
            degenerate.check_layer_size(int(h), int(w), where)
    if len(index):  # dropout left active would make every map irreproducible
        first = split.float_images(torch.from_numpy(index[: min(len(index), 8)])).to(device)
        check_deterministic(model, first, f"model {model_name or model_path}")
    # the weights' sums and norms here and after the last batch; after every method
    # call only what needs no pass over the weights (cambench.models.guard)
    at_start, before = fingerprint(model), fingerprint(model, values=False)
    size = split.image_size  # the file's shape: no image is read until a batch needs it
    with SaliencyWriter(out_path, index, split.labels[index].numpy(), size, attrs) as writer:
        starts = range(writer.n_done, len(index), batch_size)
        for batch, begin in enumerate(
            joblog.progress(starts, f"{label} shard {shard}", len(starts), progress)
        ):
            idx = torch.from_numpy(index[begin : begin + batch_size])
            images = split.float_images(idx).to(device)
            targets = explained_classes(model, images, split.labels[idx].to(device), target)
            # a method that reads the object masks (mask_oracle) gets the batch's
            masks = {"object_masks": split.masks[idx].to(device)} if spec.needs_masks else {}
            tic = time.perf_counter()
            try:
                maps, flags = explain_with_flags(
                    method, model, images, targets, layer=layer_name or None, **masks, **full_params
                )
            except ValueError as err:
                raise ValueError(
                    f"model {model_name or model_path}, images {int(idx[0])}–{int(idx[-1])} "
                    f"(batch {batch}): {err}"
                ) from None
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - tic
            _check_model(
                before, model, f"saliency method {spec.describe()} (batch {batch})", writer
            )
            writer.write(maps, targets, seconds, flags)
        _check_model(at_start, model, f"saliency method {spec.describe()} (job end)", writer)
        counts = writer.degenerate_counts()
    split.close()
    for code, count in counts.items():
        print(f"  degenerate maps: {count} of {len(index)} {degenerate.REASONS[code]}", flush=True)
    if not counts:
        print(f"  degenerate maps: none of {len(index)}", flush=True)
    joblog.footer(start, [str(out_path)])

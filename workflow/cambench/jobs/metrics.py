"""The metrics job: score one saliency shard; write the per-image CSV and the curves.

Every metric of :mod:`cambench.metric_table` becomes one per-image column, in the
table's unit (percent): the metric functions return fractions and the entry's
``scale`` converts them here, in one place.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd
import torch

from cambench import joblog
from cambench.atomic import atomic_output
from cambench.cache import SaliencyCache, read_saliency
from cambench.data.store import read_split
from cambench.jobs.saliency import shard_indices
from cambench.metric_table import BY_COLUMN, DEFAULT_COLUMNS, RERUNS_METHOD
from cambench.metrics import confidence_change, insertion_deletion, localization
from cambench.metrics.complexity import complexity, effective_complexity, sparseness
from cambench.metrics.correlation import faithfulness_correlation, monotonicity_correlation
from cambench.metrics.irof import irof
from cambench.metrics.protocols import PROTOCOL_KEYS, resolve_protocol
from cambench.metrics.quantus_adapter import quantus_scores
from cambench.metrics.road import ORDERS, road
from cambench.metrics.robustness import relative_input_stability, sensitivity
from cambench.models import file_sha256, load_checkpoint
from cambench.models.inference import inference_copy
from cambench.saliency import explain
from cambench.table_io import write_csv

#: Keys of a metrics job's settings besides the protocol's.
SETTINGS = ("forward_batch_size", "pointing_tolerance", "include", "metric_params", "quantus")


def rerun_metrics(
    model: torch.nn.Module,
    fast_model: torch.nn.Module,
    cache: SaliencyCache,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    masks: torch.Tensor | None,
    index: torch.Tensor,
    params: dict[str, dict[str, Any]],
    quantus: dict[str, dict[str, Any]],
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """The metrics that re-run the shard's method (robustness, Quantus): the method,
    its parameters and target layer are the saliency file's. The re-explained maps are
    rounded to float16 as the file stores them, so a zero perturbation gives zero."""
    if not (quantus or any(g in params for g in RERUNS_METHOD)):
        return {}
    method = str(cache.attrs.get("registered_method", cache.attrs["method"]))
    method_params = {k: v for k, v in cache.params.items() if k != "method"}
    layer = str(cache.attrs.get("layer") or "") or None

    def explain_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return explain(method, model, x, t, layer=layer, **method_params).half().float()

    out: dict[str, torch.Tensor] = {}
    if "sensitivity" in params:
        s = sensitivity(explain_fn, images, targets, maps, index, **params["sensitivity"])
        out.update(max_sensitivity=s.max, avg_sensitivity=s.avg)
    if "relative_input_stability" in params:
        out["relative_input_stability"] = relative_input_stability(
            fast_model,
            explain_fn,
            images,
            targets,
            maps,
            index,
            **params["relative_input_stability"],
        )
    if quantus:
        out.update(
            quantus_scores(
                quantus,
                model,
                images,
                targets,
                maps,
                masks,
                index,
                method,
                method_params,
                layer,
                batch_size,
            )  # fmt: skip
        )
    return out


def added_metrics(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    index: torch.Tensor,
    params: dict[str, dict[str, Any]],
    batch_size: int,
    columns: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Fractions / values of the added metrics' columns for the computations in
    ``params`` (:data:`cambench.metric_table.PARAMS`, defaults filled). ROAD computes
    only the curves the chosen ``columns`` read (all when none is named): ``road_morf``
    alone costs half of the three."""
    out: dict[str, torch.Tensor] = {}
    if "road" in params:
        p = params["road"]
        orders = [
            order for order in ORDERS if not columns or {"road", f"road_{order}"} & set(columns)
        ]
        r = road(
            model,
            images,
            targets,
            maps,
            index,
            percentages=p["percentages"],
            noise=p["noise"],
            weights=tuple(p["weights"]),
            score=p["score"],
            seed=p["seed"],
            batch_size=batch_size,
            orders=orders,
        )
        if r.morf_curve is not None:
            out["road_morf"] = r.morf
        if r.lerf_curve is not None:
            out["road_lerf"] = r.lerf
        if r.morf_curve is not None and r.lerf_curve is not None:
            out["road"] = r.gap
    if "faithfulness_correlation" in params:
        out["faithfulness_correlation"] = faithfulness_correlation(
            model,
            images,
            targets,
            maps,
            index,
            batch_size=batch_size,
            **params["faithfulness_correlation"],
        )
    if "monotonicity_correlation" in params:
        out["monotonicity_correlation"] = monotonicity_correlation(
            model,
            images,
            targets,
            maps,
            index,
            batch_size=batch_size,
            **params["monotonicity_correlation"],
        )
    if "irof" in params:
        out["irof"] = irof(
            model, images, targets, maps, batch_size=batch_size, **params["irof"]
        ).aoc
    if "sparseness" in params:
        out["sparseness"] = sparseness(maps)
    if "complexity" in params:
        out["complexity"] = complexity(maps)
    if "effective_complexity" in params:
        out["effective_complexity"] = effective_complexity(maps, **params["effective_complexity"])
    return out


def check_provenance(cache: SaliencyCache, expected: dict[str, Any], n_test: int) -> None:
    """The saliency file is the expected model × method × parameters × shard: its
    attributes and its ``index`` range against what the workflow asked for (a shard
    copied over another's name would be scored, and counted, twice)."""
    path = cache.path
    for key in ("model", "method", "shard", "shards"):
        if key in expected and str(cache.attrs.get(key)) != str(expected[key]):
            raise ValueError(
                f"{path}: holds {key} {cache.attrs.get(key)!r}, expected {expected[key]!r} "
                "(a file copied or moved from another job?)"
            )
    if "registered_method" in expected:  # a variant: the method it ran, under its label
        ran = cache.attrs.get("registered_method", cache.attrs.get("method"))
        if str(ran) != str(expected["registered_method"]):
            raise ValueError(
                f"{path}: computed with method {ran!r}, expected "
                f"{expected['registered_method']!r} (config key 'methods.{expected.get('method')}"
                ".method')"
            )
    if "params" in expected and cache.params != expected["params"]:
        raise ValueError(
            f"{path}: computed with parameters {cache.params}, expected {expected['params']}"
        )
    if "n_images" in expected:
        want = shard_indices(expected["n_images"], n_test, expected["shards"], expected["shard"])
        if not np.array_equal(cache.index.numpy(), want):
            raise ValueError(
                f"{path}: holds images {cache.index[:3].tolist()}… ({len(cache.index)}), "
                f"expected shard {expected['shard']}'s {len(want)} images from {want[:1].tolist()}"
            )


def run(
    model_path: str | os.PathLike,
    data_path: str | os.PathLike,
    saliency_path: str | os.PathLike,
    out_csv: str | os.PathLike,
    out_curves: str | os.PathLike,
    settings: dict[str, Any],
    batch_size: int,
    device: torch.device,
    model_name: str,
    expected: dict[str, Any],
    progress: bool,
) -> pd.DataFrame:
    """Score one saliency shard; write the per-image CSV and the curves (npz).

    ``settings``: the insertion/deletion protocol's keys
    (:func:`cambench.metrics.protocols.resolve_protocol`, resolved here for the
    images' height and the class the maps explain), ``forward_batch_size`` and
    ``pointing_tolerance``. ``expected``: what the saliency file must be
    (:func:`check_provenance`). The resolved protocol is written into every CSV row
    (``protocol``, JSON) and into the curve file.
    """
    unknown = sorted(set(settings) - {*PROTOCOL_KEYS, *SETTINGS})
    if unknown:
        raise ValueError(f"unknown metrics setting(s) {unknown}")
    start = joblog.header(
        "metrics",
        {
            "model": model_name,
            "saliency": str(saliency_path),
            "settings": settings,
            "device": str(device),
        },
        [str(model_path), str(data_path), str(saliency_path)],
    )
    # one inference copy for every batch's metric calls (they would each make one); the
    # metrics that re-run the method explain with the model as the saliency job loaded it
    loaded = load_checkpoint(model_path, map_location=device)
    model = inference_copy(loaded, device)
    cache = read_saliency(saliency_path, model_sha256=file_sha256(model_path))
    split = read_split(data_path)
    check_provenance(cache, expected, len(split))
    target_mode = str(cache.attrs.get("target_mode") or "label")
    try:
        protocol = resolve_protocol(settings, split.image_size[0], target_mode)
    except ValueError as err:
        raise ValueError(f"{saliency_path}: {err}") from None
    tolerance = float(settings["pointing_tolerance"])
    columns = tuple(settings.get("include") or DEFAULT_COLUMNS)
    metric_params = settings.get("metric_params") or {}
    ins_curves, del_curves, rows = [], [], []
    starts = range(0, len(cache.index), batch_size)
    for begin in joblog.progress(starts, "metrics", len(starts), progress):
        sl = slice(begin, begin + batch_size)
        idx = cache.index[sl]
        images = split.float_images(idx).to(device)  # reads this batch's images only
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
            batch_size=int(settings["forward_batch_size"]),
        )
        loc = localization(maps, split.masks[idx].to(device), tolerance=tolerance)
        # table values (percent): AD/AI/AG scale before their division (the rounding
        # of a computation in percent), the others are scaled fractions
        values = {
            "AD": conf.drop(scale=BY_COLUMN["AD"].scale),
            "AI": conf.increase(scale=BY_COLUMN["AI"].scale),
            "AG": conf.gain(scale=BY_COLUMN["AG"].scale),
        }
        fractions = {
            "insertion": curves.insertion_auc,
            "deletion": curves.deletion_auc,
            "pointing_game": loc.pointing,
            "energy_pointing_game": loc.energy,
            "iou": loc.iou,
        }
        row = {
            "index": idx.numpy(),
            "label": cache.label[sl].numpy(),
            "target": cache.target[sl].numpy(),
            "p": conf.p.cpu().numpy(),
            "o": conf.o.cpu().numpy(),
        }
        fractions.update(
            added_metrics(
                model,
                images,
                targets,
                maps,
                idx.to(device),
                metric_params,
                int(settings["forward_batch_size"]),
                columns,
            )
        )
        fractions.update(
            rerun_metrics(
                loaded,
                model,
                cache,
                images,
                targets,
                maps,
                split.masks[idx].to(device) if settings.get("quantus") else None,
                idx.to(device),
                metric_params,
                settings.get("quantus") or {},
                int(settings["forward_batch_size"]),
            )
        )
        for column in columns:
            if column in values:
                row[column] = values[column].cpu().numpy()
            else:
                row[column] = BY_COLUMN[column].scale * fractions[column].cpu().numpy()
        rows.append(row)
        ins_curves.append(curves.insertion.cpu().numpy())
        del_curves.append(curves.deletion.cpu().numpy())
    split.close()
    frame = (
        pd.DataFrame({k: np.concatenate([r[k] for r in rows]) for k in rows[0]})
        if rows
        else pd.DataFrame()
    )
    seconds = float(cache.attrs.get("seconds", float("nan")))
    frame.insert(0, "method", cache.attrs["method"])
    frame.insert(0, "model", model_name)
    if "registered_method" in cache.attrs:  # a variant's label: the method it ran
        frame["registered_method"] = str(cache.attrs["registered_method"])
    frame["seconds"] = seconds / max(len(cache.index), 1)
    frame["pointing_tolerance"] = tolerance
    frame["protocol"] = protocol.to_json()
    # what made these rows, for the summary's check against the configuration
    frame["params"] = cache.attrs["params"]
    # 0: a map; 1: all zero; 2: constant (cambench.saliency.degenerate)
    frame["degenerate"] = cache.degenerate.numpy() if len(frame) else []
    frame["model_sha256"] = cache.attrs["model_sha256"]
    if metric_params:  # the added metrics' parameters and seeds (not in the default run)
        frame["metric_params"] = json.dumps(metric_params, sort_keys=True)
    write_csv(out_csv, frame, "%.6g")
    empty = np.zeros((0, protocol.steps + 1), dtype=np.float32)
    with atomic_output(out_curves) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            insertion=np.concatenate(ins_curves) if ins_curves else empty,
            deletion=np.concatenate(del_curves) if del_curves else empty,
            index=cache.index.numpy(),
            method=np.array(cache.attrs["method"]),
            protocol=np.array(protocol.to_json()),
            # the added metrics' parameters and seeds, as in the CSV (not in the default run)
            **(
                {"metric_params": np.array(json.dumps(metric_params, sort_keys=True))}
                if metric_params
                else {}
            ),
        )
    joblog.footer(start, [str(out_csv), str(out_curves)])
    return frame

"""Any per-image Quantus metric by class name (``metrics.quantus: {<Class>: {params}}``).

Quantus (https://github.com/understandable-machine-intelligence-lab/Quantus, the
optional ``quantus`` extra) scores the cached maps of a metrics job: each batch's
images, explained classes and maps go to ``Class(**params)(model, x, y, a, s, ...)``,
with the object masks as ``s_batch`` (Quantus's localisation metrics read them) and
cambench's :func:`cambench.saliency.explain` of the shard's method as the
explanation function (for the metrics that recompute maps, e.g. ``MaxSensitivity``;
Quantus's perturbed inputs are clamped to [0, 1] first, the range every cambench model
takes). The result is one value per image, in the column ``quantus_<Class>``
declared in :mod:`cambench.metric_table` (direction from :data:`QUANTUS_METRICS`).

Quantus draws its random numbers from numpy's global generator: each batch seeds it
with the position of the batch's first image in the split (and restores it after), so
a shard's values are reproducible; they depend on the batch size.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from torch import nn

from cambench.metric_table import QUANTUS_METRICS, QUANTUS_NOT_PER_IMAGE
from cambench.saliency import explain

__all__ = ["check_quantus", "quantus_column", "quantus_scores"]

#: Arguments cambench sets itself (one score per image, no console output).
RESERVED = ("return_aggregate", "aggregate_func", "disable_warnings", "display_progressbar")


def quantus_column(name: str) -> str:
    """The table column of Quantus class ``name``."""
    return f"quantus_{name}"


def _quantus() -> Any:
    try:
        import quantus
    except ImportError:
        raise ValueError(
            "config key 'metrics.quantus': Quantus is not installed; install the extra: "
            "pip install 'cambench[quantus]'"
        ) from None
    return quantus


def check_quantus(entries: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """The checked ``metrics.quantus`` mapping (``{}`` when absent): every key a Quantus
    class that gives one score per image, every parameter one its constructor takes;
    ValueError naming ``metrics.quantus.<Class>[.<param>]`` otherwise."""
    if not entries:
        return {}
    quantus = _quantus()
    out: dict[str, dict[str, Any]] = {}
    for name, params in entries.items():
        where = f"metrics.quantus.{name}"
        key = f"config key '{where}'"
        cls = getattr(quantus, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, quantus.Metric)):
            raise ValueError(
                f"{key}: Quantus {quantus.__version__} has no metric class {name!r}; "
                f"valid: {', '.join(QUANTUS_METRICS)}"
            )
        if name in QUANTUS_NOT_PER_IMAGE:
            raise ValueError(f"{key}: {QUANTUS_NOT_PER_IMAGE[name]}")
        if name not in QUANTUS_METRICS:
            raise ValueError(
                f"{key}: cambench does not know whether higher or lower is better for "
                f"{name}; valid: {', '.join(QUANTUS_METRICS)}"
            )
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"{key}: expected a mapping of parameters, got {params!r}")
        takes = [
            p
            for p in inspect.signature(cls.__init__).parameters
            if p not in ("self", "kwargs", "args")
        ]
        for param in params or {}:
            if param in RESERVED:
                raise ValueError(
                    f"config key '{where}.{param}': set by cambench (one score per image)"
                )
            if param not in takes:
                raise ValueError(
                    f"config key '{where}.{param}': {name} takes no parameter {param!r}; valid: "
                    f"{', '.join(p for p in takes if p not in RESERVED)}"
                )
        out[name] = dict(params or {})
    return out


def quantus_scores(
    entries: dict[str, dict[str, Any]],
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    masks: torch.Tensor | None,
    index: torch.Tensor,
    method: str,
    params: dict[str, Any],
    layer: str | None,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """``{quantus_<Class>: (B,) float64}`` for every entry of the checked ``entries``
    (:func:`check_quantus`), on one batch; ``method`` with ``params`` and ``layer``
    explains the inputs a metric perturbs."""
    quantus = _quantus()
    device = images.device

    def explain_func(model: nn.Module, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.int64, device=device).flatten()
        maps = explain(method, model, x.clamp(0.0, 1.0), t, layer=layer, **params)
        return maps.cpu().numpy()

    x = images.detach().cpu().numpy()
    y = targets.detach().cpu().numpy()
    a = maps.detach().float().cpu().numpy()[:, None]
    s = None if masks is None else masks.detach().cpu().numpy().astype(np.float32)[:, None]
    out: dict[str, torch.Tensor] = {}
    for name, kwargs in entries.items():
        metric = getattr(quantus, name)(
            **kwargs, return_aggregate=False, disable_warnings=True, display_progressbar=False
        )
        state = np.random.get_state()
        np.random.seed(int(index[0]) if len(index) else 0)
        try:
            scores = metric(
                model=model,
                x_batch=x,
                y_batch=y,
                a_batch=a,
                s_batch=s,
                channel_first=True,
                explain_func=explain_func,
                device=str(device),
                batch_size=batch_size,
            )
        finally:
            np.random.set_state(state)
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
        if values.shape[0] != x.shape[0]:
            raise ValueError(
                f"config key 'metrics.quantus.{name}': Quantus returned {values.shape[0]} "
                f"values for {x.shape[0]} images (not one score per image)"
            )
        out[quantus_column(name)] = torch.from_numpy(values).to(device)
    return out

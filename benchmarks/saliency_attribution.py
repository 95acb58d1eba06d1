"""The input attributions' table of benchmarks/saliency.py (cambench.saliency.attribution).

For each method, on one case's model and images: the time of ``explain``; its floor,
the forward (and backward) passes the method cannot avoid, timed on the same rows per
pass with the unperturbed images (``P`` occlusion positions, ``N`` RISE masks, ``m``
IG steps, ``n`` noise samples); and Captum's time at equal settings (same steps, rule,
baseline, samples, noise level, window, stride, fill, rows per pass; Captum gets the
model as a user would pass it, parameters requiring grad). The machine may be shared:
every round times floor, cambench and Captum back to back, and the ratios are those of
the best times over the rounds. ``fn ms`` is the registered function alone (under
``frozen_eval``, as ``explain`` runs it): ``explain`` minus its contract (input checks,
the raw scores' check, normalization), to tell the method's cost from the contract's.

:data:`CLOCK` is wall time (``time.perf_counter``); ``--clock cpu`` of
benchmarks/saliency.py sets ``time.process_time``, the process's CPU time over all its
threads, which a loaded shared machine distorts much less than wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from cambench.saliency import METHODS, explain
from cambench.saliency.core import frozen_eval
from cambench.saliency.perturb import occlusion_windows

try:
    import captum
    import captum.attr as captum_attr
except ImportError:  # the benchmark still runs without the peer
    captum = captum_attr = None

ATTRIBUTION = (
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "vargrad",
    "occlusion",
    "rise",
)
# The benchmark's settings: the defaults but RISE's masks (4000 would take minutes).
SETTINGS = {"rise": {"masks": 500}}
MAX_IMAGES = 8  # images per call (a case with more uses its first 8)


CLOCK: Callable[[], float] = time.perf_counter


def _time(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = CLOCK()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return CLOCK() - start


def passes(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    copies: int,
    rows: int,
    backward: bool,
) -> Callable[[], None]:
    """The floor: ``copies`` copies of the batch through the model, ``rows`` per pass
    (whole copies, as the methods chunk), with a backward to the input if asked."""
    b = len(images)
    per = max(1, min(copies, rows // b))
    x_full, t_full = images.repeat(per, 1, 1, 1), targets.repeat(per)

    def run() -> None:
        with frozen_eval(model):
            for k0 in range(0, copies, per):
                k = min(per, copies - k0)
                x, t = x_full[: k * b], t_full[: k * b]
                if backward:
                    with torch.enable_grad():
                        x = x.detach().requires_grad_(True)
                        score = model(x).gather(1, t.view(-1, 1)).sum()
                        torch.autograd.grad(score, x)
                else:
                    with torch.no_grad():
                        model(x)

    return run


def floor_of(method: str, params: dict, model, images, targets) -> tuple[str, Callable[[], None]]:
    b, h, w = len(images), *images.shape[-2:]
    chunk = params.get("batch_size", b)
    if method == "input_x_gradient":
        return "fwd+bwd", passes(model, images, targets, 1, b, True)
    if method == "integrated_gradients":
        return "m·(fwd+bwd)", passes(model, images, targets, params["steps"], chunk, True)
    if method in ("smoothgrad", "vargrad"):
        return "n·(fwd+bwd)", passes(model, images, targets, params["samples"], chunk, True)
    if method == "occlusion":
        count = len(occlusion_windows(h, params["window"], params["stride"], "cpu")) * len(
            occlusion_windows(w, params["window"], params["stride"], "cpu")
        )
        run = passes(model, images, targets, count, chunk, False)
        one = passes(model, images, targets, 1, b, False)
        return "(P+1)·fwd", lambda: (run(), one())
    if method == "rise":
        return "N·fwd", passes(model, images, targets, params["masks"], chunk, False)
    raise ValueError(method)


def captum_of(method: str, params: dict, model, images, targets) -> Callable[[], object] | None:
    """Captum's method at ``params`` (None where Captum has none: RISE)."""
    if captum_attr is None or method == "rise":
        return None
    b = len(images)
    per = max(1, params.get("batch_size", b) // b)
    if method == "input_x_gradient":
        return lambda: captum_attr.InputXGradient(model).attribute(images.clone(), target=targets)
    if method == "integrated_gradients":
        return lambda: captum_attr.IntegratedGradients(model).attribute(
            images, baselines=0.0, target=targets, n_steps=params["steps"],
            method=params["rule"], internal_batch_size=per * b,
        )  # fmt: skip
    if method in ("smoothgrad", "vargrad"):
        flat = images.flatten(1)
        stdev = float(params["noise"] * (flat.amax(1) - flat.amin(1)).mean())
        return lambda: captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
            images, nt_type=method, nt_samples=params["samples"], stdevs=stdev,
            nt_samples_batch_size=per, target=targets, abs=False,
        )  # fmt: skip
    if method == "occlusion":

        def probability(x: torch.Tensor) -> torch.Tensor:
            out = model(x)
            return out.softmax(1) if params["score"] == "probability" else out

        window, stride = params["window"], params["stride"]
        return lambda: captum_attr.Occlusion(probability).attribute(
            images, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
            baselines=params["fill"], target=targets, perturbations_per_eval=per,
        )  # fmt: skip
    raise ValueError(method)


def setting(method: str, params: dict) -> str:
    keys = {
        "integrated_gradients": ("steps", "rule", "batch_size"),
        "smoothgrad": ("samples", "noise", "batch_size"),
        "vargrad": ("samples", "noise", "batch_size"),
        "occlusion": ("window", "stride", "batch_size"),
        "rise": ("masks", "cell_size", "batch_size"),
    }.get(method, ())
    short = {"batch_size": "rows", "rule": ""}
    return " ".join(
        f"{short.get(k, k)}{'' if k == 'rule' else ' '}{params[k]}" for k in keys
    ).strip()


def benchmark_attribution(
    case, methods: list[str], repeats: int, device: torch.device, emit
) -> None:
    """One table for ``case`` (model, images, targets, name) and ``methods``."""
    images, targets = case.images[:MAX_IMAGES], case.targets[:MAX_IMAGES]
    model = case.model
    emit("")
    emit(
        f"## input attributions: {case.name}; {len(images)} images per call; best of "
        f"{repeats} round(s); device {device}; captum {getattr(captum, '__version__', 'not installed')}"
    )
    emit(
        f"{'method':<21}  {'setting':<30}  {'ms':>8}  {'floor':<12}  {'floor ms':>8}  "
        f"{'x floor':>7}  {'captum ms':>9}  {'vs captum':>9}  {'fn ms':>8}  {'fn vs captum':>12}"
    )
    emit("  ".join("-" * w for w in (21, 30, 8, 12, 8, 7, 9, 9, 8, 12)))
    for method in methods:
        params = METHODS[method].resolve_params(SETTINGS.get(method, {}))
        floor_name, floor = floor_of(method, params, model, images, targets)
        peer = captum_of(method, params, model, images, targets)

        def ours(m=method, p=params) -> object:
            return explain(m, model, images, targets, **p)

        def alone(m=method, p=params) -> object:
            with frozen_eval(model):
                return METHODS[m].fn(model, images, targets, None, **p)

        ours()  # warm-up
        alone()
        floor()
        if peer is not None:
            peer()
        t_ours, t_floor, t_peer, t_alone = [], [], [], []
        for _ in range(repeats):
            t_floor.append(_time(floor, device))
            t_ours.append(_time(ours, device))
            t_alone.append(_time(alone, device))
            if peer is not None:
                t_peer.append(_time(peer, device))
        best, best_floor, best_alone = min(t_ours), min(t_floor), min(t_alone)
        peer_cells = (
            f"{min(t_peer) * 1e3:>9.1f}  {min(t_peer) / best:>8.3g}x"
            if t_peer
            else f"{'':>9}  {'':>9}"
        )
        alone_vs_peer = f"{min(t_peer) / best_alone:>11.3g}x" if t_peer else f"{'':>12}"
        emit(
            f"{method:<21}  {setting(method, params):<30}  {best * 1e3:>8.1f}  {floor_name:<12}  "
            f"{best_floor * 1e3:>8.1f}  {best / best_floor:>7.3g}  {peer_cells}  "
            f"{best_alone * 1e3:>8.1f}  {alone_vs_peer}"
        )

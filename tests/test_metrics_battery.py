"""The added faithfulness and complexity metrics against Quantus 0.6 and
pytorch-grad-cam's ROAD, on the same model, images, maps and random draws.

The models are tiny and seeded; the images have one channel where Quantus's
per-channel-value features would otherwise differ from cambench's pixels (see
cambench.metrics.correlation), 20 x 20 px where pytorch-grad-cam's percentile
thresholds must remove exactly floor(n·p/100) pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cambench.metrics.complexity import complexity, effective_complexity, sparseness
from cambench.metrics.correlation import (
    faithfulness_correlation,
    monotonicity_correlation,
    random_subsets,
)
from cambench.metrics.draws import hash_normal, hash_uniform
from cambench.metrics.irof import grid_segments, irof
from cambench.metrics.road import road, road_removed

quantus = pytest.importorskip("quantus")

RTOL = 1e-5


def _model(channels: int, classes: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(24, classes),
    ).eval()


def _data(b: int, c: int, size: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, c, size, size, generator=g)
    maps = torch.rand(b, size, size, generator=g)  # continuous: no ties
    targets = torch.randint(0, 3, (b,), generator=g)
    return images, maps, targets


def _close(ours, theirs, rtol=RTOL, atol=1e-7):
    np.testing.assert_allclose(
        np.asarray(ours, dtype=float), np.asarray(theirs), rtol=rtol, atol=atol
    )


# ------------------------------------------------------------------ complexity


def test_complexity_metrics_equal_quantus():
    _, maps, _ = _data(5, 1, 12)
    maps[0] = 0.0
    maps[0, 3, 4] = 1.0  # a single pixel
    maps[1] = maps[1] - 0.5  # signed: the metrics read |S|
    a = maps[:, None].numpy().astype(np.float64)
    x = np.zeros_like(a)
    y = np.zeros(len(a), dtype=int)
    kw = dict(x_batch=x, y_batch=y, a_batch=a.copy(), model=None)
    q_gini = quantus.Sparseness(disable_warnings=True)(**kw)
    q_entropy = quantus.Complexity(disable_warnings=True)(**{**kw, "a_batch": a.copy()})
    q_effective = quantus.EffectiveComplexity(disable_warnings=True)(**{**kw, "a_batch": a.copy()})
    # Quantus adds 1e-7 to the max-normalized |S| before the Gini index: the same
    # index of that shifted map; the paper's index of the single pixel is 1 - 1/n
    normalized = maps.abs() / maps.abs().flatten(1).amax(1)[:, None, None]
    _close(sparseness(normalized + 1e-7), q_gini)
    assert float(sparseness(maps)[0]) == pytest.approx(1 - 1 / 144, rel=1e-12)
    assert float(sparseness(maps)[0]) > q_gini[0]
    # entropy: Quantus's +1e-12 inside the log changes it by less than n·1e-12
    _close(complexity(maps), q_entropy, rtol=RTOL, atol=144e-12)
    # Quantus counts pixels, cambench reports their fraction
    _close(effective_complexity(maps) * 144, q_effective)


def test_complexity_hand_values_and_zero_map():
    zero = torch.zeros(1, 4, 4)
    assert float(sparseness(zero)[0]) == 0.0
    assert float(complexity(zero)[0]) == pytest.approx(np.log(16))
    assert float(effective_complexity(zero)[0]) == 0.0
    two = torch.tensor([[[1.0, 3.0]]])  # Gini (hand): ((-1)·1 + 1·3) / (2·4) = 0.25
    assert float(sparseness(two)[0]) == pytest.approx(0.25)
    p = np.array([0.25, 0.75])
    assert float(complexity(two)[0]) == pytest.approx(-(p * np.log(p)).sum())


# -------------------------------------------------------------- faithfulness


def test_faithfulness_correlation_equals_quantus(monkeypatch):
    images, maps, targets = _data(4, 1, 12)
    model = _model(1)
    index = torch.tensor([7, 3, 11, 0])
    size, runs = 20, 12
    ours = faithfulness_correlation(
        model, images, targets, maps, index, subset_size=size, n_subsets=runs, output="logit"
    )
    calls = [
        random_subsets(index, 144, size, r, 0)[i].numpy() for r in range(runs) for i in range(4)
    ]
    queue = iter(calls)
    monkeypatch.setattr(np.random, "choice", lambda *a, **k: next(queue))
    theirs = quantus.FaithfulnessCorrelation(
        nr_runs=runs,
        subset_size=size,
        perturb_baseline=0.0,
        return_aggregate=False,
        disable_warnings=True,
    )(
        model=model,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps[:, None].numpy(),
        device="cpu",
        softmax=False,
    )
    _close(ours, theirs)
    # with probabilities (Quantus: softmax=True)
    ours_p = faithfulness_correlation(
        model, images, targets, maps, index, subset_size=size, n_subsets=runs
    )
    queue = iter(calls)
    theirs_p = quantus.FaithfulnessCorrelation(
        nr_runs=runs,
        subset_size=size,
        perturb_baseline=0.0,
        return_aggregate=False,
        disable_warnings=True,
    )(
        model=model,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps[:, None].numpy(),
        device="cpu",
        softmax=True,
    )
    _close(ours_p, theirs_p)


def test_faithfulness_correlation_independent_of_batch():
    images, maps, targets = _data(4, 3, 12)
    model = _model(3)
    index = torch.tensor([5, 6, 7, 8])
    kw = dict(subset_size=16, n_subsets=8)
    whole = faithfulness_correlation(model, images, targets, maps, index, **kw)
    part = faithfulness_correlation(model, images[2:], targets[2:], maps[2:], index[2:], **kw)
    torch.testing.assert_close(whole[2:], part)
    small = faithfulness_correlation(model, images, targets, maps, index, batch_size=5, **kw)
    torch.testing.assert_close(whole, small)


def test_monotonicity_correlation_equals_quantus(monkeypatch):
    images, maps, targets = _data(3, 1, 8)
    model = _model(1)
    index = torch.tensor([2, 9, 4])
    samples = 3
    ours = monotonicity_correlation(
        model, images, targets, maps, index, pixels_per_step=1, n_samples=samples
    )
    order = torch.sort(maps.flatten(1), dim=1).indices  # ascending, no ties
    draws = []
    for g in range(64):
        for s in range(samples):
            u = hash_uniform(index, 64, 0, g * samples + s)
            draws.append(u.gather(1, order[:, g : g + 1])[:, 0].numpy())
    queue = iter(draws)
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: next(queue))
    theirs = quantus.MonotonicityCorrelation(
        nr_samples=samples, features_in_step=1, return_aggregate=False, disable_warnings=True
    )(
        model=model,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps[:, None].numpy(),
        device="cpu",
        softmax=True,
    )
    _close(ours, theirs)


def test_irof_equals_quantus_on_the_grid(monkeypatch):
    images, maps, targets = _data(3, 1, 12)
    model = _model(1)
    cells = 4
    ours = irof(model, images, targets, maps, cells=cells)
    segments = grid_segments(12, 12, cells).numpy()
    import quantus.metrics.faithfulness.irof as quantus_irof

    monkeypatch.setattr(quantus_irof.utils, "get_superpixel_segments", lambda **k: segments)
    # Quantus 0.6 integrates with np.trapz, which numpy 2 removed (same rule)
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    original_mean = images.numpy().mean(axis=(2, 3), keepdims=True)

    def per_image_mean(arr, mask, **kwargs):  # the paper's baseline, not the batch's
        return np.where(mask, original_mean, arr)

    theirs = quantus.IROF(
        perturb_func=per_image_mean, return_aggregate=False, disable_warnings=True
    )(
        model=model,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps[:, None].numpy(),
        device="cpu",
        softmax=True,
    )
    r = ours.curve.numpy()
    s = cells * cells
    # Quantus: S - trapz(r_1..r_S, dx=1); cambench: 1 - trapz(r_0..r_S, dx=1/S)
    quantus_formula = s - (r[:, 1:].sum(1) - 0.5 * (r[:, 1] + r[:, -1]))
    _close(quantus_formula, theirs)
    paper = 1 - np.trapezoid(r, dx=1 / s, axis=1)
    _close(ours.aoc, paper, rtol=1e-12)
    # Quantus's own 'mean' baseline (the batch's mean at each step) gives other values
    theirs_default = quantus.IROF(return_aggregate=False, disable_warnings=True)(
        model=model,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps[:, None].numpy(),
        device="cpu",
        softmax=True,
    )
    assert not np.allclose(theirs_default, theirs, rtol=1e-3)


# -------------------------------------------------------------------- ROAD


def _road_noise_queue(index, maps, percentages, channels, most, order_desc):
    """The noise cambench adds, in the order a reference draws it per call."""
    b, h, w = maps.shape
    queue = []
    for k, p in enumerate(percentages):
        z = hash_normal(index, channels * h * w, 0, 2 * k + (0 if most else 1))
        removed = road_removed(maps, index, p, most, 0).flatten(1)
        for i in range(b):
            if order_desc:  # Quantus: top-k in descending attribution
                pix = torch.argsort(-maps[i].flatten())[: int(removed[i].sum())]
            else:  # pytorch-grad-cam: ascending pixel position
                pix = torch.nonzero(removed[i]).flatten()
            queue.append(z[i].reshape(channels, -1)[:, pix])
    return queue


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_road_equals_pytorch_grad_cam(monkeypatch, noise):
    from pytorch_grad_cam.metrics import road as gradcam_road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    images, maps, targets = _data(3, 3, 20)
    model = _model(3)
    index = torch.tensor([4, 1, 8])
    thresholds = [10, 30, 50, 70, 90]  # grad-cam removes pixels >= the q-th percentile
    percentages = [100 - q for q in thresholds]
    ours = road(
        model,
        images,
        targets,
        maps,
        index,
        percentages=percentages,
        noise=noise,
        score="probability",
    )
    with torch.no_grad():
        before = model(images).softmax(1).gather(1, targets[:, None])[:, 0].numpy()
    cams = maps.numpy()
    tg = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    for most, ours_curve, cls in (
        (True, ours.morf, gradcam_road.ROADMostRelevantFirstAverage),
        (False, ours.lerf, gradcam_road.ROADLeastRelevantFirstAverage),
    ):
        queue = iter(_road_noise_queue(index, maps, percentages, 3, most, False))
        monkeypatch.setattr(
            torch, "randn_like", lambda t, q=queue: next(q).to(t.dtype) * (noise / 0.01)
        )
        theirs = cls(thresholds)(images, cams, tg, model)
        _close(ours_curve.numpy() - before, theirs, rtol=RTOL, atol=1e-6)
        monkeypatch.undo()


def test_road_equals_quantus(monkeypatch):
    images, maps, targets = _data(6, 1, 12)
    model = _model(1)
    index = torch.arange(6)
    percentages = [5, 25, 50, 75, 95]
    ours = road(model, images, targets, maps, index, percentages=percentages, noise=0.01)
    queue = iter(_road_noise_queue(index, maps, percentages, 1, True, True))
    monkeypatch.setattr(np.random, "randn", lambda *shape: next(queue).numpy())
    theirs = quantus.ROAD(percentages=percentages, noise=0.01, disable_warnings=True)(
        model=model,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps[:, None].numpy(),
        device="cpu",
    )
    _close(ours.morf_curve.mean(0).numpy(), [theirs[p] for p in percentages])


def test_road_computes_only_the_orders_asked_for():
    images, maps, targets = _data(3, 3, 10)
    model = _model(3)
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    index = torch.tensor([2, 0, 5])
    both = road(model, images, targets, maps, index, percentages=[30, 70])
    n_both = sum(seen)
    seen.clear()
    morf = road(model, images, targets, maps, index, percentages=[30, 70], orders=["morf"])
    assert sum(seen) * 2 == n_both == 3 * 2 * 2  # images x percentages x orders
    torch.testing.assert_close(morf.morf_curve, both.morf_curve, rtol=0, atol=0)
    assert morf.lerf_curve is None
    with pytest.raises(ValueError, match="LERF curve was not computed"):
        _ = morf.gap
    lerf = road(model, images, targets, maps, index, percentages=[30, 70], orders=["lerf"])
    torch.testing.assert_close(lerf.lerf_curve, both.lerf_curve, rtol=0, atol=0)
    with pytest.raises(ValueError, match="orders must be"):
        road(model, images, targets, maps, index, orders=["most"])


def test_road_imputation_is_the_neighbours_mean():
    # an affine image is harmonic: the imputation restores it exactly (noise 0)
    yy, xx = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    image = (0.02 * yy + 0.05 * xx + 0.1)[None, None].expand(1, 3, 9, 9).contiguous()
    from cambench.metrics.road import noisy_linear_imputation

    missing = torch.zeros(1, 9, 9, dtype=torch.bool)
    missing[0, 2:7, 3:8] = True
    out = noisy_linear_imputation(image, missing)
    torch.testing.assert_close(out, image, rtol=1e-6, atol=1e-6)


def _dense_imputation(image, missing, direct=1 / 6, diagonal=1 / 12):
    """The paper's system assembled pixel by pixel and solved densely (float64)."""
    c, h, w = image.shape
    pixels = [(r, q) for r in range(h) for q in range(w) if missing[r, q]]
    number = {p: i for i, p in enumerate(pixels)}
    a = np.zeros((len(pixels), len(pixels)))
    b = np.zeros((len(pixels), c))
    y = image.double().numpy()
    for i, (r, q) in enumerate(pixels):
        for dr in (-1, 0, 1):
            for dq in (-1, 0, 1):
                rr, qq = r + dr, q + dq
                if (dr, dq) == (0, 0) or not (0 <= rr < h and 0 <= qq < w):
                    continue
                weight = direct if dr == 0 or dq == 0 else diagonal
                a[i, i] += weight
                if missing[rr, qq]:
                    a[i, number[(rr, qq)]] -= weight
                else:
                    b[i] += weight * y[:, rr, qq]
    out = y.copy()
    solved = np.linalg.solve(a, b)
    for i, (r, q) in enumerate(pixels):
        out[:, r, q] = solved[i]
    return out


def test_road_block_solver_equals_a_dense_solve():
    from cambench.metrics.road import noisy_linear_imputation

    g = torch.Generator().manual_seed(3)
    images = torch.rand(5, 2, 7, 11, generator=g, dtype=torch.float64)
    fractions = torch.tensor([0.1, 0.3, 0.5, 0.8, 0.95], dtype=torch.float64)
    missing = torch.rand(5, 7, 11, generator=g, dtype=torch.float64) < fractions[:, None, None]
    missing[:, 0, 0] = False  # one known pixel: the system is non-singular
    ours = noisy_linear_imputation(images, missing)
    for i in range(5):
        np.testing.assert_allclose(
            ours[i].numpy(), _dense_imputation(images[i], missing[i].numpy()), rtol=0, atol=1e-10
        )


# ------------------------------------------------------- table, config and job


def test_config_errors_name_the_key():
    from cambench.metric_table import resolve_include, resolve_params

    with pytest.raises(ValueError, match=r"'metrics.include': unknown metric 'rood'"):
        resolve_include(["default", "rood"])
    with pytest.raises(ValueError, match=r"'metrics.params.road.nose'"):
        resolve_params({"road": {"nose": 0.1}}, ("road",))
    with pytest.raises(ValueError, match=r"'metrics.params.irof.cells'"):
        resolve_params({"irof": {"cells": "8"}}, ("irof",))
    with pytest.raises(ValueError, match=r"'metrics.params.gini'"):
        resolve_params({"gini": {}}, ("sparseness",))


def test_parse_config_rejects_before_any_job():
    from pathlib import Path

    import yaml

    from cambench.specs import apply_experiment, parse_config

    root = Path(__file__).resolve().parents[1]
    base = yaml.safe_load((root / "config.yaml").read_text())
    tiny = yaml.safe_load((root / "tests" / "config.tiny.yaml").read_text())

    def merged(metrics):
        cfg = apply_experiment({**base, **tiny, "metrics": {**base["metrics"], **metrics}}, tiny)
        import jsonschema

        jsonschema.validate(
            cfg, yaml.safe_load((root / "workflow" / "schemas" / "config.schema.yaml").read_text())
        )
        return cfg

    default = parse_config(_filled(merged({})))
    assert "include" not in default.metrics.job_settings()  # the default run unchanged
    chosen = parse_config(_filled(merged({"include": ["default", "complexity"]})))
    assert chosen.metrics.job_settings()["include"][-1] == "effective_complexity"
    with pytest.raises(ValueError, match="metrics.include"):
        parse_config(_filled(merged({"include": ["nope"]})))
    with pytest.raises(ValueError, match=r"metrics.params.road.bogus"):
        parse_config(_filled(merged({"include": ["road"], "params": {"road": {"bogus": 1}}})))


def _filled(cfg):
    """Schema defaults filled as Snakemake's validate() does."""
    from snakemake.utils import validate

    from cambench.specs import SCHEMA

    validate(cfg, str(SCHEMA), set_default=True)
    return cfg


def test_metrics_job_writes_the_chosen_columns(tmp_path):
    from test_integrity_jobs import _checkpoint, _run, _split

    from cambench.jobs import metrics as metrics_job
    from cambench.metric_table import DEFAULT_COLUMNS, PARAMS, resolve_include, resolve_params

    _split(tmp_path / "test.h5")
    _checkpoint(tmp_path / "model.pt")
    _run(tmp_path, "gradcam", tmp_path / "sal.h5")
    include = resolve_include(["default", "road", "irof", "complexity", "sparseness"])
    params = resolve_params({"road": {"percentages": [20, 60]}, "irof": {"cells": 4}}, include)
    base = {"protocol": "custom", "forward_batch_size": 64, "pointing_tolerance": 0.0}
    common = dict(
        model_path=tmp_path / "model.pt",
        data_path=tmp_path / "test.h5",
        saliency_path=tmp_path / "sal.h5",
        batch_size=8,
        device=torch.device("cpu"),
        model_name="baseline",
        expected={},
        progress=False,
    )
    default = metrics_job.run(
        out_csv=tmp_path / "d.csv", out_curves=tmp_path / "d.npz", settings=base, **common
    )
    chosen = metrics_job.run(
        out_csv=tmp_path / "c.csv",
        out_curves=tmp_path / "c.npz",
        settings={**base, "include": list(include), "metric_params": params},
        **common,
    )
    metrics_job.run(
        out_csv=tmp_path / "c2.csv",
        out_curves=tmp_path / "c2.npz",
        settings={**base, "include": list(include), "metric_params": params},
        **common,
    )
    # two runs on the same inputs: byte-identical files, parameters and seeds in both
    assert (tmp_path / "c.csv").read_bytes() == (tmp_path / "c2.csv").read_bytes()
    assert (tmp_path / "c.npz").read_bytes() == (tmp_path / "c2.npz").read_bytes()
    with np.load(tmp_path / "c.npz") as curves:
        assert __import__("json").loads(str(curves["metric_params"])) == params
    with np.load(tmp_path / "d.npz") as curves:
        assert "metric_params" not in curves.files  # the default run's files unchanged
    assert not set(include) - set(DEFAULT_COLUMNS) & set(default.columns)
    assert "metric_params" not in default.columns
    for column in DEFAULT_COLUMNS:  # the default columns are unchanged
        np.testing.assert_array_equal(default[column], chosen[column])
    added = [c for c in include if c not in DEFAULT_COLUMNS]
    assert np.isfinite(chosen[added].to_numpy(dtype=float)).all()
    recorded = __import__("json").loads(chosen["metric_params"].iloc[0])
    assert recorded["road"]["percentages"] == [20, 60]
    assert recorded["road"]["seed"] == PARAMS["road"]["seed"]
    # the summary takes the added columns with their intervals
    from cambench.summary.aggregate import summarize_metrics

    summary = summarize_metrics(chosen, 50, 0.95, 0)
    assert {"road", "road_ci_low", "irof", "complexity_ci_high"} <= set(summary.columns)
    assert "road" not in summarize_metrics(default, 50, 0.95, 0).columns
    # road_morf alone: the same column, no LeRF computed or written
    morf_only = resolve_include(["default", "road_morf"])
    alone = metrics_job.run(
        out_csv=tmp_path / "m.csv",
        out_curves=tmp_path / "m.npz",
        settings={
            **base,
            "include": list(morf_only),
            "metric_params": resolve_params({"road": {"percentages": [20, 60]}}, morf_only),
        },
        **common,
    )
    assert not {"road", "road_lerf"} & set(alone.columns)
    np.testing.assert_array_equal(alone["road_morf"], chosen["road_morf"])

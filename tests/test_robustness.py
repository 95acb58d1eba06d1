"""Max-/avg-sensitivity and relative input stability against Quantus 0.6 (the same model,
images, maps and perturbations: Quantus gets a perturb_func that adds cambench's draws),
and the documented differences (Quantus's NaN for one changed prediction, the paper's
unnormalized sensitivity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cambench.metrics.draws import hash_uniform
from cambench.metrics.robustness import perturb_uniform, relative_input_stability, sensitivity
from cambench.saliency import explain

quantus = pytest.importorskip("quantus")

RADIUS, SAMPLES, SEED = 0.05, 3, 4


@pytest.fixture
def setup(small_resnet):
    gen = torch.Generator().manual_seed(3)
    images = 0.2 + 0.6 * torch.rand(4, 3, 32, 32, generator=gen)  # no clamping at 0.05
    targets = torch.tensor([0, 4, 6, 8])  # no all-zero Grad-CAM map
    index = torch.tensor([10, 11, 12, 13])

    def explain_fn(x, t):
        return explain("gradcam", small_resnet, x, t)

    maps = explain_fn(images, targets)
    return small_resnet, images, targets, index, maps, explain_fn


def quantus_explain(model, inputs, targets, **kwargs):
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    t = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    return explain("gradcam", model, x.clamp(0, 1), t).numpy()


def shared_noise(index, shape, radius=RADIUS, clip=True):
    """Quantus's perturb_func drawing cambench's noise: call k adds sample k."""
    calls = {"n": 0}

    def perturb(arr, indices, **kwargs):
        u = hash_uniform(index, arr.shape[1], SEED, calls["n"]).numpy()
        calls["n"] += 1
        out = arr.astype(np.float64) + (2.0 * u - 1.0) * radius
        return np.clip(out, 0.0, 1.0) if clip else out

    return perturb


def run_quantus(metric, model, images, targets, maps):
    scores = metric(
        model=model,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps.numpy(),
        explain_func=quantus_explain,
        device="cpu",
        batch_size=64,
    )
    return np.asarray(scores, dtype=np.float64)


def test_perturbation_is_seeded_bounded_and_batch_independent():
    x = torch.full((3, 3, 4, 4), 0.5)
    idx = torch.tensor([5, 6, 7])
    a = perturb_uniform(x, idx, 0.1, 0, 2)
    assert torch.equal(a[1:], perturb_uniform(x[1:], idx[1:], 0.1, 0, 2))
    assert (a - x).abs().max() <= 0.1 + 1e-7
    assert not torch.equal(a, perturb_uniform(x, idx, 0.1, 0, 3))
    assert torch.equal(
        perturb_uniform(torch.ones(1, 3, 2, 2), idx[:1], 0.5, 0, 0).max(), torch.tensor(1.0)
    )
    with pytest.raises(ValueError, match="radius"):
        perturb_uniform(x, idx, -1.0, 0, 0)


@pytest.mark.parametrize("relative", [True, False])
def test_sensitivity_equals_quantus(setup, relative):
    model, images, targets, index, maps, explain_fn = setup
    ours = sensitivity(
        explain_fn, images, targets, maps, index, RADIUS, SAMPLES, SEED, relative=relative
    )
    # the paper's SENS has no denominator; Quantus divides by ||a|| (the authors' code)
    extra = {} if relative else {"norm_denominator": lambda a: np.ones(a.shape[0])}
    for cls, value in ((quantus.MaxSensitivity, ours.max), (quantus.AvgSensitivity, ours.avg)):
        metric = cls(
            nr_samples=SAMPLES,
            perturb_func=shared_noise(index, images.shape),
            disable_warnings=True,
            **extra,
        )
        ref = run_quantus(metric, model, images, targets, maps)
        np.testing.assert_allclose(value.numpy(), ref, rtol=1e-5)
    assert (ours.max > 0).all() and (ours.max >= ours.avg).all()


def test_sensitivity_without_clipping_equals_quantus_default_noise(setup, monkeypatch):
    """Quantus's own uniform noise (not clipped): equal where no pixel leaves [0, 1]."""
    model, images, targets, index, maps, explain_fn = setup
    ours = sensitivity(explain_fn, images, targets, maps, index, RADIUS, SAMPLES, SEED, True)
    draws = iter(
        (2.0 * hash_uniform(index, images[0].numel(), SEED, s).numpy() - 1.0) * RADIUS
        for s in range(SAMPLES)
    )
    monkeypatch.setattr(np.random, "uniform", lambda low, high, size: next(draws))
    metric = quantus.MaxSensitivity(nr_samples=SAMPLES, lower_bound=RADIUS, disable_warnings=True)
    ref = run_quantus(metric, model, images, targets, maps)
    np.testing.assert_allclose(ours.max.numpy(), ref, rtol=1e-5)


def test_zero_radius_gives_zero(setup):
    model, images, targets, index, maps, explain_fn = setup
    s = sensitivity(explain_fn, images, targets, maps, index, 0.0, 2, SEED)
    assert torch.equal(s.max, torch.zeros(4, dtype=torch.float64))
    ris = relative_input_stability(model, explain_fn, images, targets, maps, index, 0.0, 2)
    assert torch.equal(ris, torch.zeros(4, dtype=torch.float64))


def test_relative_input_stability_equals_quantus(setup):
    model, images, targets, index, maps, explain_fn = setup
    ours = relative_input_stability(
        model, explain_fn, images, targets, maps, index, RADIUS, SAMPLES, SEED
    )
    metric = quantus.RelativeInputStability(
        nr_samples=SAMPLES, perturb_func=shared_noise(index, images.shape), disable_warnings=True
    )
    ref = run_quantus(metric, model, images, targets, maps)
    assert np.isfinite(ref).all()  # no prediction changed at this radius
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5)


class Fragile(torch.nn.Module):
    """The small ResNet with class 0 winning exactly when pixel (0, 0, 0) of an image
    rose above its clean value: about half the perturbations change the prediction."""

    def __init__(self, net, clean):
        super().__init__()
        self.net = net
        self.register_buffer("ref", clean[:, 0, 0, 0].clone())

    def forward(self, x):
        out = self.net(x)
        lift = torch.where(x[:, 0, 0, 0] > self.ref, 1.0, -1.0)
        return torch.cat([(out[:, 5] + lift)[:, None], out[:, 1:]], dim=1)


def test_relative_input_stability_leaves_out_changed_predictions(setup):
    """The paper's max runs over samples that keep the prediction; Quantus 0.6 takes
    np.max over its NaNs, so one changed prediction makes the image NaN there."""
    net, images, targets, index, _, _ = setup
    model = Fragile(net, images).eval()

    def explain_fn(x, t):
        return explain("gradcam", model, x, t, layer="net.layer4")

    def quantus_fragile(model, inputs, targets, **kwargs):
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
        return explain("gradcam", model, x, t, layer="net.layer4").numpy()

    maps = explain_fn(images, targets)
    n = 6
    ours = relative_input_stability(
        model, explain_fn, images, targets, maps, index, RADIUS, n, SEED
    )
    # an independent per-sample computation, written from the paper's equation
    with torch.no_grad():
        pred = model(images).argmax(1)
    rows, changed = [], []
    for s in range(n):
        xs = perturb_uniform(images, index, RADIUS, SEED, s)
        es = explain_fn(xs, targets)
        e, x = maps.double(), images.double()
        num = torch.linalg.vector_norm(((e - es) / torch.where(e == 0, 1e-6, e)).flatten(1), dim=1)
        den = torch.linalg.vector_norm(((x - xs) / torch.where(x == 0, 1e-6, x)).flatten(1), dim=1)
        with torch.no_grad():
            keep = model(xs).argmax(1) == pred
        rows.append(torch.where(keep, num / den.clamp_min(1e-6), torch.nan))
        changed.append(~keep)
    changed = torch.stack(changed, 1)
    assert changed.any() and not changed.all(dim=1).any()
    expected = torch.stack(rows, 1).nan_to_num(-1.0).max(1).values
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=0)
    metric = quantus.RelativeInputStability(
        nr_samples=n, perturb_func=shared_noise(index, images.shape), disable_warnings=True
    )
    ref = np.asarray(
        metric(
            model=model,
            x_batch=images.numpy(),
            y_batch=targets.numpy(),
            a_batch=maps.numpy(),
            explain_func=quantus_fragile,
            device="cpu",
        ),
        dtype=np.float64,
    )
    hit = changed.any(dim=1).numpy()
    assert np.isnan(ref[hit]).all()
    np.testing.assert_allclose(ours.numpy()[~hit], ref[~hit], rtol=1e-5)


def test_all_zero_map_is_nan_when_relative(setup):
    """Quantus divides by ||a|| = 0 (inf or NaN); cambench says undefined: NaN."""
    model, images, targets, index, maps, explain_fn = setup
    zero = torch.zeros_like(maps)
    s = sensitivity(explain_fn, images, targets, zero, index, RADIUS, 2, SEED, relative=True)
    assert s.max.isnan().all()
    assert (
        not sensitivity(explain_fn, images, targets, zero, index, RADIUS, 2, SEED).max.isnan().any()
    )

"""Random-logit, smooth MPRT and efficient MPRT against Quantus 0.6: the same model,
images and maps, the same randomized models (Quantus's layer generator replaced by
cambench's cascade), the same noise and random classes (Quantus's numpy draws
replaced by cambench's); and the documented differences (Quantus's 1-D SSIM of the
flattened maps, sMPRT's clean last sample)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from skimage.metrics import structural_similarity

from cambench.metrics.draws import hash_normal
from cambench.metrics.randomization import (
    cascade,
    discrete_entropy,
    efficient_mprt,
    other_classes,
    random_logit,
    smooth_mprt,
)
from cambench.saliency import explain

quantus = pytest.importorskip("quantus")
from quantus.helpers.model.pytorch_model import PyTorchModel  # noqa: E402

METHOD = "gradcam"


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(4, 3, 32, 32, generator=gen)
    targets = torch.tensor([0, 4, 6, 8])  # no all-zero Grad-CAM map of small_resnet
    return images, targets


def q_explain(model, inputs, targets, *args, **kwargs):
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32).clamp(0, 1)
    t = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    return explain(METHOD, model, x, t).double().numpy()


def ssim_2d(a, b, batched=True, **kwargs):
    side = int(round(a.shape[1] ** 0.5))
    return [
        structural_similarity(
            x.reshape(side, side),
            y.reshape(side, side),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for x, y in zip(a, b, strict=True)
    ]


@pytest.fixture
def our_cascade(monkeypatch):
    """Quantus's layer generator replaced by cambench's cascade (seed 3)."""

    def generator(self, order="top_down", seed=42):
        yield from cascade(self.model, 3)

    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator", generator)
    monkeypatch.setattr(PyTorchModel, "random_layer_generator_length", property(lambda self: 6))


def test_other_classes_uniform_and_never_the_target():
    t = torch.randint(0, 5, (4000,), generator=torch.Generator().manual_seed(0))
    o = other_classes(t, 5, seed=1)
    assert (o != t).all() and o.min() >= 0 and o.max() <= 4
    counts = torch.bincount(o, minlength=5).double()
    assert (counts / counts.sum() - 0.2).abs().max() < 0.03
    assert torch.equal(other_classes(t, 5, 1), other_classes(t, 5, 1))


def test_random_logit_equals_quantus(small_resnet, data, monkeypatch):
    images, targets = data
    ours = random_logit(small_resnet, images, targets, METHOD, seed=2)
    other = other_classes(targets, 10, 2)
    k = (other - (other > targets).long()).numpy()  # position among the non-target classes
    monkeypatch.setattr(np.random, "randint", lambda low, high, size: k)
    maps = explain(METHOD, small_resnet, images, targets).numpy()
    kwargs = dict(num_classes=10, disable_warnings=True)
    metric = quantus.RandomLogit(similarity_func=ssim_2d, **kwargs)
    ref = metric(
        model=small_resnet,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps,
        explain_func=q_explain,
        device="cpu",
    )
    np.testing.assert_allclose(ours.numpy(), np.asarray(ref), rtol=1e-5)
    assert (ours < 1).all()
    # Quantus's default SSIM runs on the flattened maps as 1-D signals (7-pixel window)
    flat = quantus.RandomLogit(**kwargs)(
        model=small_resnet,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=maps,
        explain_func=q_explain,
        device="cpu",
    )
    others = explain(METHOD, small_resnet, images, other).double().numpy().reshape(4, -1)
    one_d = []
    for a, b in zip(maps.reshape(4, -1).astype(np.float64), others, strict=True):
        rng = float(np.abs(max(a.max(), b.max()) - min(a.min(), b.min())))
        one_d.append(structural_similarity(a, b, data_range=rng))
    np.testing.assert_allclose(np.asarray(flat), one_d, rtol=1e-5, atol=1e-6)  # float32 maps
    assert not np.allclose(np.asarray(flat), ours.numpy(), rtol=1e-3)


def quantus_smprt(model, images, targets, n_samples, noise, monkeypatch):
    # cambench's noise (sigma in float64) handed over as Quantus's standard draws,
    # which it scales by its float32 sigma
    x = images.numpy()
    q_sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    sigma = noise * (images.flatten(1).amax(1) - images.flatten(1).amin(1)).double().numpy()
    draws = [
        hash_normal(torch.arange(4), 3 * 32 * 32, 7, n).numpy() * (sigma / q_sigma)[:, None]
        for n in range(n_samples)
    ]
    calls = {"n": 0}

    def randn(*shape):
        out = draws[calls["n"] % (n_samples - 1)].reshape(shape)
        calls["n"] += 1
        return out

    monkeypatch.setattr(np.random, "randn", randn)
    monkeypatch.setattr(quantus, "explain", q_explain)  # sMPRT calls quantus.explain itself
    metric = quantus.SmoothMPRT(nr_samples=n_samples, noise_magnitude=noise, disable_warnings=True)
    return metric(
        model=model,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=None,
        explain_func=q_explain,
        device="cpu",
    )


def test_smooth_mprt_equals_quantus_with_its_clean_sample(
    small_resnet, data, our_cascade, monkeypatch
):
    images, targets = data
    ours = smooth_mprt(
        small_resnet, images, targets, METHOD, seed=3, n_samples=3, noise=0.1, noise_seed=7,
        include_clean=True,
    )  # fmt: skip
    ref = quantus_smprt(small_resnet, images, targets, 3, 0.1, monkeypatch)
    assert list(ref)[1:] == ours.blocks[1:]
    np.testing.assert_allclose(ref["original"], 1.0, rtol=1e-6)
    for k, name in enumerate(ours.blocks[1:], start=1):
        q = np.asarray(ref[name], dtype=np.float64)
        # a constant smoothed map (all zero): Quantus NaN (scipy), cambench 0 (it changed)
        undefined = np.isnan(q)
        assert (ours.correlation[k].numpy()[undefined] == 0).all()
        np.testing.assert_allclose(
            ours.correlation[k].numpy()[~undefined], q[~undefined], rtol=1e-5
        )


def test_smooth_mprt_paper_averages_noisy_samples_only(small_resnet, data):
    """The paper's mean over N noisy inputs (Quantus's last sample is the clean image):
    an independent computation with scipy's Spearman."""
    images, targets = data
    ours = smooth_mprt(
        small_resnet, images, targets, METHOD, seed=3, n_samples=2, noise=0.2, noise_seed=7
    )
    sigma = 0.2 * (images.flatten(1).amax(1) - images.flatten(1).amin(1)).double()

    def smooth(net):
        total = 0
        for n in range(2):
            eps = hash_normal(torch.arange(4), 3 * 32 * 32, 7, n) * sigma[:, None]
            x = (images.flatten(1).double() + eps).clamp(0, 1).float().view_as(images)
            total = total + explain(METHOD, net, x, targets).double()
        return (total / 2).flatten(1).numpy()

    ref = smooth(small_resnet)
    for k, (_, net) in enumerate(cascade(small_resnet, 3), start=1):
        other = smooth(net)
        # scipy's NaN for a constant map: cambench's 0 (the map changed) or 1 (equal)
        expected = [
            stats.spearmanr(a, b)[0] if a.std() > 0 and b.std() > 0 else float(np.array_equal(a, b))
            for a, b in zip(ref, other, strict=True)
        ]
        np.testing.assert_allclose(ours.correlation[k].numpy(), expected, rtol=1e-9)
    clean = smooth_mprt(
        small_resnet, images, targets, METHOD, seed=3, n_samples=2, noise=0.2, noise_seed=7,
        include_clean=True,
    )  # fmt: skip
    assert not torch.allclose(clean.correlation, ours.correlation)


def test_discrete_entropy_equals_numpy_histogram():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 16, 16, generator=gen, dtype=torch.float64)
    maps[1] = torch.round(maps[1] * 100) / 100  # values on the bin edges
    maps[2] = 0.3  # constant
    maps[3, :8] = 0.0
    for bins in (10, 100, 7):
        ours = discrete_entropy(maps, bins)
        for i in range(5):
            hist, _ = np.histogram(maps[i].numpy(), bins=bins)
            assert ours[i].item() == pytest.approx(stats.entropy(hist), abs=1e-12)
    assert discrete_entropy(maps[2:3], 10).item() == 0.0


def test_efficient_mprt_equals_quantus(small_resnet, data, our_cascade):
    images, targets = data
    ours = efficient_mprt(small_resnet, images, targets, METHOD, seed=3, n_bins=100)
    metric = quantus.EfficientMPRT(complexity_func_kwargs={"n_bins": 100}, disable_warnings=True)
    ref = metric(
        model=small_resnet,
        x_batch=images.numpy(),
        y_batch=targets.numpy(),
        a_batch=None,
        explain_func=q_explain,
        device="cpu",
    )
    np.testing.assert_allclose(ours.numpy(), np.asarray(ref), rtol=1e-5)
    assert np.isfinite(ours.numpy()).all()


def test_run_checks_writes_one_row_per_check_and_step(tmp_path, small_resnet):
    """The sanity job's optional checks: the CSV's values are the functions' means
    (computed here on the same images and classes)."""
    import pandas as pd

    from cambench.data.store import Split, read_split, write_split
    from cambench.jobs import sanity
    from cambench.models import save_checkpoint

    g = torch.Generator().manual_seed(0)
    split = Split(
        images=torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g),
        labels=torch.tensor([0, 4, 6, 8]),
        masks=torch.zeros(4, 32, 32, dtype=torch.bool),
        class_names=[f"c{i}" for i in range(10)],
    )
    write_split(tmp_path / "test.h5", split)
    save_checkpoint(
        tmp_path / "m.pt", small_resnet, {"width": 8, "blocks": [1, 1, 1, 1]}, 10, split.class_names
    )
    out = tmp_path / "checks.csv"
    checks = {"random_logit": {}, "smooth_mprt": {"n_samples": 2}, "efficient_mprt": {"n_bins": 20}}
    sanity.run_checks(
        tmp_path / "m.pt", tmp_path / "test.h5", out, "gc", {"method": METHOD}, None,
        n_images=3, target="label", batch_size=2, device=torch.device("cpu"),
        model_name="baseline", seed=3, checks=checks,
        statistics={"resamples": 20, "confidence": 0.9},
    )  # fmt: skip
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame["test"]).count("smooth_mprt") == 7
    assert set(frame["method"]) == {"gc"} and (frame["n_images"] == 3).all()
    with read_split(tmp_path / "test.h5") as s:
        images, targets = s.float_images(slice(0, 3)), s.labels[:3]
    rl = random_logit(small_resnet, images, targets, METHOD, seed=3)
    row = frame[frame["test"] == "random_logit"].iloc[0]
    assert row["value"] == pytest.approx(rl.mean().item(), rel=1e-5)
    em = efficient_mprt(small_resnet, images, targets, METHOD, seed=3, n_bins=20)
    row = frame[frame["test"] == "efficient_mprt"].iloc[0]
    assert row["value"] == pytest.approx(em.mean().item(), rel=1e-5)
    sm = smooth_mprt(small_resnet, images, targets, METHOD, seed=3, n_samples=2, noise_seed=3)
    rows = frame[frame["test"] == "smooth_mprt"]
    assert list(rows["randomized"]) == sm.blocks
    np.testing.assert_allclose(rows["value"], sm.mean().numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown sanity check"):
        sanity.run_checks(
            tmp_path / "m.pt", tmp_path / "test.h5", out, METHOD, {}, None, 3, "label", 2,
            torch.device("cpu"), "baseline", 0, {"mprt": {}}, {"resamples": 20, "confidence": 0.9},
        )  # fmt: skip


def test_sanity_options_in_the_config():
    """Off by default; settings over their defaults; refused without the cascade."""
    import yaml

    from cambench.specs import apply_experiment, check_schema, parse_config

    root = __import__("pathlib").Path(__file__).resolve().parents[1]

    def parse(sanity):
        config = yaml.safe_load((root / "config.yaml").read_text())
        from snakemake.utils import validate

        apply_experiment(config, {"sanity": sanity, "methods": {"gradcam": {}}})
        check_schema(config)
        validate(config, str(root / "workflow" / "schemas" / "config.schema.yaml"))
        return parse_config(config).sanity

    assert parse({"randomization": True}).checks is None
    on = parse({"randomization": True, "random_logit": True, "smooth_mprt": {"noise": 0.2}})
    assert on.checks == {"random_logit": {}, "smooth_mprt": {"n_samples": 10, "noise": 0.2}}
    with pytest.raises(ValueError, match=r"sanity\.efficient_mprt'.*randomization: true"):
        parse({"randomization": False, "efficient_mprt": {}})
    with pytest.raises(ValueError, match=r"sanity\.smooth_mprt\.n_sample|n_sample"):
        parse({"randomization": True, "smooth_mprt": {"n_sample": 3}})

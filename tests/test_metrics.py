"""Tests for cambench.metrics: AD/AI/AG, insertion/deletion, pointing game."""

from __future__ import annotations

import copy
from fractions import Fraction

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn

from cambench.metrics import (
    SUBSTRATES,
    ConfidenceChange,
    confidence_change,
    insertion_deletion,
    localization,
    make_substrate,
    step_pixel_counts,
)
from cambench.metrics.faithfulness import trapezoid_auc
from cambench.metrics.protocols import resolve_protocol

# ----------------------------------------------------------------------------- models


class ModeProbe(nn.Module):
    """Identity that records the train flag it was called with."""

    def __init__(self):
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


class MeanModel(nn.Module):
    """Two classes with softmax probabilities exactly (m, 1 - m), m = the image mean.

    The logits are (log m, log(1 - m)); m = 0 or 1 gives a -inf logit and a
    probability of exactly 0 or 1.
    """

    def __init__(self):
        super().__init__()
        self.probe = ModeProbe()

    def forward(self, x):
        m = self.probe(x).double().mean(dim=(1, 2, 3))
        return torch.stack([torch.log(m), torch.log1p(-m)], dim=1)


def small_cnn(classes: int = 5) -> nn.Module:
    """A random CNN whose eval and train outputs differ (BatchNorm, Dropout)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        ModeProbe(),
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )
    with torch.no_grad():
        model[-1].weight.mul_(20.0)  # spread the probabilities away from 1/classes
    return model.eval()


def constant_images(values, h=4, w=4):
    return torch.tensor(values, dtype=torch.float32)[:, None, None, None].expand(-1, 3, h, w)


def target_prob(model, x, targets):
    model.eval()
    with torch.no_grad():
        return model(x).float().softmax(1).gather(1, targets[:, None]).squeeze(1)


@pytest.fixture
def random_case():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 8, 6, generator=g)
    # few distinct values: many ties, so the tie-breaking rule matters
    maps = torch.randint(0, 4, (3, 8, 6), generator=g).float() / 3
    targets = torch.tensor([0, 3, 4])
    return small_cnn(), images, targets, maps


# ---------------------------------------------------------------- confidence change


def test_confidence_change_hand_computed():
    # image value, map, target -> p, o by hand (prob of class 0 = mean, class 1 = 1 - mean)
    images = constant_images([0.8, 0.2, 0.5, 1.0, 1.0, 0.6])
    maps = torch.empty(6, 4, 4)
    maps[0] = 0.5  # 0.8 * 0.5 = 0.4
    maps[1] = 0.0
    maps[1, :, :2] = 1.0  # half the pixels kept: mean 0.1
    maps[2] = 1.0  # unchanged
    maps[3] = 0.5
    maps[4] = 0.5
    maps[5] = 0.75  # 0.6 * 0.75 = 0.45
    targets = torch.tensor([0, 1, 0, 0, 1, 0])
    cc = confidence_change(MeanModel(), images, targets, maps)

    p = [0.8, 0.8, 0.5, 1.0, 0.0, 0.6]
    o = [0.4, 0.9, 0.5, 0.5, 0.5, 0.45]
    # fractions, not percent: (0.8-0.4)/0.8, ..., p=0 -> 0, 0.15/0.6
    drop = [0.5, 0.0, 0.0, 0.5, 0.0, 0.25]
    increase = [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    gain = [0.0, 0.5, 0.0, 0.0, 0.5, 0.0]  # (0.9-0.8)/(1-0.8); p=1 -> 0; 0.5/1
    assert torch.allclose(cc.p, torch.tensor(p), atol=1e-6)
    assert torch.allclose(cc.o, torch.tensor(o), atol=1e-6)
    assert torch.allclose(cc.drop(), torch.tensor(drop), atol=1e-6)
    assert torch.equal(cc.increase(), torch.tensor(increase))
    assert torch.allclose(cc.gain(), torch.tensor(gain), atol=1e-6)
    for v in (cc.drop(), cc.increase(), cc.gain()):
        assert v.shape == (6,) and torch.isfinite(v).all()


def test_confidence_change_edge_probabilities_are_finite():
    cc = ConfidenceChange(
        p=torch.tensor([0.0, 1.0, 1.0, 0.0]), o=torch.tensor([0.0, 1.0, 0.0, 1.0])
    )
    assert torch.equal(cc.drop(), torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert torch.equal(cc.increase(), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert torch.equal(cc.gain(), torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_confidence_change_fractions_are_the_old_percent_over_100():
    """Tables multiply by 100; that reproduces the former percent values up to two
    float32 ulps (the former formulas, written out here, multiplied before dividing:
    each side rounds twice, so 1-2 ulp differences are expected, not more)."""
    g = torch.Generator().manual_seed(3)
    p = torch.rand(10_000, generator=g)
    o = torch.rand(10_000, generator=g)
    cc = ConfidenceChange(p=p, o=o)
    old_drop = torch.where(p > 0, 100.0 * (p - o).clamp_min(0) / p, 0.0)
    old_gain = torch.where(p < 1, 100.0 * (o - p).clamp_min(0) / (1 - p), 0.0)
    old_increase = 100.0 * (p < o).float()
    for new, old in ((cc.drop(), old_drop), (cc.gain(), old_gain)):
        assert new.dtype == torch.float32 and (new >= 0).all() and (new <= 1).all()
        ulp = torch.nextafter(old, torch.tensor(float("inf"))) - old
        assert ((100 * new - old).abs() <= 2 * ulp).all()
    assert torch.equal(100 * cc.increase(), old_increase)


def test_confidence_change_matches_pytorch_grad_cam(random_case):
    cam_mult = pytest.importorskip("pytorch_grad_cam.metrics.cam_mult_image")
    model_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model, images, targets, maps = random_case
    cc = confidence_change(model, images, targets, maps)
    model.eval()
    reference = cam_mult.CamMultImageConfidenceChange()(
        images,
        maps.numpy(),
        [model_targets.ClassifierOutputSoftmaxTarget(int(t)) for t in targets],
        model,
    )
    np.testing.assert_allclose((cc.o - cc.p).numpy(), reference, atol=1e-6)


def test_confidence_change_batch_size_does_not_change_results(random_case):
    model, images, targets, maps = random_case
    full = confidence_change(model, images, targets, maps)
    for batch_size in (1, 2):
        chunked = confidence_change(model, images, targets, maps, batch_size=batch_size)
        assert torch.allclose(chunked.p, full.p, atol=1e-6)
        assert torch.allclose(chunked.o, full.o, atol=1e-6)


# ---------------------------------------------------------------- insertion / deletion


def test_step_pixel_counts_round_half_up():
    assert step_pixel_counts(4, 4).tolist() == [0, 1, 2, 3, 4]
    assert step_pixel_counts(4, 3).tolist() == [0, 1, 3, 4]  # 1.33, 2.67
    assert step_pixel_counts(2, 4).tolist() == [0, 1, 1, 2, 2]  # 0.5 -> 1, 1.5 -> 2
    assert step_pixel_counts(48, 8).tolist() == [6 * s for s in range(9)]


# 2x2 image, prob = mean of the image = (sum of retained pixel values) / 4 with a black
# substrate. Pixel values (row-major) 0.1 0.4 0.3 0.2, saliency 0.1 0.9 0.5 0.3: the order
# is pixels 1, 2, 3, 0 (values 0.4, 0.3, 0.2, 0.1).
TOY_IMAGE = torch.tensor([[0.1, 0.4], [0.3, 0.2]])
TOY_MAP = torch.tensor([[0.1, 0.9], [0.5, 0.3]])


@pytest.mark.parametrize(
    ("steps", "deletion", "insertion", "deletion_auc", "insertion_auc"),
    [
        # k = 0 1 2 3 4; AUC = 1/4 * (ends/2 + inner points)
        (4, [0.25, 0.15, 0.075, 0.025, 0.0], [0.0, 0.1, 0.175, 0.225, 0.25], 0.09375, 0.15625),
        # k = 0 1 3 4
        (3, [0.25, 0.15, 0.025, 0.0], [0.0, 0.1, 0.225, 0.25], 0.1, 0.15),
        # k = 0 2 4
        (2, [0.25, 0.075, 0.0], [0.0, 0.175, 0.25], 0.1, 0.15),
    ],
)
def test_insertion_deletion_hand_computed(steps, deletion, insertion, deletion_auc, insertion_auc):
    images = TOY_IMAGE.expand(1, 3, 2, 2)
    result = insertion_deletion(
        MeanModel(),
        images,
        torch.tensor([0]),
        TOY_MAP[None],
        steps=steps,
        insertion_substrate="black",
        deletion_substrate="black",
    )
    assert torch.allclose(result.deletion, torch.tensor([deletion]), atol=1e-6)
    assert torch.allclose(result.insertion, torch.tensor([insertion]), atol=1e-6)
    assert torch.allclose(result.deletion_auc, torch.tensor([deletion_auc]), atol=1e-6)
    assert torch.allclose(result.insertion_auc, torch.tensor([insertion_auc]), atol=1e-6)


def test_trapezoid_auc_by_hand_and_against_references():
    # T = 4, dx = 1/4: (0/2 + 1 + 1 + 1 + 0/2) / 4 = 0.75; a line from 1 to 0: 0.5
    curves = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0], [1.0, 0.75, 0.5, 0.25, 0.0]])
    assert torch.allclose(trapezoid_auc(curves), torch.tensor([0.75, 0.5]))
    integrate = pytest.importorskip("scipy.integrate")
    g = torch.Generator().manual_seed(0)
    for points in (2, 3, 17, 225):
        y = torch.rand(2, 3, points, generator=g)
        # bit-identical to torch.trapezoid, which the metrics used before
        assert torch.equal(trapezoid_auc(y), torch.trapezoid(y, dx=1 / (points - 1), dim=-1))
        # numpy in, numpy out (the figures), equal to scipy's trapezoid on [0, 1]
        y64 = y.double().numpy()
        area = trapezoid_auc(y64)
        assert isinstance(area, np.ndarray) and area.shape == (2, 3)
        np.testing.assert_allclose(
            area, integrate.trapezoid(y64, np.linspace(0, 1, points), axis=-1), rtol=1e-12
        )
    with pytest.raises(ValueError, match="two points"):
        trapezoid_auc(torch.ones(3, 1))


def test_insertion_deletion_ties_in_row_major_order():
    images = TOY_IMAGE.expand(1, 3, 2, 2)
    result = insertion_deletion(
        MeanModel(),
        images,
        torch.tensor([0]),
        torch.full((1, 2, 2), 0.5),
        steps=4,
        insertion_substrate="black",
    )
    # constant map: pixels removed in order 0, 1, 2, 3 (values 0.1, 0.4, 0.3, 0.2)
    expected = torch.tensor([[0.25, 0.225, 0.125, 0.05, 0.0]])
    assert torch.allclose(result.deletion, expected, atol=1e-6)


def reference_substrate(image, kind, sigma, kernel):
    if kind == "black":
        return torch.zeros_like(image)
    if kind == "mean":
        return image.mean(dim=(1, 2), keepdim=True).expand_as(image).clone()
    return TF.gaussian_blur(image[None], [kernel, kernel], [sigma, sigma])[0]


def reference_insertion_deletion(model, images, targets, maps, steps, ins, dele, sigma, kernel):
    """Plain loop over images and steps, one forward per perturbed image."""
    model.eval()
    b, _, h, w = images.shape
    n = h * w
    curves = {"insertion": torch.zeros(b, steps + 1), "deletion": torch.zeros(b, steps + 1)}
    for i in range(b):
        values = maps[i].flatten().tolist()
        order = sorted(range(n), key=lambda p: -values[p])  # Python's sort is stable
        ins_sub = reference_substrate(images[i], ins, sigma, kernel)
        del_sub = reference_substrate(images[i], dele, sigma, kernel)
        for s in range(steps + 1):
            k = int(Fraction(s * n, steps) + Fraction(1, 2))  # round half up
            chosen = torch.zeros(n, dtype=torch.bool)
            chosen[order[:k]] = True
            chosen = chosen.view(h, w)
            x_ins = ins_sub.clone()
            x_ins[:, chosen] = images[i][:, chosen]
            x_del = images[i].clone()
            x_del[:, chosen] = del_sub[:, chosen]
            with torch.no_grad():
                for name, x in (("insertion", x_ins), ("deletion", x_del)):
                    curves[name][i, s] = model(x[None]).softmax(1)[0, targets[i]]
    aucs = {
        name: sum((c[:, s] + c[:, s + 1]) / 2 for s in range(steps)) / steps
        for name, c in curves.items()
    }
    return curves, aucs


@pytest.mark.parametrize("steps", [5, 8, 48])  # 8 = H: one row per step; 48 = one pixel
@pytest.mark.parametrize(
    ("ins", "dele", "sigma", "kernel"),
    [("blur", "black", 5.0, 11), ("mean", "blur", 1.5, 5), ("black", "mean", 5.0, 11)],
)
def test_insertion_deletion_equals_loop_reference(random_case, steps, ins, dele, sigma, kernel):
    model, images, targets, maps = random_case
    result = insertion_deletion(
        model,
        images,
        targets,
        maps,
        steps=steps,
        insertion_substrate=ins,
        deletion_substrate=dele,
        blur_sigma=sigma,
        blur_kernel=kernel,
        batch_size=64,
    )
    curves, aucs = reference_insertion_deletion(
        model, images, targets, maps, steps, ins, dele, sigma, kernel
    )
    assert result.insertion.shape == result.deletion.shape == (3, steps + 1)
    assert torch.allclose(result.insertion, curves["insertion"], atol=1e-6)
    assert torch.allclose(result.deletion, curves["deletion"], atol=1e-6)
    assert torch.allclose(result.insertion_auc, aucs["insertion"], atol=1e-6)
    assert torch.allclose(result.deletion_auc, aucs["deletion"], atol=1e-6)


def test_insertion_deletion_endpoints(random_case):
    model, images, targets, maps = random_case
    result = insertion_deletion(model, images, targets, maps, steps=7, blur_kernel=5)
    full = target_prob(model, images, targets)
    blurred = TF.gaussian_blur(images, [5, 5], [5.0, 5.0])
    assert torch.allclose(result.insertion[:, 0], target_prob(model, blurred, targets), atol=1e-6)
    assert torch.allclose(result.insertion[:, -1], full, atol=1e-6)
    assert torch.allclose(result.deletion[:, 0], full, atol=1e-6)
    black = torch.zeros_like(images)
    assert torch.allclose(result.deletion[:, -1], target_prob(model, black, targets), atol=1e-6)
    for auc in (result.insertion_auc, result.deletion_auc):
        assert auc.shape == (3,) and (auc >= 0).all() and (auc <= 1).all()


def test_insertion_deletion_batch_size_does_not_change_results(random_case):
    model, images, targets, maps = random_case
    runs = [
        insertion_deletion(model, images, targets, maps, steps=6, batch_size=bs)
        for bs in (1, 5, 14, 10_000)  # 14 = 2 * (steps + 1): one image per batch
    ]
    for run in runs[1:]:
        for field in ("insertion", "deletion", "insertion_auc", "deletion_auc"):
            assert torch.allclose(getattr(run, field), getattr(runs[0], field), atol=1e-6)


def test_make_substrate():
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(make_substrate(images, "black"), torch.zeros_like(images))
    mean = make_substrate(images, "mean")
    assert torch.allclose(mean[:, :, 3, 5], images.mean(dim=(2, 3)))
    blur = make_substrate(images, "blur", blur_sigma=2.0, blur_kernel=7)
    assert torch.allclose(blur, TF.gaussian_blur(images, [7, 7], [2.0, 2.0]))
    assert set(SUBSTRATES) == {"black", "blur", "mean"}


# -------------------------------------------------------------------------- localization


def test_localization_hand_computed():
    peaked = torch.tensor([[0.0, 0.2, 1.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.3]])  # sum 2.0
    tied = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    zero = torch.zeros(3, 3)
    maps = torch.stack([peaked, peaked, zero, zero, tied])
    masks = torch.zeros(5, 3, 3, dtype=torch.bool)
    masks[0, 0, 1] = masks[0, 0, 2] = masks[0, 1, 1] = True  # peak inside: 0.2 + 1 + 0.5
    masks[1, 2, :] = True  # peak outside: 0.3 inside
    masks[2, 0, 0] = True  # zero map points at pixel (0, 0): a hit
    masks[3, 2, 2] = True  # ... and misses elsewhere
    masks[4, 1, 2] = True  # tie: the first maximum (0, 1) wins, a miss; half the mass inside
    result = localization(maps, masks)
    assert torch.equal(result.pointing, torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(result.energy, torch.tensor([0.85, 0.15, 0.0, 0.0, 0.5]), atol=1e-6)
    # IoU of {map > mean} with the mask. peaked: mean 2/9, region {0.5 at (1,1), 1.0 at
    # (0,2), 0.3 at (2,2)} (0.2 < 2/9 is out). Image 0: mask {(0,1), (0,2), (1,1)}:
    # intersection 2, union 4. Image 1: mask = row 2: intersection 1 (the 0.3), union 5.
    # Zero maps: empty region, IoU 0. tied: mean 2/9, region {(0,1), (1,2)}, mask
    # {(1,2)}: 1 / 2.
    assert torch.allclose(result.iou, torch.tensor([0.5, 0.2, 0.0, 0.0, 0.5]), atol=1e-6)
    for other in (masks.float(), masks.to(torch.uint8)):
        again = localization(maps, other)
        assert torch.equal(again.pointing, result.pointing)
        assert torch.equal(again.energy, result.energy)
        assert torch.equal(again.iou, result.iou)


def test_pointing_game_tolerance_by_hand():
    # 7 x 7 map peaked at (1, 1); the object is the single pixel (4, 5): Euclidean
    # distance sqrt(3^2 + 4^2) = 5 from the peak.
    maps = torch.zeros(1, 7, 7)
    maps[0, 1, 1] = 1.0
    masks = torch.zeros(1, 7, 7, dtype=torch.bool)
    masks[0, 4, 5] = True
    for tolerance, hit in [(0, 0.0), (4, 0.0), (4.99, 0.0), (5, 1.0), (6.5, 1.0)]:
        result = localization(maps, masks, tolerance=tolerance)
        assert result.pointing.item() == hit, tolerance
    # the nearest mask pixel counts: add (1, 3) at distance 2
    masks[0, 1, 3] = True
    assert localization(maps, masks, tolerance=2).pointing.item() == 1.0
    assert localization(maps, masks, tolerance=1.9).pointing.item() == 0.0
    # tolerance does not change the energy or the IoU
    a, b = localization(maps, masks), localization(maps, masks, tolerance=3)
    assert torch.equal(a.energy, b.energy) and torch.equal(a.iou, b.iou)


def test_localization_without_object_is_nan():
    maps = torch.rand(2, 4, 4)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[1, 2, 2] = True
    result = localization(maps, masks, tolerance=1)
    for scores in (result.pointing, result.energy, result.iou):
        assert torch.isnan(scores[0]) and torch.isfinite(scores[1])


# ------------------------------------------------------------------ modes and validation


def test_model_mode_left_as_found(random_case):
    model, images, targets, maps = random_case
    model.train()
    model[6].eval()  # mixed modes must be restored module by module
    before = [m.training for m in model.modules()]
    change = confidence_change(model, images, targets, maps)
    curves = insertion_deletion(model, images, targets, maps, steps=3, blur_kernel=5)
    assert [m.training for m in model.modules()] == before
    # every forward ran in eval mode: Dropout and BatchNorm in train mode would change
    # (and randomize) the probabilities, which equal a plain eval-mode forward's
    reference = copy.deepcopy(model).eval()
    assert torch.allclose(change.p, target_prob(reference, images, targets), atol=1e-5)
    masked = images * maps[:, None]
    assert torch.allclose(change.o, target_prob(reference, masked, targets), atol=1e-5)
    assert torch.allclose(curves.insertion[:, -1], change.p, atol=1e-5)


def test_results_do_not_require_grad(random_case):
    model, images, targets, maps = random_case
    images = images.clone().requires_grad_(True)
    assert not confidence_change(model, images, targets, maps).o.requires_grad
    assert not insertion_deletion(model, images, targets, maps, steps=2).insertion.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"maps": torch.rand(3, 8, 5)}, "maps must have shape"),
        ({"maps": torch.rand(2, 8, 6)}, "maps must have shape"),
        ({"maps": torch.rand(3, 1, 8, 6)}, "maps must have shape"),
        ({"images": torch.rand(3, 8, 6)}, "images must be"),
        ({"images": torch.ones(3, 3, 8, 6, dtype=torch.long)}, "floating point"),
        ({"targets": torch.zeros(3, 1, dtype=torch.long)}, "targets must have shape"),
        ({"targets": torch.zeros(3)}, "integer"),
        ({"targets": torch.tensor([0, 1, 5])}, r"targets must lie in \[0, 5\)"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_confidence_change_validation(random_case, kwargs, message):
    model, images, targets, maps = random_case
    args = {"images": images, "targets": targets, "maps": maps} | kwargs
    with pytest.raises(ValueError, match=message):
        confidence_change(model, **args)
    with pytest.raises(ValueError, match=message):
        insertion_deletion(model, **args, steps=2)


class NaNForImage(nn.Module):
    """Wraps a model; NaN logits for the images whose top-left red pixel is exactly 0.5."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        flagged = (x[:, 0, 0, 0] == 0.5)[:, None]
        return torch.where(flagged, torch.full_like(logits, float("nan")), logits)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_maps_are_refused_naming_the_images(random_case, bad):
    model, images, targets, maps = random_case
    maps = maps.clone()
    maps[1, 3, 2] = bad
    maps[2, 0, 0] = bad
    for metric in (confidence_change, insertion_deletion):
        with pytest.raises(
            ValueError, match=r"maps are non-finite .* images \[1, 2\] of the batch"
        ):
            metric(model, images, targets, maps)


def test_non_finite_probabilities_are_refused_naming_the_images(random_case):
    model, images, targets, maps = random_case
    images = images.clone()
    images[2, 0, 0, 0] = 0.5  # the wrapped model outputs NaN for image 2 only
    nan_model = NaNForImage(model)
    message = r"probabilities .* non-finite .* images \[2\] of the batch"
    with pytest.raises(ValueError, match=message):
        confidence_change(nan_model, images, targets, maps, batch_size=1)
    with pytest.raises(ValueError, match=message):
        insertion_deletion(nan_model, images, targets, maps, steps=2, insertion_substrate="black")
    # a NaN pixel in the image (finite map) makes its probabilities NaN: refused too
    images = torch.rand(3, 3, 8, 6)
    images[0, 1, 4, 4] = float("nan")
    with pytest.raises(ValueError, match=r"images \[0\] of the batch"):
        confidence_change(model, images, targets, maps)
    with pytest.raises(ValueError, match=r"images \[0\] of the batch"):
        insertion_deletion(model, images, targets, maps, steps=2, blur_kernel=5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"insertion_substrate": "noise"}, "valid substrates: black, blur, mean"),
        ({"deletion_substrate": "white"}, "valid substrates: black, blur, mean"),
        ({"steps": 0}, "steps"),
        ({"blur_kernel": 4}, "odd"),
        ({"blur_kernel": 13}, "too large"),
        ({"blur_sigma": 0.0}, "blur_sigma"),
    ],
)
def test_insertion_deletion_validation(random_case, kwargs, message):
    model, images, targets, maps = random_case
    with pytest.raises(ValueError, match=message):
        insertion_deletion(model, images, targets, maps, **kwargs)


def test_localization_validation():
    maps = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="maps must be"):
        localization(torch.rand(2, 1, 4, 4), torch.ones(2, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="masks must have"):
        localization(maps, torch.ones(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="0 and 1"):
        localization(maps, torch.full((2, 4, 4), 0.5))
    with pytest.raises(ValueError, match="tolerance"):
        localization(maps, maps > 0.5, tolerance=-1)


# ---------------------------------------------------------------------------- protocols


@pytest.mark.parametrize(
    ("config", "height", "target", "expected"),
    [
        ({"protocol": "opticam"}, 32, "predicted", (32, "blur", "black")),
        ({"protocol": "opticam"}, 224, "predicted", (224, "blur", "black")),
        ({"protocol": "castream"}, 224, "label", (28, "blur", "black")),
        ({"protocol": "castream"}, 32, "label", (4, "blur", "black")),
        ({}, 32, "label", (32, "blur", "black")),  # custom: one row per step by default
        (
            {"protocol": "custom", "steps": 8, "insertion_substrate": "mean"},
            32,
            "predicted",
            (8, "mean", "black"),
        ),
        # a preset's own values may be spelt out
        (
            {"protocol": "opticam", "steps": 32, "blur_sigma": 5.0},
            32,
            "predicted",
            (32, "blur", "black"),
        ),
    ],
)
def test_protocol_presets(config, height, target, expected):
    protocol = resolve_protocol(config, height, target)
    assert protocol.steps == expected[0]
    assert (protocol.insertion_substrate, protocol.deletion_substrate) == expected[1:]
    assert protocol.target == target
    assert protocol.name == config.get("protocol", "custom")
    # the resolved protocol resolves to itself (it is what the results record)
    assert resolve_protocol(protocol.to_dict(), height, target) == protocol
    assert protocol.name in protocol.describe(height)


@pytest.mark.parametrize(
    ("config", "target", "message"),
    [
        ({"protocol": "opticam"}, "label", "eval.target: predicted"),
        ({"protocol": "castream"}, "predicted", "eval.target: label"),
        ({"protocol": "opticam", "steps": 8}, "predicted", "metrics.steps"),
        ({"protocol": "castream", "deletion_substrate": "blur"}, "label", "deletion_substrate"),
        ({"protocol": "paper"}, "label", "metrics.protocol"),
        ({"protocol": "custom", "steps": 0}, "label", "metrics.steps"),
        ({"protocol": "custom", "insertion_substrate": "noise"}, "label", "substrate"),
        ({"protocol": "custom", "target": "predicted"}, "label", "explain"),
    ],
)
def test_protocol_errors_name_the_key(config, target, message):
    with pytest.raises(ValueError, match=message):
        resolve_protocol(config, 32, target)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_on_cuda_match_cpu(random_case):
    model, images, targets, maps = random_case
    cpu = insertion_deletion(model, images, targets, maps, steps=5, blur_kernel=5)
    gpu = insertion_deletion(
        model.cuda(), images.cuda(), targets.cuda(), maps.cuda(), steps=5, blur_kernel=5
    )
    assert gpu.insertion.device.type == "cuda"
    assert torch.allclose(gpu.insertion.cpu(), cpu.insertion, atol=1e-4)
    assert torch.allclose(gpu.deletion.cpu(), cpu.deletion, atol=1e-4)
    cc_cpu = confidence_change(model.cpu(), images, targets, maps)
    cc_gpu = confidence_change(model.cuda(), images.cuda(), targets.cuda(), maps.cuda())
    assert torch.allclose(cc_gpu.o.cpu(), cc_cpu.o, atol=1e-4)
    loc = localization(maps.cuda(), maps.cuda() > 0.5)
    assert loc.energy.device.type == "cuda"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("kernel", "sigma", "shape"),
    [(11, 5.0, (3, 3, 32, 32)), (5, 1.3, (2, 1, 9, 14)), (1, 0.5, (1, 3, 4, 4))],
)
def test_gaussian_blur_equals_torchvisions_bit_for_bit(dtype, kernel, sigma, shape):
    """cambench blurs without importing torchvision; the numbers must not change."""
    from cambench.metrics.faithfulness import gaussian_blur

    images = torch.rand(shape, generator=torch.Generator().manual_seed(kernel), dtype=dtype)
    ours = gaussian_blur(images, kernel, sigma)
    assert torch.equal(ours, TF.gaussian_blur(images, [kernel, kernel], [sigma, sigma]))

"""Tests for the embedded synthetic dataset ``shapes``."""

from __future__ import annotations

import math

import pytest
import torch

from cambench.data.shapes import CLASS_NAMES, _object_alpha, generate_shapes


@pytest.fixture(scope="module")
def sample():
    return generate_shapes(200, image_size=32, seed=7)


def _render(label: int, size: int, radius: float, angles: torch.Tensor) -> torch.Tensor:
    """Coverage of shape ``label`` centred in a ``size`` image, one image per angle."""
    b = angles.shape[0]
    centre = torch.full((b,), size / 2)
    return _object_alpha(
        torch.full((b,), label), centre, centre, torch.full((b,), float(radius)), angles, size
    )


def test_class_names():
    assert len(CLASS_NAMES) == 10
    assert len(set(CLASS_NAMES)) == 10
    assert CLASS_NAMES[:3] == ("circle", "square", "triangle")


@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes_and_dtypes(size):
    images, labels, masks = generate_shapes(12, image_size=size, seed=1)
    assert images.shape == (12, 3, size, size) and images.dtype == torch.uint8
    assert labels.shape == (12,) and labels.dtype == torch.int64
    assert masks.shape == (12, size, size) and masks.dtype == torch.bool
    assert images.device.type == labels.device.type == masks.device.type == "cpu"


def test_deterministic_for_a_seed(sample):
    again = generate_shapes(200, image_size=32, seed=7)
    for a, b in zip(sample, again, strict=True):
        assert torch.equal(a, b)


def test_independent_of_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = generate_shapes(64, image_size=48, seed=3)
        torch.set_num_threads(max(2, threads))
        many = generate_shapes(64, image_size=48, seed=3)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many, strict=True):
        assert torch.equal(a, b)


def test_different_seeds_differ(sample):
    images, labels, masks = generate_shapes(200, image_size=32, seed=8)
    assert not torch.equal(images, sample[0])
    assert not torch.equal(labels, sample[1])
    assert not torch.equal(masks, sample[2])


@pytest.mark.parametrize("n, num_classes", [(200, 10), (103, 10), (50, 3), (7, 2)])
def test_labels_balanced(n, num_classes):
    _, labels, _ = generate_shapes(n, image_size=16, num_classes=num_classes, seed=0)
    counts = torch.bincount(labels, minlength=num_classes)
    assert counts.numel() == num_classes  # only the first num_classes labels occur
    assert counts.sum() == n
    assert counts.max() - counts.min() <= 1


def test_labels_shuffled(sample):
    labels = sample[1]
    assert not torch.equal(labels, torch.arange(200) % 10)


def test_num_classes_subset_uses_first_shapes():
    images, labels, masks = generate_shapes(40, image_size=32, num_classes=4, seed=2)
    assert set(labels.tolist()) == {0, 1, 2, 3}
    assert images.shape[0] == masks.shape[0] == 40


def test_masks_plausible(sample):
    _, _, masks = sample
    fraction = masks.float().mean(dim=(1, 2))
    assert (fraction > 0.02).all()  # smallest shape at smallest scale is ~4 % of the image
    assert (fraction < 0.4).all()
    # the object lies inside the image: the outermost rows and columns are never covered
    border = masks[:, 0].any() | masks[:, -1].any() | masks[:, :, 0].any() | masks[:, :, -1].any()
    assert not border


def test_object_contrasts_with_background(sample):
    images, _, masks = sample
    x = images.float() / 255
    m = masks.unsqueeze(1).float()
    inside = (x * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3))
    outside = (x * (1 - m)).sum(dim=(2, 3)) / (1 - m).sum(dim=(2, 3))
    distance = (inside - outside).norm(dim=1)
    assert (distance > 0.25).all(), distance.min()


def _edge_score(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image: mean colour step between neighbouring pixels across the mask's edge,
    divided by the mean step between neighbours on the same side of it."""
    steps, across = [], []
    for dim in (1, 2):
        a, b = (
            x.narrow(dim + 1, 0, x.shape[dim + 1] - 1),
            x.narrow(dim + 1, 1, x.shape[dim + 1] - 1),
        )
        ma, mb = (
            masks.narrow(dim, 0, masks.shape[dim] - 1),
            masks.narrow(dim, 1, masks.shape[dim] - 1),
        )
        steps.append((a - b).norm(dim=1).flatten(1))
        across.append((ma != mb).flatten(1))
    step, edge = torch.cat(steps, 1), torch.cat(across, 1).float()
    on_edge = (step * edge).sum(1) / edge.sum(1)
    off_edge = (step * (1 - edge)).sum(1) / (1 - edge).sum(1)
    return on_edge / off_edge


def test_mask_edges_are_image_edges(sample):
    """The mask's outline lies on the object's outline in the image: colour steps across
    it are large, and larger than across the same mask shifted by a pixel or two."""
    images, _, masks = sample
    x = images.float() / 255
    score = _edge_score(x, masks)
    assert (score > 3.0).all(), score.min()
    for shift in (1, 2):
        for dims in (1, 2):
            for sign in (1, -1):
                moved = _edge_score(x, masks.roll(sign * shift, dims=dims))
                assert (score > moved).float().mean() >= 0.98


# analytic areas in units of the bounding radius squared (see the shape definitions)
ANALYTIC_AREA = {
    "circle": math.pi * 0.85**2,
    "square": 2.0,  # circumradius 1 -> side sqrt(2)
    "triangle": 3 * math.sqrt(3) / 4,  # equilateral, circumradius 1
    "star": 5 * 0.42 * math.sin(math.pi / 5),  # 10 triangles (centre, outer, inner vertex)
    "cross": 2 * (1.9 * 0.6) - 0.6**2,
    "ring": math.pi * (0.92**2 - 0.52**2),
}


@pytest.mark.parametrize("name", sorted(ANALYTIC_AREA))
def test_mask_area_matches_analytic_area(name):
    radius = 24.0
    angles = torch.tensor([0.0, 0.3, 1.1, 2.5])
    alpha = _render(CLASS_NAMES.index(name), 64, radius, angles)
    expected = ANALYTIC_AREA[name] * radius**2
    coverage = alpha.sum(dim=(1, 2))
    area = (alpha > 0.5).sum(dim=(1, 2)).float()
    assert torch.allclose(coverage, torch.full_like(coverage, expected), rtol=0.01)
    assert torch.allclose(area, torch.full_like(area, expected), rtol=0.03)


def test_every_shape_fits_its_bounding_disk():
    size, radius = 48, 16.0
    angles = torch.linspace(0, 2 * math.pi, 13)[:-1]
    c = torch.arange(size) + 0.5 - size / 2
    dist = torch.hypot(c.view(-1, 1), c.view(1, -1))
    for k in range(len(CLASS_NAMES)):
        mask = _render(k, size, radius, angles) > 0
        assert mask.any(dim=(1, 2)).all()
        assert dist[mask.any(dim=0)].max() <= radius + 1.0, CLASS_NAMES[k]


def test_shapes_are_distinct_under_rotation():
    """No shape, at any rotation, nearly coincides with another one (IoU of masks < 0.85)."""
    size, radius = 48, 18.0
    angles = torch.linspace(0, 2 * math.pi, 37)[:-1]
    upright = [_render(k, size, radius, torch.zeros(1))[0] > 0.5 for k in range(10)]
    for k in range(10):
        rotated = _render(k, size, radius, angles) > 0.5
        for j in range(10):
            if j == k:
                continue
            inter = (rotated & upright[j]).sum(dim=(1, 2)).float()
            union = (rotated | upright[j]).sum(dim=(1, 2)).float()
            assert (inter / union).max() < 0.85, (CLASS_NAMES[k], CLASS_NAMES[j])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n": 0}, "n"),
        ({"n": -3}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": 10, "image_size": 8}, "image_size"),
        ({"n": 10, "image_size": 32.0}, "image_size"),
        ({"n": 10, "num_classes": 1}, "num_classes"),
        ({"n": 10, "num_classes": 11}, "num_classes"),
        ({"n": 10, "seed": -1}, "seed"),
        ({"n": 10, "seed": "a"}, "seed"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        generate_shapes(**kwargs)
    bad = kwargs[name]
    assert repr(bad) in str(info.value)

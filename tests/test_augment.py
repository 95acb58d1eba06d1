"""Tests for the batched training augmentation (cambench.data.augment)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cambench.data.augment import (
    apply_augment,
    augment_batch,
    check_augment,
    padded_crop,
    resized_crop,
    resolve_augment,
    sample_augment,
)

RRC = {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]}
CONFIGS = [
    {},
    {"hflip": True},
    {"crop_padding": 4},
    {"crop_padding": 3, "padding_mode": "reflect", "hflip": True},
    {"random_resized_crop": RRC},
    {"random_resized_crop": RRC, "crop_padding": 2, "hflip": True},
]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand(16, 3, 20, 24, generator=_gen(11))


@pytest.mark.parametrize("config", CONFIGS)
def test_shape_dtype_and_determinism(batch, config):
    out = augment_batch(batch, config, _gen(3))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert torch.equal(out, augment_batch(batch, config, _gen(3)))
    if config:
        assert not torch.equal(out, augment_batch(batch, config, _gen(4)))
    # augment_batch = apply(sample), drawing from the same generator
    params = sample_augment(16, 20, 24, config, _gen(3))
    assert torch.equal(out, apply_augment(batch, params, config))


def test_empty_config_is_identity(batch):
    gen = _gen(0)
    state = gen.get_state()
    assert torch.equal(augment_batch(batch, {}, gen), batch)
    assert torch.equal(augment_batch(batch, None, gen), batch)
    assert torch.equal(gen.get_state(), state)  # nothing drawn


def test_hflip_flips_exactly_where_chosen(batch):
    params = sample_augment(16, 20, 24, {"hflip": True}, _gen(1))
    flip = params["flip"]
    assert 0 < flip.sum() < 16
    out = apply_augment(batch, params, {"hflip": True})
    assert torch.equal(out[flip], batch[flip].flip(-1))
    assert torch.equal(out[~flip], batch[~flip])


def test_flip_and_offset_distribution():
    params = sample_augment(4000, 8, 8, {"hflip": True, "crop_padding": 2}, _gen(2))
    assert abs(params["flip"].float().mean().item() - 0.5) < 0.03
    offsets = params["offsets"]
    assert offsets.min() == 0 and offsets.max() == 4
    counts = torch.bincount(offsets.flatten(), minlength=5).float() / offsets.numel()
    assert (counts - 0.2).abs().max() < 0.02


def _reference_padded_crop(images, offsets, pad, mode):
    out = []
    for image, (dy, dx) in zip(images, offsets.tolist(), strict=True):
        padded = F.pad(
            image[None], (pad, pad, pad, pad), mode="reflect" if mode == "reflect" else "constant"
        )
        out.append(padded[0, :, dy : dy + image.shape[1], dx : dx + image.shape[2]])
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("pad", [1, 4])
def test_padded_crop_equals_a_per_image_loop(batch, mode, pad):
    config = {"crop_padding": pad, "padding_mode": mode}
    params = sample_augment(16, 20, 24, config, _gen(pad))
    out = apply_augment(batch, params, config)
    assert torch.equal(out, _reference_padded_crop(batch, params["offsets"], pad, mode))
    # every corner offset too
    corners = torch.tensor([[0, 0], [0, 2 * pad], [2 * pad, 0], [2 * pad, 2 * pad]])
    images = batch[:4]
    assert torch.equal(
        padded_crop(images, corners, pad, mode),
        _reference_padded_crop(images, corners, pad, mode),
    )


def test_padded_crop_keeps_integer_dtypes():
    images = torch.randint(0, 256, (3, 3, 6, 5), dtype=torch.uint8, generator=_gen(0))
    offsets = torch.tensor([[0, 1], [2, 2], [4, 3]])
    out = padded_crop(images, offsets, 2, "zeros")
    assert out.dtype == torch.uint8
    assert torch.equal(out, _reference_padded_crop(images, offsets, 2, "zeros"))


def test_reflect_padding_too_large():
    with pytest.raises(ValueError, match="reflect"):
        padded_crop(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, dtype=torch.long), 4, "reflect")


def test_random_resized_crop_of_a_constant_image_is_constant():
    images = torch.full((32, 3, 16, 16), 0.7)
    out = augment_batch(images, {"random_resized_crop": RRC}, _gen(0))
    assert torch.allclose(out, images, atol=1e-6)


def test_random_resized_crop_boxes_follow_scale_and_ratio():
    config = {"random_resized_crop": {"scale": [0.2, 0.6], "ratio": [0.5, 2.0]}}
    boxes = sample_augment(2000, 64, 48, config, _gen(5))["boxes"]
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 64).all() and (left + w <= 48).all()
    area = (h * w).float() / (64 * 48)
    ratio = w.float() / h.float()
    assert area.min() > 0.18 and area.max() < 0.63  # rounding to whole pixels
    assert ratio.min() > 0.45 and ratio.max() < 2.2
    assert len(set(map(tuple, boxes.tolist()))) > 1000


def test_random_resized_crop_equals_a_per_image_loop(batch):
    params = sample_augment(16, 20, 24, {"random_resized_crop": RRC}, _gen(9))
    out = apply_augment(batch, params, {"random_resized_crop": RRC})
    for image, result, (top, left, h, w) in zip(batch, out, params["boxes"].tolist(), strict=True):
        crop = image[None, :, top : top + h, left : left + w]
        expected = F.interpolate(crop, size=(20, 24), mode="bilinear", align_corners=False)
        assert torch.allclose(result, expected[0], atol=1e-5)


def test_random_resized_crop_of_the_whole_image_is_identity(batch):
    boxes = torch.tensor([[0, 0, 20, 24]]).expand(16, 4)
    assert torch.allclose(resized_crop(batch, boxes), batch, atol=1e-6)
    # scale 1 and the image's own ratio: always the whole image
    config = {"random_resized_crop": {"scale": [1.0, 1.0], "ratio": [1.2, 1.2]}}
    assert torch.allclose(augment_batch(batch, config, _gen(0)), batch, atol=1e-6)


def test_random_resized_crop_fallback_is_a_centre_crop():
    # ratio 4..5 never fits in a 16 x 16 image at scale >= 0.9: torchvision's fallback,
    # the full width and height round(16 / 4) = 4, centred
    config = {"random_resized_crop": {"scale": [0.9, 1.0], "ratio": [4.0, 5.0]}}
    boxes = sample_augment(8, 16, 16, config, _gen(0))["boxes"]
    assert (boxes == torch.tensor([6, 0, 4, 16])).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("config", CONFIGS[1:])
def test_same_result_on_cuda(batch, config):
    cpu = augment_batch(batch, config, _gen(7))
    cuda = augment_batch(batch.cuda(), config, _gen(7))
    assert cuda.device.type == "cuda"
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-5)


def test_resolve_augment_defaults():
    assert resolve_augment({"name": "cifar10"}) == {
        "hflip": True,
        "crop_padding": 4,
        "padding_mode": "zeros",
        "random_resized_crop": None,
    }
    imagenet = resolve_augment({"name": "imagefolder"})
    assert imagenet["hflip"] and imagenet["crop_padding"] == 0
    assert imagenet["random_resized_crop"] == {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]}
    assert resolve_augment({"name": "shapes"})["hflip"] is True
    # given keys override the defaults; random_resized_crop: null turns it off
    off = resolve_augment({"name": "imagefolder", "augment": {"random_resized_crop": None}})
    assert off["random_resized_crop"] is None and off["hflip"]
    partial = resolve_augment(
        {"name": "imagefolder", "augment": {"random_resized_crop": {"scale": [0.5, 1]}}}
    )
    assert partial["random_resized_crop"] == {"scale": [0.5, 1.0], "ratio": [0.75, 4 / 3]}


@pytest.mark.parametrize(
    "config, key",
    [
        ({"flip": True}, "flip"),
        ({"hflip": 1}, "hflip"),
        ({"crop_padding": -1}, "crop_padding"),
        ({"crop_padding": 2.0}, "crop_padding"),
        ({"padding_mode": "edge"}, "padding_mode"),
        ({"random_resized_crop": {"scale": [0.5, 1.5]}}, "scale"),
        ({"random_resized_crop": {"ratio": [2, 1]}}, "ratio"),
        ({"random_resized_crop": {"size": 3}}, "random_resized_crop"),
    ],
)
def test_bad_config_names_the_key(config, key):
    with pytest.raises(ValueError, match=key):
        check_augment(config)

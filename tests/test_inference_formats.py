"""The inference copy's memory-format rule: channels-first convolutions on tiny, wide maps.

The rule only changes float rounding, so what is checked is that the copy still computes
the model (logits, Score-CAM maps against pytorch-grad-cam), that the rule fires where it
says and nowhere else, and that the default experiment's model is left untouched.
"""

from __future__ import annotations

import pytest
import torch
from conftest import perturb_batchnorm
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.models import resnet18

from cambench.models import build_model
from cambench.models.inference import (
    CHANNELS_FIRST_MAX_POSITIONS,
    ShapeRuledConv2d,
    _output_positions,
    inference_copy,
)
from cambench.models.normalization import Normalize
from cambench.saliency import explain, minmax_normalize


def _resnet18() -> nn.Module:
    """torchvision's ResNet-18 (10 classes) behind ImageNet normalization, as a user
    would pass it: at 32 px its layer3 maps are 2×2 and its layer4 maps 1×1."""
    torch.manual_seed(0)
    net = perturb_batchnorm(resnet18(num_classes=10))
    return nn.Sequential(Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), net).eval()


def _wrapped(copy: nn.Module) -> list[str]:
    return [name for name, m in copy.named_modules() if isinstance(m, ShapeRuledConv2d)]


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 8, 3, 1, 1),
        nn.Conv2d(4, 8, 3, 2, 1),
        nn.Conv2d(4, 8, 1, 2),
        nn.Conv2d(4, 8, (3, 5), (2, 1), (0, 2), dilation=(1, 2)),
        nn.Conv2d(4, 8, 3, padding="same"),
        nn.Conv2d(4, 8, 3, padding="valid"),
        nn.Conv2d(4, 8, 3, 2, 1, padding_mode="reflect"),
    ],
)
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 5), (7, 7), (8, 9)])
def test_output_positions_match_the_convolution(conv, size):
    if min(size) < 3 and conv.padding_mode == "reflect":
        pytest.skip("reflect padding needs a larger input")
    x = torch.rand(1, 4, *size)
    try:
        out = conv(x)
    except RuntimeError:
        pytest.skip("kernel larger than the padded input")
    assert _output_positions(conv, x.shape[-2:]) == out.shape[-2] * out.shape[-1]


def test_default_model_has_no_ruled_convolution():
    """Its widest convolutions have 128 channels: its copy is the plain channels-last one."""
    torch.manual_seed(0)
    model = build_model({"arch": "resnet_small", "width": 16, "blocks": [1, 1, 1, 1]}, 10)
    assert _wrapped(inference_copy(model.eval(), "cpu")) == []


def test_rule_fires_on_tiny_wide_maps_only():
    model = _resnet18()
    fast = inference_copy(model, "cpu")
    # 3×3 convolutions with 256+ channels (layer3, layer4); not 1×1 shortcuts, not the stem
    assert _wrapped(fast) == [
        f"model.1.layer{s}.{b}.conv{c}" for s in (3, 4) for b in (0, 1) for c in (1, 2)
    ]
    formats: dict[str, bool] = {}
    for name, m in fast.named_modules():
        if isinstance(m, ShapeRuledConv2d):
            m.register_forward_hook(
                lambda mod, i, out, n=name: formats.__setitem__(n, out.is_contiguous())
            )
    with torch.no_grad():
        fast(torch.rand(2, 3, 32, 32))  # layer3 2×2, layer4 1×1: channels-first
        assert all(formats.values()) and len(formats) == 8
        fast(torch.rand(2, 3, 128, 128))  # layer3 8×8, layer4 4×4: channels-last
        assert not any(formats.values())
    assert CHANNELS_FIRST_MAX_POSITIONS < 16  # 4×4 maps stay channels-last


@pytest.mark.parametrize("size", [32, 64, 128])
def test_copy_with_the_rule_computes_the_models_logits(size):
    model = _resnet18()
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    fast = inference_copy(model, "cpu")
    with torch.no_grad():
        expected, got = model(x), fast(x)
    torch.testing.assert_close(got, expected, atol=1e-4 * expected.abs().max().item(), rtol=0)


def test_gradients_pass_the_ruled_convolutions():
    fast = inference_copy(_resnet18(), "cpu")
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    fast(x)[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in fast.parameters())


@pytest.mark.parametrize("batch_size", [16, 256])
def test_scorecam_through_ruled_copy_equals_pytorch_grad_cam(batch_size):
    """Score-CAM on a layer with 2×2 maps, masked forwards through the ruled copy, against
    pytorch-grad-cam's forwards through the model itself."""
    model = _resnet18()
    gen = torch.Generator().manual_seed(2)
    images, targets = torch.rand(2, 3, 32, 32, generator=gen), torch.tensor([3, 7])
    layer = model[1].layer3[1]
    ours = explain("scorecam", model, images, targets, layer=layer, batch_size=batch_size)
    peer = ScoreCAM(model=model, target_layers=[layer])
    peer.batch_size = 64
    with peer:
        reference = peer(
            input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]
        )
    reference = minmax_normalize(torch.from_numpy(reference).float())
    assert (ours - reference).abs().max() <= 1e-4

"""explain()'s input checks and the shared non-finite checks, with their exact messages."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cambench.saliency import METHODS, explain, register
from cambench.saliency.core import activations, all_finite
from cambench.specs import ATTENTION_METHODS

# castream_attention needs a CA-Stream model, the attention methods a ViT (checked in
# test_attention.py); their checks are their owners'.
GENERIC = sorted(set(METHODS) - {"castream_attention", *ATTENTION_METHODS})
# Methods that run the model (fakecam, random and mask_oracle look at neither the model
# nor the class).
FORWARD = sorted(set(GENERIC) - {"fakecam", "random", "mask_oracle"})
FAST = {"opticam": {"iterations": 2}, "scorecam": {"batch_size": 512}}


def raises(message: str):
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize("method", FORWARD)
def test_target_past_the_last_class(method, small_resnet, images, targets):
    targets = targets.clone()
    targets[2] = 10  # the model has 10 classes: 0..9
    with raises("target 10 is outside [0, 10): the model has 10 classes"):
        explain(method, small_resnet, images, targets, **FAST.get(method, {}))


@pytest.mark.parametrize("method", GENERIC)
def test_negative_target(method, small_resnet, images, targets):
    """``cam`` used to explain the last class for -1 (Python indexing)."""
    targets = targets.clone()
    targets[4] = -1
    with raises("target -1 is negative: targets are class indices in [0, num_classes)"):
        explain(method, small_resnet, images, targets)


def test_images_in_0_255(small_resnet, images, targets):
    scaled = (images * 255).round()
    scaled[0, 0, 0, 0], scaled[1, 2, 3, 4] = 0, 255
    with raises("images must be in [0, 1], got values in [0, 255] (divide 0-255 images by 255)"):
        explain("gradcam", small_resnet, scaled, targets)


def test_images_below_0(small_resnet, images, targets):
    shifted = images - 0.5
    shifted[0, 0, 0, 0], shifted[0, 0, 0, 1] = -0.5, 0.5
    with raises("images must be in [0, 1], got values in [-0.5, 0.5] (divide 0-255 images by 255)"):
        explain("random", small_resnet, shifted, targets)


def test_nan_images(small_resnet, images, targets):
    images = images.clone()
    images[3, 1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"^images must be in \[0, 1\], got values in \[nan"):
        explain("gradcam", small_resnet, images, targets)


def test_empty_batch(small_resnet):
    empty = torch.zeros(0, 3, 32, 32)
    with raises("images is an empty batch (0 images); explain needs at least one"):
        explain("gradcam", small_resnet, empty, torch.zeros(0, dtype=torch.int64))


class NaNLogits(nn.Module):
    """A classifier whose logits are all NaN (its forward multiplies them by NaN)."""

    default_target_layer = "net.layer4"

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * float("nan")


@pytest.mark.parametrize("method", FORWARD)
def test_nan_logits(method, small_resnet, images, targets):
    """Before the check, min-max normalization turned NaN scores into all-zero maps."""
    with raises("non-finite logits (NaN or inf) from the model: no saliency map"):
        explain(method, NaNLogits(small_resnet), images, targets, **FAST.get(method, {}))


class _NaNBackward(torch.autograd.Function):
    """Identity forward, NaN gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad * float("nan")


class NaNGradient(NaNLogits):
    """Finite logits, NaN gradients below its ``fc``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.avgpool(self.net.features(x)).flatten(1)
        return self.net.fc(_NaNBackward.apply(features))


@pytest.mark.parametrize(
    "method", ["gradcam", "gradcampp", "xgradcam", "layercam", "gradient", "guided_backprop"]
)
def test_nan_gradients(method, small_resnet, images, targets):
    with raises("non-finite gradients (NaN or inf) of the target logits: no saliency map"):
        explain(method, NaNGradient(small_resnet), images, targets)


@pytest.mark.parametrize("method", ["cam", "gradcam", "gradient"])
def test_the_checks_add_no_forward_pass(method, small_resnet, images, targets):
    calls = []
    small_resnet.register_forward_hook(lambda *a: calls.append(1))
    explain(method, small_resnet, images, targets)
    assert len(calls) == 1


# ---------------------------------------------------------------------------------------
# Methods given as functions, and registered plug-ins


def layer4_output(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    kept = []
    handle = model.layer4.register_forward_hook(lambda m, i, out: kept.append(out.detach().clone()))
    with torch.no_grad():
        model(images)
    handle.remove()
    return kept[0]


def test_a_function_is_a_method(small_resnet, images, targets):
    """``n(up(ReLU(S)))`` of the function's scores, by hand."""

    def channel_power(model, images, targets, layer, power):
        acts, _ = activations(model, images, targets, layer)
        return acts.pow(power).mean(1) - 0.01

    maps = explain(channel_power, small_resnet, images, targets, power=2)
    scores = (layer4_output(small_resnet, images).pow(2).mean(1) - 0.01).clamp_min(0)
    up = F.interpolate(scores[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    low = up.amin((1, 2), keepdim=True)
    expected = (up - low) / (up.amax((1, 2), keepdim=True) - low)
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-6)


def test_a_functions_scores_go_through_relu(small_resnet, images, targets):
    def negative(model, images, targets, layer):
        acts, _ = activations(model, images, targets, layer)
        return -acts.mean(1) - 1  # < 0 everywhere: ReLU leaves a constant, n makes it 0

    assert torch.equal(explain(negative, small_resnet, images, targets), torch.zeros(6, 32, 32))


def test_a_function_gets_the_resolved_layer(small_resnet, images, targets):
    seen = []

    def record(model, images, targets, layer):
        seen.append(layer)
        return images.mean(1)

    explain(record, small_resnet, images, targets, layer="layer3")
    explain(record, small_resnet, images, targets)
    assert seen == [small_resnet.layer3, small_resnet.layer4]


def channels_kept(model, images, targets, layer):
    return images  # (B, 3, H, W): not a map


def one_map(model, images, targets, layer):
    return images[:1, 0]


def nan_map(model, images, targets, layer):
    return images[:, 0] * float("nan")


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (channels_kept, "returned (6, 3, 32, 32); expected a (6, h, w) tensor"),
        (one_map, "returned (1, 32, 32); expected a (6, h, w) tensor"),
        (nan_map, "returned non-finite values (NaN or inf), shape (6, 32, 32)"),
    ],
)
def test_a_functions_wrong_output(fn, message, small_resnet, images, targets):
    with raises(f"saliency method {fn.__qualname__!r} {message}"):
        explain(fn, small_resnet, images, targets)


def test_a_method_that_is_neither_name_nor_function(small_resnet, images, targets):
    with raises("method must be a name or a function, got int"):
        explain(3, small_resnet, images, targets)


@pytest.fixture
def plugin():
    """A registered plug-in method returning a wrong shape; unregistered afterwards."""

    @register("test_plugin", defaults={"rows": 1})
    def test_plugin(model, images, targets, layer, rows):
        return images[:rows, 0]

    yield "test_plugin"
    del METHODS["test_plugin"]


def test_a_registered_methods_wrong_output(plugin, small_resnet, images, targets):
    with raises(
        "saliency method 'test_plugin' returned (1, 32, 32); expected a (6, h, w) tensor "
        f"(plug-in {__file__})"
    ):
        explain(plugin, small_resnet, images, targets)
    assert explain(plugin, small_resnet, images, targets, rows=6).shape == (6, 32, 32)


def test_a_name_cannot_be_registered_twice(plugin):
    with raises(
        f"saliency method 'test_plugin' registered twice ('test_plugin' (plug-in {__file__}) exists)"
    ):
        register("test_plugin")(one_map)
    with raises("saliency method 'gradcam' registered twice ('gradcam' exists)"):
        register("gradcam")(one_map)
    assert METHODS["gradcam"].fn is not one_map


@pytest.mark.parametrize(
    ("values", "finite"),
    [
        ([1.0, -2.0], True),
        ([3e38, 3e38], True),  # the sum overflows, the values do not
        ([1.0, float("nan")], False),
        ([float("inf"), 0.0], False),
        ([float("inf"), float("-inf")], False),
    ],
)
def test_all_finite(values, finite):
    assert all_finite(torch.tensor(values, dtype=torch.float32)) is finite

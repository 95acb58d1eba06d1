"""Gradient saliency and the switchable guided ReLU against captum and hand references."""

from __future__ import annotations

import pytest
import torch
from captum.attr import GuidedBackprop, Saliency
from conftest import perturb_batchnorm
from torch import nn
from torchvision.models import mobilenet_v2

from cambench.models.guided import (
    ReLUGate,
    check_guidable,
    guided_backward,
    input_gradient,
    standard_and_guided_gradients,
)
from cambench.models.normalization import Normalize
from cambench.saliency import METHODS, explain, minmax_normalize


def test_registered_without_a_layer():
    for name in ("gradient", "guided_backprop", "castream_attention"):
        assert not METHODS[name].uses_layer


def test_guided_gradient_equals_captum_on_a_relu_network(small_resnet, images, targets):
    ours = input_gradient(small_resnet, images, targets, guided=True)
    reference = GuidedBackprop(small_resnet).attribute(images.clone(), target=targets)
    assert (ours - reference).abs().max() <= 1e-5
    assert ours.abs().max() > 1e-3  # not trivially zero
    # and it is not the standard gradient
    standard = input_gradient(small_resnet, images, targets)
    assert (standard - ours).abs().max() > 1e-3


def test_standard_gradient_equals_captum_saliency(small_resnet, images, targets):
    ours = input_gradient(small_resnet, images, targets)
    reference = Saliency(small_resnet).attribute(images.clone(), target=targets, abs=False)
    assert (ours - reference).abs().max() <= 1e-5


@pytest.mark.parametrize("method", ["gradient", "guided_backprop"])
def test_maps_are_normalized_max_abs_gradients(method, small_resnet, images, targets):
    grads = input_gradient(small_resnet, images, targets, guided=method == "guided_backprop")
    expected = minmax_normalize(grads.abs().amax(1))
    maps = explain(method, small_resnet, images, targets)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)


class _TinyReLU6(nn.Module):
    """x → Linear → ReLU6 → Linear, with pre-activations on both sides of 0 and 6."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.flat = nn.Flatten()
        self.lin1 = nn.Linear(12, 32)
        self.act = nn.ReLU6(inplace=inplace)
        self.lin2 = nn.Linear(32, 4)
        with torch.no_grad():
            self.lin1.weight.copy_(torch.randn(32, 12, generator=gen) * 2.0)
            self.lin1.bias.copy_(torch.randn(32, generator=gen) * 3.0)
            self.lin2.weight.copy_(torch.randn(4, 32, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(self.flat(x))))


@pytest.mark.parametrize("inplace", [False, True])
def test_guided_relu6_equals_hand_reference(inplace):
    model = _TinyReLU6(inplace)
    x = torch.rand(5, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 1, 2, 3, 0])
    a = model.lin1(x.flatten(1))  # pre-activations (5, 32)
    assert (a < 0).any() and (a > 6).any() and ((a > 0) & (a < 6)).any()
    g_out = model.lin2.weight[targets]  # ∂y_t/∂ReLU6(a), (5, 32)
    assert (g_out < 0).any() and (g_out > 0).any()
    inside = (a > 0) & (a < 6)
    guided_ref = ((g_out * inside * (g_out > 0)) @ model.lin1.weight).view_as(x)
    standard_ref = ((g_out * inside) @ model.lin1.weight).view_as(x)
    with torch.no_grad():
        guided = input_gradient(model, x, targets, guided=True)
        standard = input_gradient(model, x, targets)
    torch.testing.assert_close(guided, guided_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(standard, standard_ref, atol=1e-5, rtol=0)
    assert (guided_ref - standard_ref).abs().max() > 1e-2


class _ReusedReLU(nn.Module):
    """One ReLU module called twice (as in torchvision's ResNet blocks)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.lin1, self.lin2, self.lin3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        for lin in (self.lin1, self.lin2, self.lin3):
            with torch.no_grad():
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin3(self.relu(self.lin2(self.relu(self.lin1(x)))))


def test_guided_rule_applies_at_every_call_of_a_reused_relu():
    model = _ReusedReLU()
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    a1 = model.lin1(x)
    a2 = model.lin2(a1.relu())
    g = model.lin3.weight[targets]
    g = g * (a2 > 0) * (g > 0)
    g = g @ model.lin2.weight
    g = g * (a1 > 0) * (g > 0)
    reference = g @ model.lin1.weight
    torch.testing.assert_close(
        input_gradient(model, x, targets, guided=True), reference.detach(), atol=1e-5, rtol=0
    )


def _mobilenet(inplace: bool) -> nn.Module:
    torch.manual_seed(0)
    net = perturb_batchnorm(mobilenet_v2(num_classes=10, width_mult=0.35))
    for m in net.modules():
        if isinstance(m, nn.ReLU6):
            m.inplace = inplace
    return nn.Sequential(Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), net).eval()


def test_mobilenet_inplace_relu6_is_guided_like_out_of_place(images, targets):
    images = images[:3]
    targets = targets[:3]
    inplace = input_gradient(_mobilenet(True), images, targets, guided=True)
    out_of_place = input_gradient(_mobilenet(False), images, targets, guided=True)
    scale = out_of_place.abs().max()
    assert scale > 0
    assert (inplace - out_of_place).abs().max() <= 1e-5 * scale
    standard = input_gradient(_mobilenet(True), images, targets)
    assert (standard - inplace).abs().max() > 1e-2 * scale


def test_one_forward_graph_gives_both_gradients(small_resnet, images, targets):
    logits, standard, guided = standard_and_guided_gradients(small_resnet, images, targets)
    torch.testing.assert_close(standard, input_gradient(small_resnet, images, targets))
    torch.testing.assert_close(guided, input_gradient(small_resnet, images, targets, guided=True))
    torch.testing.assert_close(logits, small_resnet(images))
    logits, standard, guided = standard_and_guided_gradients(
        small_resnet, images, targets, create_graph=True
    )
    assert standard.requires_grad and not guided.requires_grad and logits.requires_grad


def test_gates_are_removed_and_flag_is_read_at_backward_time(small_resnet, images, targets):
    x = images.clone().requires_grad_(True)
    with ReLUGate(small_resnet) as gate:
        score = small_resnet(x)[:, 0].sum()
    assert all(not m._forward_hooks for m in small_resnet.modules())
    gate.guided = True  # after the forward pass: the backward still sees it
    (late,) = torch.autograd.grad(score, x)
    with guided_backward(small_resnet):
        score = small_resnet(x)[:, 0].sum()
    (direct,) = torch.autograd.grad(score, x)
    torch.testing.assert_close(late, direct)


class _GELUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.GELU()
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.act(self.conv(x))).mean((2, 3)))


def test_guided_backprop_refuses_other_activations(images, targets):
    model = _GELUNet().eval()
    with pytest.raises(ValueError, match=r"nn.ReLU or nn.ReLU6.*act \(GELU\)"):
        explain("guided_backprop", model, images, targets)
    # the plain gradient is defined for any network
    assert explain("gradient", model, images, targets).shape == (6, 32, 32)


def test_guided_backprop_refuses_networks_without_relu_modules():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ValueError, match="no nn.ReLU/nn.ReLU6 module"):
        check_guidable(model)


def test_castream_attention_needs_a_castream_model(small_resnet, images, targets):
    with pytest.raises(ValueError, match="castream_attention needs a CA-Stream model"):
        explain("castream_attention", small_resnet, images, targets)

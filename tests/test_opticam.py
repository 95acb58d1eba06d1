"""Opti-CAM's options: ReLU on the activations and the released early-stopping rule."""

from __future__ import annotations

import pytest
import torch
from conftest import perturb_batchnorm
from torch import nn

from cambench.models import build_model
from cambench.saliency import explain
from cambench.saliency.opticam import masked_objective, normalized_mask, opticam

PRE_RELU = "layer4.0.bn2"  # a batch norm's output: has negative values


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return perturb_batchnorm(build_model({"width": 4, "blocks": [1, 1, 1, 1]}, 10)).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return images, torch.tensor([0, 3, 5])


def _raw(model, images, targets, layer, **params):
    """Opti-CAM's raw map S(u) at the layer's resolution."""
    settings = {"iterations": 0, "lr": 0.1, "objective": "logit", "normalization": "minmax"}
    settings.update(activation_relu=True, early_stop=False)
    settings.update(params)
    return opticam(model, images, targets, model.get_submodule(layer), **settings)


def _layer_output(model, images, layer):
    out = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: out.update(a=o))
    with torch.no_grad():
        model(images)
    handle.remove()
    return out["a"]


def test_uniform_start_combines_relu_or_raw_activations(model, batch):
    """With u = 0 the weights are 1/K: S = mean_k ReLU(A^k), or mean_k A^k raw."""
    images, targets = batch
    acts = _layer_output(model, images, PRE_RELU)
    assert (acts < 0).any()
    relu_map = _raw(model, images, targets, PRE_RELU)
    raw_map = _raw(model, images, targets, PRE_RELU, activation_relu=False)
    torch.testing.assert_close(relu_map, acts.clamp(min=0).mean(1))
    torch.testing.assert_close(raw_map, acts.mean(1))


def test_relu_changes_nothing_on_a_post_relu_layer(model, batch):
    images, targets = batch
    assert (_layer_output(model, images, "layer4") >= 0).all()
    on = explain("opticam", model, images, targets, iterations=10, activation_relu=True)
    off = explain("opticam", model, images, targets, iterations=10, activation_relu=False)
    assert torch.equal(on, off)
    # on a layer with negative activations the two differ
    on = explain("opticam", model, images, targets, layer=PRE_RELU, iterations=10)
    off = explain(
        "opticam", model, images, targets, layer=PRE_RELU, iterations=10, activation_relu=False
    )
    assert not torch.allclose(on, off)


def _batch_loss(model, images, targets, raw):
    mask = normalized_mask(raw, tuple(images.shape[-2:]))
    with torch.no_grad():
        return float(-masked_objective(model, images, targets, mask).sum())


def test_early_stop_returns_the_map_where_the_batch_loss_first_rose(model, batch):
    """The released rule, rebuilt from runs without early stopping: the map before the
    update of step s is the result of s plain steps; checks every iterations // 10."""
    images, targets = batch
    iterations, lr = 20, 5.0  # a large step makes the loss rise at some check
    check_every = iterations // 10
    expected, stop = None, None
    previous = float("inf")
    for step in range(0, iterations, check_every):
        raw = _raw(model, images, targets, "layer4", iterations=step, lr=lr)
        loss = _batch_loss(model, images, targets, raw)
        if loss > previous:
            expected, stop = raw, step
            break
        previous = loss
    assert stop is not None, "the loss never rose: the test would not test the stop"
    got = _raw(model, images, targets, "layer4", iterations=iterations, lr=lr, early_stop=True)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    full = _raw(model, images, targets, "layer4", iterations=iterations, lr=lr)
    assert not torch.equal(got, full)


def test_early_stop_with_fewer_than_ten_iterations_checks_every_step(model, batch):
    images, targets = batch
    maps = explain("opticam", model, images, targets, iterations=3, early_stop=True)
    assert maps.shape == (3, 32, 32)


@pytest.mark.parametrize("name", ["activation_relu", "early_stop"])
def test_flags_must_be_booleans(model, batch, name):
    with pytest.raises(ValueError, match=f"{name} must be true or false"):
        explain("opticam", model, *batch, iterations=1, **{name: "yes"})

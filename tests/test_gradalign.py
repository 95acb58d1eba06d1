"""Gradient-aligned training: the loss, double backpropagation, and a short run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cambench.data.store import Split
from cambench.models import build_model
from cambench.models.guided import input_gradient
from cambench.training import (
    GradAlignObjective,
    TrainConfig,
    gradient_cosine,
    gradient_distance,
    train_model,
)


def test_distances_by_hand():
    g = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    t = torch.tensor([[0.0, 1.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    assert gradient_distance(g, t, "cosine").item() == pytest.approx(0.5)  # (1 + 0) / 2
    assert gradient_distance(g, t, "mse").item() == pytest.approx((2 + 2) / 8)
    assert gradient_distance(g, t, "l1").item() == pytest.approx((2 + 2) / 8)
    with pytest.raises(ValueError, match="unknown distance 'l3'"):
        gradient_distance(g, t, "l3")
    with pytest.raises(ValueError, match="unknown distance"):
        GradAlignObjective(distance="l3")


def test_objective_is_ce_plus_lambda_times_alignment(small_resnet, images, targets):
    objective = GradAlignObjective(lam=0.5)
    loss, logits, parts = objective(small_resnet, images, targets)
    torch.testing.assert_close(parts["ce"], F.cross_entropy(small_resnet(images), targets))
    g = input_gradient(small_resnet, images, targets)
    guided = input_gradient(small_resnet, images, targets, guided=True)
    cos = F.cosine_similarity(g.flatten(1), guided.flatten(1), dim=1)
    torch.testing.assert_close(parts["reg"], (1 - cos).mean())
    torch.testing.assert_close(loss, parts["ce"] + 0.5 * parts["reg"])
    assert gradient_cosine(small_resnet, images, targets) == pytest.approx(cos.mean().item())


def test_alignment_loss_reaches_the_weights(small_resnet, images, targets):
    """Double backpropagation: L_R alone has a gradient with respect to the weights."""
    _, _, parts = GradAlignObjective()(small_resnet, images, targets)
    parts["reg"].backward()
    conv = small_resnet.layer1[0].conv1.weight
    assert conv.grad is not None and conv.grad.abs().max() > 0


def _stripes(n: int, seed: int) -> Split:
    """Two classes: a bright horizontal or vertical bar on noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 3, 12, 12, generator=gen) * 80
    pos = torch.randint(2, 10, (n,), generator=gen)
    for i in range(n):
        if labels[i] == 0:
            images[i, :, pos[i], :] = 255
        else:
            images[i, :, :, pos[i]] = 255
    return Split(
        images.to(torch.uint8), labels, torch.zeros(n, 12, 12, dtype=torch.bool), ["h", "v"]
    )


def test_alignment_loss_falls_during_training():
    torch.manual_seed(0)
    model = build_model({"width": 4, "blocks": [1, 1, 1, 1]}, 2)
    train, test = _stripes(384, 0), _stripes(32, 1)
    config = TrainConfig(epochs=3, batch_size=32, lr=0.1, seed=0, hflip=False)
    history = train_model(
        model,
        train,
        test,
        config,
        torch.device("cpu"),
        progress=False,
        objective=GradAlignObjective(lam=1.0),
    )
    regs = [h["train_reg"] for h in history]
    assert regs[-1] < 0.8 * regs[0], regs
    assert history[-1]["grad_cosine"] > history[0]["grad_cosine"]  # on held-out images
    assert {"train_loss", "train_ce", "train_reg", "train_acc", "test_acc", "grad_cosine"} <= set(
        history[0]
    )
    for h in history:
        assert h["train_loss"] == pytest.approx(h["train_ce"] + h["train_reg"], rel=1e-5)


def test_gradalign_refuses_a_gelu_network():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 3, 12, 12))
    config = TrainConfig(epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="GELU"):
        train_model(
            model,
            _stripes(8, 0),
            _stripes(8, 1),
            config,
            torch.device("cpu"),
            progress=False,
            objective=GradAlignObjective(),
        )

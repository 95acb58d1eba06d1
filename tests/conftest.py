"""Shared fixtures: small models and images sized for 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cambench.models import build_model

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


def perturb_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give batch norms non-trivial statistics so an untrained model is not degenerate."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model


@pytest.fixture
def small_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_batchnorm(build_model({"width": 8, "blocks": [1, 1, 1, 1]}, 10)).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def targets() -> torch.Tensor:
    return torch.tensor([0, 3, 5, 7, 9, 1])

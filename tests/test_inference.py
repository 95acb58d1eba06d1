"""The inference copy behind the metrics' and Score-CAM's forward passes."""

from __future__ import annotations

import pytest
import torch
from conftest import perturb_batchnorm, small_mobilenet
from torch import nn

from cambench.models import build_model
from cambench.models.castream import CAStream
from cambench.models.inference import InferenceCopy, has_forward_hooks, inference_copy


def _small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return perturb_batchnorm(build_model({"width": 8, "blocks": [1, 1, 1, 1]}, 10)).eval()


def _model(name: str) -> nn.Module:
    if name == "castream":
        return CAStream(_small_resnet()).eval()  # freezes the base it wraps
    if name == "castream_mobilenet":
        torch.manual_seed(0)
        base = build_model({"kind": "baseline", "arch": "mobilenet_v2"}, 10)
        return CAStream(perturb_batchnorm(base).eval()).eval()
    return _small_resnet() if name == "small_resnet" else small_mobilenet()


@pytest.mark.parametrize("name", ["small_resnet", "castream", "castream_mobilenet", "mobilenet_v2"])
def test_copy_computes_the_models_logits(name):
    model = _model(name)
    x = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    fast = inference_copy(model, "cpu")
    with torch.no_grad():
        expected, got = model(x), fast(x)
    torch.testing.assert_close(got, expected, atol=1e-4 * expected.abs().max().item(), rtol=0)
    # batch norm is folded into the convolutions (nothing left to normalize with)
    inner = fast.model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in inner.modules())
    assert isinstance(fast, InferenceCopy) and fast.channels_last  # CPU: channels-last
    conv = next(m for m in inner.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_copy_is_not_copied_again():
    fast = inference_copy(_small_resnet(), "cpu")
    assert inference_copy(fast, "cpu") is fast


def test_the_model_is_left_as_found():
    model = _small_resnet().train()
    model.layer1.eval()
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_copy(model, "cpu")
    assert [m.training for m in model.modules()] == modes
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not any(m.training for m in fast.modules())
    assert not any(p.requires_grad for p in fast.parameters())
    # later changes of the model's weights do not reach the copy, and vice versa
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    x = torch.rand(2, 3, 32, 32)
    assert not torch.allclose(fast(x), model.eval()(x))


def test_gradients_reach_the_input_not_the_weights():
    fast = inference_copy(_small_resnet(), "cpu")
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    fast(x)[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in fast.parameters())


def test_models_with_hooks_are_copied_without_folding():
    model = _small_resnet()
    calls = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    assert has_forward_hooks(model)
    fast = inference_copy(model, "cpu")
    handle.remove()
    assert not has_forward_hooks(model)
    with torch.no_grad():
        fast(torch.rand(3, 3, 32, 32))
    assert calls == [3]  # the hook came along and saw the copy's forward
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())


def test_untraceable_models_are_copied_unfolded():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.bn(self.conv(x))
            return y.mean((2, 3)) if y.sum() > 0 else -y.mean((2, 3))  # fx cannot trace

    model = perturb_batchnorm(DataDependent()).eval()
    fast = inference_copy(model, "cpu")
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), atol=1e-6, rtol=0)
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())

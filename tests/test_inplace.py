"""Target layers whose output the model modifies in place afterwards (issue 15).

torchvision's ResNet blocks add the shortcut to ``bn2`` (BasicBlock) or ``bn3``
(Bottleneck) in place and then apply an in-place ReLU. A method that keeps a view of
such a layer's output would see the block's output instead. References here are
independent of cambench's capture: a clone taken in a hook of the test's own, and every
method's maps on a deep copy of the model in which no operation is in place.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import perturb_batchnorm
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from cambench.saliency import explain, gradient_cams, opticam, score_cams

SIZE = 64


class OutOfPlaceBasicBlock(BasicBlock):
    """torchvision's BasicBlock with ``out + identity`` instead of ``out += identity``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class OutOfPlaceBottleneck(Bottleneck):
    """torchvision's Bottleneck with ``out + identity`` instead of ``out += identity``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def out_of_place(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in which no module modifies a tensor in place."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
        if type(m) is BasicBlock:
            m.__class__ = OutOfPlaceBasicBlock
        elif type(m) is Bottleneck:
            m.__class__ = OutOfPlaceBottleneck
    return twin


def basic_resnet() -> nn.Module:
    torch.manual_seed(0)
    return perturb_batchnorm(resnet18(num_classes=5)).eval()


def bottleneck_resnet() -> nn.Module:
    torch.manual_seed(0)
    return perturb_batchnorm(ResNet(Bottleneck, [1, 1, 1, 1], num_classes=5)).eval()


# (model, layer): each layer's output gets ``+= identity`` and an in-place ReLU later.
CASES = {
    "basic-bn2": (basic_resnet, "layer4.1.bn2"),
    "bottleneck-bn3": (bottleneck_resnet, "layer4.0.bn3"),
}
# Score-CAM and Ablation-CAM's whole-model fallback run one whole forward per channel:
# on the Bottleneck model they use the first stage's bn3 (256 channels) rather than the
# last one's (2048).
PER_CHANNEL_LAYER = {"basic-bn2": "layer4.1.bn2", "bottleneck-bn3": "layer1.0.bn3"}


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, SIZE, SIZE, generator=gen), torch.tensor([1, 4])


def module(model: nn.Module, name: str) -> nn.Module:
    return dict(model.named_modules())[name]


def own_capture(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    """The layer's output as the forward produced it: a clone taken in the test's own hook."""
    kept = []
    handle = module(model, layer).register_forward_hook(
        lambda m, i, out: kept.append(out.detach().clone())
    )
    with torch.no_grad():
        model(images)
    handle.remove()
    (activation,) = kept
    return activation


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_layers_output_is_modified_in_place(case, batch):
    """Without a copy, a kept view of the output would not be the output (so the
    tests below can fail)."""
    build, layer = CASES[case]
    model = build()
    views = []
    handle = module(model, layer).register_forward_hook(
        lambda m, i, out: views.append(out.detach())
    )
    with torch.no_grad():
        model(batch[0])
    handle.remove()
    assert views[0].min() >= 0  # the block's in-place ReLU reached it
    assert own_capture(model, layer, batch[0]).min() < 0


def spy(monkeypatch, namespace, name: str) -> list:
    """Record what ``namespace.name`` returns to the method that calls it."""
    returned = []
    original = getattr(namespace, name)

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        returned.append(result)
        return result

    monkeypatch.setattr(namespace, name, recording)
    return returned


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    ("method", "namespace", "function", "params"),
    [
        ("gradcam", gradient_cams, "activations_and_gradients", {}),
        ("scorecam", score_cams, "activations", {}),
        ("ablationcam", score_cams, "activations", {}),
        ("opticam", opticam, "activations", {"iterations": 2}),
    ],
)
def test_methods_use_the_layers_true_output(
    case, method, namespace, function, params, batch, monkeypatch
):
    build, layer = CASES[case]
    if method == "scorecam":
        layer = PER_CHANNEL_LAYER[case]
    model = build()
    images, targets = batch
    expected = own_capture(model, layer, images)
    returned = spy(monkeypatch, namespace, function)
    explain(method, model, images, targets, layer=layer, **params)
    assert len(returned) == 1
    assert torch.equal(returned[0][0], expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_are_those_of_the_layers_output(case, batch, monkeypatch):
    """``G = ∂y_c/∂A`` against autograd's own ``retain_grad`` on the out-of-place copy."""
    build, layer = CASES[case]
    model = build()
    images, targets = batch
    twin = out_of_place(model)
    kept = []
    module(twin, layer).register_forward_hook(
        lambda m, i, out: kept.append(out) or out.retain_grad()
    )
    x = images.clone().requires_grad_(True)
    twin(x).gather(1, targets.view(-1, 1)).sum().backward()
    returned = spy(monkeypatch, gradient_cams, "activations_and_gradients")
    explain("gradcam", model, images, targets, layer=layer)
    acts, grads, _ = returned[0]
    torch.testing.assert_close(acts, kept[0].detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(grads, kept[0].grad, rtol=1e-5, atol=1e-7)


# `cam` is left out: on these layers (changed in place before pooling) it is refused
# (next test).
METHODS = {
    "gradcam": {},
    "gradcampp": {},
    "xgradcam": {},
    "layercam": {},
    "scorecam": {},
    "ablationcam": {},
    "opticam": {"iterations": 3},
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_maps_equal_those_of_the_out_of_place_model(case, method, batch):
    build, layer = CASES[case]
    if method == "scorecam":
        layer = PER_CHANNEL_LAYER[case]
    model = build()
    images, targets = batch
    if method == "scorecam":  # one image: Score-CAM runs one forward per channel
        images, targets = images[:1], targets[:1]
    expected = explain(method, out_of_place(model), images, targets, layer=layer, **METHODS[method])
    maps = explain(method, model, images, targets, layer=layer, **METHODS[method])
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cam_refuses_a_layer_whose_output_is_changed_before_pooling(case, batch):
    """The block adds the shortcut and applies ReLU to ``bn2``/``bn3``'s output before
    the head, so the logits are not ``GAP(A) @ W.T + b`` and CAM is undefined there."""
    build, layer = CASES[case]
    images, targets = batch
    with pytest.raises(ValueError, match="not GAP"):
        explain("cam", build(), images, targets, layer=layer)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", ["gradient", "guided_backprop"])
def test_input_gradient_maps_equal_those_of_the_out_of_place_model(case, method, batch):
    model = CASES[case][0]()
    images, targets = batch
    expected = explain(method, out_of_place(model), images, targets)
    torch.testing.assert_close(explain(method, model, images, targets), expected, rtol=0, atol=1e-6)


class AliasingNet(nn.Module):
    """Target layer ``mark`` returns its input itself, which the model then doubles in
    place: the gradient CAMs' leaf must not share that memory."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.mark = nn.Identity()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        a = self.mark(h)
        h.mul_(2)
        return self.fc((a * h).mean((2, 3)))


def test_gradient_cams_keep_an_output_that_aliases_the_layers_input(batch, monkeypatch):
    torch.manual_seed(0)
    model = AliasingNet().eval()
    images, targets = batch[0], torch.tensor([0, 2])
    expected = own_capture(model, "mark", images)
    returned = spy(monkeypatch, gradient_cams, "activations_and_gradients")
    explain("gradcam", model, images, targets, layer="mark")
    assert torch.equal(returned[0][0], expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ablation_by_whole_forwards_equals_the_out_of_place_model(case, batch):
    """The fallback that substitutes the layer's output in whole forwards (models that
    cannot be split) hands the model a fresh tensor per chunk."""
    layer = PER_CHANNEL_LAYER[case]
    model = CASES[case][0]()
    images, targets = batch[0][:1], batch[1][:1]
    twin = out_of_place(model)
    _, y, ablated = score_cams.ablation_scores(
        model, images, targets, module(model, layer), batch_size=64, split=False
    )
    _, y_ref, ablated_ref = score_cams.ablation_scores(
        twin, images, targets, module(twin, layer), batch_size=64, split=False
    )
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ablated, ablated_ref, rtol=0, atol=1e-5)

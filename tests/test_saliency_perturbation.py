"""Score-CAM, Ablation-CAM and Opti-CAM: references, chunking, the model split, options."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import small_mobilenet
from pytorch_grad_cam import AblationCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from cambench.models.normalization import Normalize
from cambench.models.tail import ModelTail, trace_tail
from cambench.saliency import explain, finalize_maps, minmax_normalize, score_cams
from cambench.saliency.core import target_scores

PEER = {"scorecam": ScoreCAM, "ablationcam": AblationCAM}


def _targets(targets):
    return [ClassifierOutputTarget(int(t)) for t in targets]


def _mobilenet_case(method, images):
    model = small_mobilenet()
    # Score-CAM needs one forward per channel: a 56-channel block (whose output has
    # negative values) keeps it fast; Ablation-CAM takes the 1280-channel last stage.
    layer = "1.features.16" if method == "scorecam" else "1.features"
    module = model.get_submodule(layer)
    return model, layer, module, F.interpolate(images, size=96, mode="bilinear")


@pytest.mark.parametrize("method", sorted(PEER))
@pytest.mark.parametrize("arch", ["small_resnet", "mobilenet_v2"])
def test_equals_pytorch_grad_cam(method, arch, small_resnet, images, targets):
    if arch == "small_resnet":
        model, layer, module = small_resnet, "layer4", small_resnet.layer4
    else:
        model, layer, module, images = _mobilenet_case(method, images)
    ours = explain(method, model, images, targets, layer=layer, batch_size=64)
    if method == "scorecam":
        peer = ScoreCAM(model=model, target_layers=[module])
        peer.batch_size = 64
    else:
        peer = AblationCAM(model=model, target_layers=[module], batch_size=64)
    with peer:
        reference = peer(input_tensor=images, targets=_targets(targets))
    reference = minmax_normalize(torch.from_numpy(reference).float())
    assert (ours - reference).abs().max() <= 1e-4


@pytest.mark.parametrize("method", sorted(PEER))
def test_chunk_size_does_not_change_results(method, small_resnet, images, targets):
    maps = [explain(method, small_resnet, images, targets, batch_size=n) for n in (1, 7, 256)]
    torch.testing.assert_close(maps[0], maps[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(maps[1], maps[2], atol=1e-5, rtol=0)


def _record_batch_sizes(model):
    """Pre-hooks on every leaf module recording the batch size of its input."""
    sizes: list[int] = []
    handles = [
        m.register_forward_pre_hook(lambda mod, args: sizes.append(args[0].shape[0]))
        for m in model.modules()
        if not list(m.children())
    ]
    return sizes, handles


@pytest.mark.parametrize("method", sorted(PEER))
def test_no_forward_sees_more_than_batch_size_images(method, small_resnet, images, targets):
    # Forward hooks keep Ablation-CAM on whole-model forwards (the general path).
    sizes, handles = _record_batch_sizes(small_resnet)
    assert trace_tail(small_resnet, small_resnet.layer4) is None
    explain(method, small_resnet, images, targets, batch_size=4)
    for h in handles:
        h.remove()
    assert sizes and max(sizes) <= 4


class _Recorder(nn.Module):
    def __init__(self, inner, sizes):
        super().__init__()
        self.inner, self.sizes = inner, sizes

    def forward(self, x, *context):
        self.sizes.append(len(x))
        return self.inner(x, *context)


def test_no_tail_call_sees_more_than_batch_size_rows(small_resnet, images, targets, monkeypatch):
    sizes: list[int] = []
    real_trace, real_activations = score_cams.trace_tail, score_cams.activations

    def trace(model, layer):
        split = real_trace(model, layer)
        head = None if split.head is None else _Recorder(split.head, sizes)
        return ModelTail(_Recorder(split.tail, sizes), head)

    def clean(model, images, layer, targets):
        sizes.append(len(images))
        return real_activations(model, images, layer, targets)

    monkeypatch.setattr(score_cams, "trace_tail", trace)
    monkeypatch.setattr(score_cams, "activations", clean)
    for layer in ("layer4", "layer3.0.conv2"):  # without and with a head
        sizes.clear()
        explain("ablationcam", small_resnet, images, targets, layer=layer, batch_size=4)
        assert len(sizes) > 20 and max(sizes) <= 4


def test_batch_size_must_be_positive(small_resnet, images, targets):
    for method in PEER:
        with pytest.raises(ValueError, match="batch_size"):
            explain(method, small_resnet, images, targets, batch_size=0)


def test_scorecam_skips_constant_channels(small_resnet, images, targets):
    """Constant channels give a black image: one forward for all of them."""
    acts = {}
    handle = small_resnet.layer4.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    with torch.no_grad():
        small_resnet(images)
    handle.remove()
    flat = acts["a"].flatten(2)
    constant = int((flat.amax(2) == flat.amin(2)).sum())
    assert constant > 0  # dead channels in this fixture
    seen = []
    handle = small_resnet.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    explain("scorecam", small_resnet, images, targets, batch_size=1000)
    handle.remove()
    assert sum(seen) == len(images) + flat.shape[0] * flat.shape[1] - constant + 1


# --- Ablation-CAM: the tail of the model after the target layer ------------------------


def _general_path(monkeypatch):
    monkeypatch.setattr(score_cams, "trace_tail", lambda model, layer: None)


def _ablationcam_both_ways(model, images, targets, layer, monkeypatch):
    fast = explain("ablationcam", model, images, targets, layer=layer, batch_size=16)
    with monkeypatch.context() as m:
        _general_path(m)
        slow = explain("ablationcam", model, images, targets, layer=layer, batch_size=16)
    return fast, slow


def test_ablation_tail_of_resnet_is_the_classifier(small_resnet, images, targets, monkeypatch):
    split = trace_tail(small_resnet, small_resnet.layer4)
    assert split is not None and split.head is None
    called = {n for n, _ in split.tail.named_modules()}
    assert "fc" in called and not any(n.startswith(("layer", "stem")) for n in called)
    fast, slow = _ablationcam_both_ways(small_resnet, images, targets, "layer4", monkeypatch)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_ablation_tail_with_a_skip_connection_across_the_layer(
    small_resnet, images, targets, monkeypatch
):
    """Inside a residual block the tail needs the block's shortcut from the head."""
    layer = "layer3.0.conv2"
    split = trace_tail(small_resnet, small_resnet.get_submodule(layer))
    assert split is not None and split.head is not None
    fast, slow = _ablationcam_both_ways(small_resnet, images, targets, layer, monkeypatch)
    assert fast.flatten(1).amax(1).gt(0).all()
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


class _Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize([0.5] * 3, [0.25] * 3)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        a = self.features(self.normalize(x))
        if a.sum() > 0:
            a = a * 2
        return self.fc(a.mean((2, 3)))


class _BatchSizeAcrossLayer(_Untraceable):
    """An int from before the layer used after it: the tail cannot be expanded."""

    def forward(self, x):
        b = x.shape[0]
        a = self.features(self.normalize(x))
        return self.fc(a.mean((2, 3)).view(b, -1))


class _HookedHead(_Untraceable):
    """A hook on a container after the layer, invisible to torch.fx."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(self.fc)
        self.head.register_forward_hook(lambda m, i, o: o * 3 - 1)

    def forward(self, x):
        return self.head(self.features(self.normalize(x)).mean((2, 3)))


@pytest.mark.parametrize("cls", [_Untraceable, _BatchSizeAcrossLayer, _HookedHead])
def test_ablation_falls_back_to_whole_forwards(cls, images, targets, monkeypatch):
    torch.manual_seed(0)
    model = cls().eval()
    split = trace_tail(model, model.features)
    if cls is _BatchSizeAcrossLayer:
        assert split is not None and score_cams._context_values(split, images, 4) is None
    else:
        assert split is None
    fast, slow = _ablationcam_both_ways(model, images, targets, "features", monkeypatch)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    with AblationCAM(model=model, target_layers=[model.features], batch_size=16) as peer:
        reference = peer(input_tensor=images, targets=_targets(targets))
    reference = minmax_normalize(torch.from_numpy(reference).float())
    assert (fast - reference).abs().max() <= 1e-4


class _RemembersFeatures(_Untraceable):
    """A forward that stores an attribute (as CA-Stream keeps its attention)."""

    def forward(self, x):
        a = self.features(self.normalize(x))
        self.remembered = a.detach()
        return self.fc(a.mean((2, 3)))


def test_tracing_leaves_no_symbolic_attributes_behind(images, targets, monkeypatch):
    torch.manual_seed(0)
    model = _RemembersFeatures().eval()
    assert trace_tail(model, model.features) is not None
    assert not hasattr(model, "remembered")
    explain("ablationcam", model, images, targets, layer="features")
    # The last real forward was the clean one (the split sets no attributes).
    assert isinstance(model.remembered, torch.Tensor)  # not a Proxy
    assert model.remembered.shape[0] == len(images)
    fast, slow = _ablationcam_both_ways(model, images, targets, "features", monkeypatch)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_ablation_checks_the_split_before_using_it(small_resnet, images, targets, monkeypatch):
    """A split that does not reproduce the model's logits is not used."""
    real_trace = score_cams.trace_tail

    def wrong(model, layer):
        split = real_trace(model, layer)
        return ModelTail(_Scaled(split.tail), split.head)

    with monkeypatch.context() as m:
        _general_path(m)
        slow = explain("ablationcam", small_resnet, images, targets, batch_size=16)
    monkeypatch.setattr(score_cams, "trace_tail", wrong)
    checked = explain("ablationcam", small_resnet, images, targets, batch_size=16)
    torch.testing.assert_close(checked, slow, atol=1e-5, rtol=0)


class _Scaled(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        return self.inner(*args) * 1.01


def test_ablation_weights_by_hand(small_resnet, images, targets):
    """With GAP → Linear after the layer, y_c − y_c^(k) = w_ck · mean(A^k)."""
    acts, y, ablated = score_cams.ablation_scores(
        small_resnet, images, targets, small_resnet.layer4, batch_size=32
    )
    w = small_resnet.fc.weight[targets]
    torch.testing.assert_close(y.view(-1, 1) - ablated, w * acts.mean((2, 3)), atol=1e-5, rtol=0)
    with torch.no_grad():
        expected = target_scores(small_resnet(images), targets)
    torch.testing.assert_close(y, expected)


# --- Opti-CAM ---------------------------------------------------------------------------


def _layer4_acts(model, images):
    acts = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    with torch.no_grad():
        model(images)
    handle.remove()
    return acts["a"]


def _masked_logits(model, images, targets, maps):
    with torch.no_grad():
        return target_scores(model(images * maps.unsqueeze(1)), targets)


def test_opticam_increases_every_masked_logit(small_resnet, images, targets):
    start = finalize_maps(_layer4_acts(small_resnet, images).mean(1), (32, 32))  # u = 0
    end = explain("opticam", small_resnet, images, targets, iterations=50)
    before = _masked_logits(small_resnet, images, targets, start)
    after = _masked_logits(small_resnet, images, targets, end)
    assert torch.all(after >= before)
    assert torch.all(after > before + 1e-3)


def test_opticam_is_independent_of_the_batch(small_resnet, images, targets):
    together = explain("opticam", small_resnet, images, targets, iterations=20)
    alone = torch.cat(
        [
            explain("opticam", small_resnet, images[i : i + 1], targets[i : i + 1], iterations=20)
            for i in range(len(images))
        ]
    )
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def _plain_opticam(model, image, target, iterations, lr=0.1):
    """Opti-CAM for one image, written out as in the paper."""
    model = copy.deepcopy(model).eval().requires_grad_(False)
    a = _layer4_acts(model, image[None])[0]
    u = torch.zeros(a.shape[0], dtype=a.dtype, requires_grad=True)
    optimizer = torch.optim.Adam([u], lr=lr)
    for _ in range(iterations):
        s = (torch.softmax(u, 0)[:, None, None] * a).sum(0)
        up = F.interpolate(s[None, None], size=image.shape[-2:], mode="bilinear")[0, 0]
        mask = (up - up.min()) / (up.max() - up.min())
        loss = -model((image * mask)[None])[0, target]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    s = (torch.softmax(u.detach(), 0)[:, None, None] * a).sum(0)
    return finalize_maps(s[None], tuple(image.shape[-2:]))[0]


def test_opticam_equals_a_plain_per_image_loop(small_resnet, images, targets):
    """In float64: in float32, Adam (which divides each gradient component by its own
    size) turns the rounding noise of the zero gradients of dead channels into steps
    of size lr, which cambench avoids by zeroing them (see opticam)."""
    model, images = small_resnet.double(), images.double()
    ours = explain("opticam", model, images, targets, iterations=20)
    plain = torch.stack(
        [
            _plain_opticam(model, x, int(t), iterations=20)
            for x, t in zip(images, targets, strict=True)
        ]
    )
    torch.testing.assert_close(ours, plain, atol=1e-5, rtol=0)


def test_opticam_zero_iterations_is_the_uniform_average(small_resnet, images, targets):
    maps = explain("opticam", small_resnet, images, targets, iterations=0)
    expected = finalize_maps(_layer4_acts(small_resnet, images).mean(1), (32, 32))
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)


def test_opticam_options(small_resnet, images, targets):
    base = explain("opticam", small_resnet, images, targets, iterations=20)
    prob = explain("opticam", small_resnet, images, targets, iterations=20, objective="probability")
    peak = explain("opticam", small_resnet, images, targets, iterations=20, normalization="max")
    for maps in (prob, peak):
        assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
        assert (maps - base).abs().max() > 1e-3
    # The probability objective also raises the class probability of every image.
    start = finalize_maps(_layer4_acts(small_resnet, images).mean(1), (32, 32))
    with torch.no_grad():
        p0 = torch.softmax(small_resnet(images * start.unsqueeze(1)), 1)
        p1 = torch.softmax(small_resnet(images * prob.unsqueeze(1)), 1)
    assert torch.all(target_scores(p1, targets) >= target_scores(p0, targets))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"objective": "loss"}, "objective must be one of"),
        ({"normalization": "sigmoid"}, "normalization must be one of"),
        ({"iterations": -1}, "iterations"),
        ({"lr": 0.0}, "lr must be positive"),
    ],
)
def test_opticam_rejects_bad_options(params, match, small_resnet, images, targets):
    with pytest.raises(ValueError, match=match):
        explain("opticam", small_resnet, images, targets, **params)


def test_opticam_constant_features_stay_finite(images, targets):
    """All-constant features: plain min-max divides 0 by 0, ours stays finite."""
    model = nn.Sequential(
        Normalize([0.5] * 3, [0.25] * 3),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.LazyLinear(10),
    ).eval()
    model(images)
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.fill_(1.0)  # every channel constant 1
    maps = explain("opticam", model, images, targets, layer="2", iterations=5)
    assert torch.equal(maps, torch.zeros_like(maps))

"""Bring your own architecture: channels-last target layers (Swin, ConvNeXt blocks),
the probe-forward default layer, CAM on any GAP → Linear head, and Ablation-CAM and
Opti-CAM on ViT token layers and channels-last layers.

References: pytorch-grad-cam with its documented Swin ``reshape_transform`` (a permute
(B, h, w, C) → (B, C, h, w)) and ViT one, and hand computations where its definition
differs. Models are small or seeded torchvision ones at 32–96 px.
"""

from __future__ import annotations

import h5py
import pytest
import torch
from conftest import perturb_batchnorm, small_mobilenet
from pytorch_grad_cam import (
    AblationCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.ablation_layer import AblationLayerVit
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from test_external_models import tiny_vit, vit_reshape
from torch import nn
from torchvision.models import DenseNet, resnet18, swin_t
from torchvision.models.convnext import CNBlock, CNBlockConfig, ConvNeXt

from cambench.models import build_model, register_arch, save_checkpoint
from cambench.models.external import ExternalClassifier
from cambench.models.layers import ChannelsLast, layer_layout, map_size, resolve_layer
from cambench.models.normalization import Normalize
from cambench.saliency import explain, finalize_maps, minmax_normalize, score_cams
from cambench.saliency.core import target_scores, weighted_sum

PEERS = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
}


def swin_reshape(output: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's Swin reshape_transform: (B, h, w, C) → (B, C, h, w)."""
    return output.permute(0, 3, 1, 2)


def _perturb_layernorms(model: nn.Module, head: nn.Linear, seed: int = 2) -> nn.Module:
    """LayerNorms and the head away from their init, so maps are not degenerate."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.5
    head.weight.data = torch.randn(head.weight.shape, generator=gen)
    return model.eval()


@pytest.fixture(scope="module")
def swin() -> nn.Module:
    """torchvision's swin_t, seeded random weights (weights=None), 5 classes; at 64 px
    its stages are 16², 8², 4² and 2² maps of 96…768 channels, channels last."""
    torch.manual_seed(0)
    model = swin_t(weights=None, num_classes=5)
    return _perturb_layernorms(model, model.head)


def tiny_convnext() -> nn.Module:
    """A two-stage torchvision ConvNeXt (24 and 48 channels): inside each CNBlock a
    LayerNorm and Linears act on the last dim of a (B, h, w, C) tensor."""
    torch.manual_seed(0)
    model = ConvNeXt([CNBlockConfig(24, 48, 2), CNBlockConfig(48, None, 2)], num_classes=5)
    for block in model.modules():
        if isinstance(block, CNBlock):  # layer scale 1e-6 at init: the blocks would not count
            block.layer_scale.data = torch.rand(block.layer_scale.shape) + 0.5
    return _perturb_layernorms(model, model.classifier[-1])


def _images(n: int, size: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _peer_maps(method, model, layer, images, targets, reshape=None, **kwargs):
    peer = PEERS[method](model=model, target_layers=[layer], reshape_transform=reshape, **kwargs)
    if method == "scorecam":
        peer.batch_size = 64
    with peer:
        maps = peer(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return minmax_normalize(torch.from_numpy(maps).float())


def _outputs(model: nn.Module, images: torch.Tensor) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Every module's (last) output on ``images``."""
    seen: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    handles = [
        m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, (m, o)))
        for n, m in model.named_modules()
        if n
    ]
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return seen


# --- item 1: channels-last layers ------------------------------------------------------


def test_layouts_are_detected_by_channel_counts(swin):
    outputs = _outputs(swin, _images(1, 64))
    for name in ("features", "features.0", "features.1", "features.5", "features.7.1", "norm"):
        module, out = outputs[name]
        assert isinstance(layer_layout(module, out), ChannelsLast), name
    # After torchvision's own permute the output is (B, C, h, w): no layer inside says
    # otherwise, so it stays channels first.
    assert layer_layout(*outputs["permute"]) is None
    convnext = _outputs(tiny_convnext(), _images(1, 64))
    assert isinstance(layer_layout(*convnext["features.3.0.block.2"]), ChannelsLast)  # LN
    assert isinstance(layer_layout(*convnext["features.3.0.block.3"]), ChannelsLast)  # Linear
    # A whole CNBlock permutes back: its Linear's channel count is dimension 1's.
    for name in ("features.3.1", "features.3", "features"):
        assert layer_layout(*convnext[name]) is None, name


def test_every_cnn_output_stays_channels_first():
    """No 4-D output of cambench's and torchvision's CNNs is read as channels last,
    among them a DenseNet block whose last convolution has as many channels as the
    map is wide (8) but whose concatenated output has 32, a count no layer inside it
    has."""
    torch.manual_seed(0)
    models = {
        "small_resnet": (build_model({"width": 8, "blocks": [1, 1, 1, 1]}, 10).eval(), 32),
        "mobilenet_v2": (small_mobilenet(), 96),
        "resnet18": (perturb_batchnorm(resnet18(num_classes=5)).eval(), 64),
        "densenet": (DenseNet(8, (2, 2), 16, bn_size=2, num_classes=5).eval(), 32),
    }
    for arch, (model, size) in models.items():
        outputs = _outputs(model, _images(1, size))
        maps = {n: layer_layout(m, o) for n, (m, o) in outputs.items() if o.ndim == 4}
        assert maps and all(layout is None for layout in maps.values()), arch
    dense = _outputs(models["densenet"][0], _images(1, 32))["features.denseblock1"][1]
    assert dense.shape == (1, 32, 8, 8)


@pytest.mark.parametrize("layer", ["features.5", "norm"])
@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "layercam"])
def test_swin_cams_equal_pytorch_grad_cam(method, layer, swin):
    images, targets = _images(2, 64), torch.tensor([1, 4])
    ours = explain(method, swin, images, targets, layer=layer)
    reference = _peer_maps(method, swin, swin.get_submodule(layer), images, targets, swin_reshape)
    assert ours.std() > 0.1  # not a degenerate map
    assert (ours - reference).abs().max() <= 1e-4


def test_swin_scorecam_equals_pytorch_grad_cam(swin):
    """On the patch embedding (96 channels: 96 masked forwards per image)."""
    images, targets = _images(2, 64), torch.tensor([1, 4])
    ours = explain("scorecam", swin, images, targets, layer="features.0", batch_size=64)
    reference = _peer_maps("scorecam", swin, swin.features[0], images, targets, swin_reshape)
    assert ours.std() > 0.1
    assert (ours - reference).abs().max() <= 1e-4


@pytest.mark.parametrize("method", sorted(PEERS))
def test_convnext_block_layernorm_equals_pytorch_grad_cam(method):
    model, images, targets = tiny_convnext(), _images(2, 64), torch.tensor([0, 3])
    layer = "features.3.0.block.2"  # LayerNorm over the last dim of (B, 8, 8, 48)
    ours = explain(method, model, images, targets, layer=layer)
    reference = _peer_maps(method, model, model.get_submodule(layer), images, targets, swin_reshape)
    assert ours.std() > 0.1
    assert (ours - reference).abs().max() <= 1e-4


def test_an_ambiguous_layout_stays_channels_first_unless_forced():
    """At 96 px the first stage is (B, 24, 24, 24): h = C, no evidence either way."""
    model, images, targets = tiny_convnext(), _images(2, 96), torch.tensor([0, 3])
    layer = "features.1.0.block.2"
    module, out = _outputs(model, images)[layer]
    assert out.shape == (2, 24, 24, 24) and layer_layout(module, out) is None
    plain = explain("gradcam", model, images, targets, layer=layer)
    as_is = _peer_maps("gradcam", model, module, images, targets)
    assert (plain - as_is).abs().max() <= 1e-4
    forced = explain("gradcam", model, images, targets, layer=layer, layout="channels_last")
    permuted = _peer_maps("gradcam", model, module, images, targets, swin_reshape)
    assert (forced - permuted).abs().max() <= 1e-4 and (forced - plain).abs().max() > 0.1
    with pytest.raises(ValueError, match="layout must be one of"):
        explain("gradcam", model, images, targets, layer=layer, layout="nhwc")
    with pytest.raises(ValueError, match=r"outputs torch.Size\(\[2, 24, 24, 24\]\), which"):
        explain("gradcam", model, images, targets, layer=layer, layout="tokens")


# --- item 2: the probe-forward default layer -------------------------------------------


class ChannelsLastMixer(nn.Module):
    """A channels-last residual MLP: (B, C, h, w) in, (B, h, w, C) out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        return x + self.mlp(self.norm(x))


class MixerNet(nn.Module):
    """Normalization, a conv stem, a channels-last block, a Flatten → Linear head: the
    old fallback (the last top-level child with a convolution) takes the stem."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.normalize = Normalize([0.5] * 3, [0.25] * 3)
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, 2, 1), nn.ReLU())
        self.mixer = ChannelsLastMixer(12)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(12 * 16 * 16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mixer(self.stem(self.normalize(x))))


class ConvHead(nn.Module):
    """A block that ends the network: convolution, ReLU, Flatten, Linear."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.out = nn.Sequential(nn.Flatten(), nn.Linear(6 * 16 * 16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.conv(x)))


class ConvHeadNet(nn.Module):
    """The old fallback takes ``block``, whose output is the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.block = ConvHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(x))


@pytest.mark.parametrize(
    ("cls", "static", "probed"), [(MixerNet, "stem", "mixer"), (ConvHeadNet, "block", "block.act")]
)
def test_the_probe_takes_the_last_module_that_outputs_a_map(cls, static, probed):
    torch.manual_seed(0)
    model, images, targets = cls().eval(), _images(3, 32), torch.tensor([0, 2, 4])
    assert resolve_layer(model, None)[0] == static  # no example: the old guess
    assert resolve_layer(model, None, images)[0] == probed
    ours = explain("gradcam", model, images, targets)
    assert torch.equal(ours, explain("gradcam", model, images, targets, layer=probed))
    assert ours.std() > 0.1
    # Grad-CAM by hand on the chosen layer's map (channels last for MixerNet).
    module, kept = model.get_submodule(probed), []
    handle = module.register_forward_hook(lambda m, i, o: kept.append(o))
    with torch.enable_grad():
        score = target_scores(model(images), targets).sum()
        (grad,) = torch.autograd.grad(score, kept[0])
    handle.remove()
    acts = kept[0].detach()
    if cls is MixerNet:
        acts, grad = acts.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
    hand = finalize_maps(weighted_sum(grad.mean((2, 3)), acts), (32, 32))
    assert (ours - hand).abs().max() <= 1e-5


def test_the_probe_works_through_a_wrapper_and_keeps_the_model_as_found():
    torch.manual_seed(0)
    model = ExternalClassifier("mixer", MixerNet(), None)  # in train mode
    images = _images(2, 32)
    assert model.default_target_layer == "net.stem"  # the static guess
    assert resolve_layer(model, None, images)[0] == "net.mixer"
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())


def test_no_module_that_outputs_a_map_is_a_clear_error():
    """The input normalization's (B, 3, H, W) output does not count: no learned layer
    has run yet."""
    model = nn.Sequential(Normalize([0.5] * 3, [0.25] * 3), nn.Flatten(), nn.Linear(3 * 64, 4))
    images = _images(2, 8)
    with pytest.raises(ValueError) as err:
        explain("gradcam", model, images, torch.tensor([0, 1]))
    message = str(err.value)
    assert message.startswith("Sequential has no module whose output is a (B, C, h, w) or")
    assert "0 (1, 3, 8, 8), 1 (1, 192), 2 (1, 4)" in message


def test_the_saliency_job_records_the_probed_layer(tmp_path, registry, capsys):
    from cambench.data.shapes import CLASS_NAMES, generate_shapes
    from cambench.data.store import Split, write_split
    from cambench.jobs import saliency

    register_arch("probe_mixer")(lambda num_classes: MixerNet(num_classes))
    images, labels, masks = generate_shapes(4, 32, 4, seed=5)
    write_split(tmp_path / "test.h5", Split(images, labels, masks, list(CLASS_NAMES[:4])))
    config = {"kind": "pretrained", "arch": "probe_mixer"}
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", build_model(config, 4), config, 4, list(CLASS_NAMES[:4]))
    saliency.run(
        tmp_path / "m.pt",
        tmp_path / "test.h5",
        tmp_path / "maps.h5",
        "gradcam",
        {},
        None,
        n_images=4,
        shards=1,
        shard=0,
        batch_size=2,
        target="label",
        device=torch.device("cpu"),
        model_name="mixer",
        progress=False,
    )
    with h5py.File(tmp_path / "maps.h5", "r") as f:
        assert f.attrs["layer"] == "net.mixer"
    assert "target layer: net.mixer" in capsys.readouterr().out


# --- item 3: CAM on any GAP → Linear head ----------------------------------------------


def test_cam_finds_mobilenets_classifier_by_structure():
    """MobileNet-V2: features → GAP → Dropout → Linear ``classifier.1`` (no ``fc``)."""
    model = small_mobilenet()
    images = nn.functional.interpolate(_images(3, 32), size=96, mode="bilinear")
    targets = torch.tensor([0, 4, 9])
    ours = explain("cam", model, images, targets, layer="1.features")
    kept = []
    handle = model[1].features.register_forward_hook(lambda m, i, o: kept.append(o.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    weights = model[1].classifier[1].weight[targets]  # (B, C): w_ck
    hand = finalize_maps(torch.einsum("bk,bkhw->bhw", weights, kept[0]), (96, 96))
    assert ours.std() > 0.1
    assert (ours - hand).abs().max() <= 1e-5
    # With GAP → Linear after the layer, Grad-CAM is CAM (pytorch-grad-cam's Grad-CAM).
    reference = _peer_maps("gradcam", model, model[1].features, images, targets)
    assert (ours - reference).abs().max() <= 1e-4


def test_cam_on_a_channels_last_layer_before_gap(swin):
    """swin_t: norm (B, h, w, C) → permute → GAP → Linear ``head``."""
    images, targets = _images(2, 64), torch.tensor([1, 4])
    cam = explain("cam", swin, images, targets, layer="norm")
    assert (cam - explain("gradcam", swin, images, targets, layer="norm")).abs().max() <= 1e-5


@pytest.mark.parametrize("layer", ["features.5", "features"])
def test_cam_refuses_a_layer_not_followed_by_gap_and_linear(layer, swin):
    """After ``features.5`` a Linear has its channel count (384) but not the classes;
    after ``features`` the head has both, but a LayerNorm comes first."""
    images, targets = _images(2, 64), torch.tensor([1, 4])
    with pytest.raises(ValueError, match="'cam' needs a global-average-pooling → Linear head"):
        explain("cam", swin, images, targets, layer=layer)


def test_cam_refuses_a_flatten_linear_head():
    """MixerNet's head is Flatten → Linear, and a Linear(12, 12) inside the mixer has
    the channel count: a 12-class model has a candidate that fails the check."""
    torch.manual_seed(0)
    model, images = MixerNet(num_classes=12).eval(), _images(2, 32)
    with pytest.raises(ValueError, match="is not GAP → Linear after it .* Linear 'mixer.mlp'"):
        explain("cam", model, images, torch.tensor([0, 1]), layer="mixer")


# --- item 4: Ablation-CAM and Opti-CAM on token and channels-last layers ------------------


def _ablation_by_hand(model, layer, images, targets, to_map, zero_channel):
    """Ablation-CAM written out: one forward per (image, channel) with channel ``k`` of
    the layer's output replaced by zero (``zero_channel(output, k)``)."""
    kept = []
    handle = layer.register_forward_hook(lambda m, i, o: kept.append(o.detach().clone()))
    with torch.no_grad():
        y = target_scores(model(images), targets)
    handle.remove()
    acts = to_map(kept[0])
    weights = torch.zeros(acts.shape[:2])
    for b in range(len(images)):
        for k in range(acts.shape[1]):
            handle = layer.register_forward_hook(lambda m, i, o, k=k: zero_channel(o.clone(), k))
            with torch.no_grad():
                y_k = model(images[b : b + 1])[0, targets[b]]
            handle.remove()
            weights[b, k] = (y[b] - y_k) / y[b]
    return finalize_maps(weighted_sum(weights, acts), tuple(images.shape[-2:]))


def _zero_grid_tokens(tokens: torch.Tensor, k: int) -> torch.Tensor:
    tokens[:, 1:, k] = 0
    return tokens


class _ZeroGridTokens(AblationLayerVit):
    """pytorch-grad-cam's ViT ablation layer with cambench's definition: channel k of
    the grid tokens set to zero, the class token left alone."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activations
        for i in range(out.size(0)):
            out[i, 1:, self.indices[i]] = 0
        return out


def test_ablationcam_on_a_vit_layer(monkeypatch):
    """Ablation-CAM on the ViT default layer (last block's ``ln_1``): channel ``k`` of
    the 4 × 4 grid tokens is set to zero, the class token kept (it is not part of ``A``).

    pytorch-grad-cam's ``AblationCAM`` with ``AblationLayerVit()`` is defined otherwise
    (pytorch_grad_cam/ablation_layer.py, ``AblationLayerVit.__call__``): it transposes
    the (n, 1 + h·w, C) tokens to (n, C, 1 + h·w) and sets row ``k`` of **every** token,
    the class token included, to 0 only if the minimum of the whole chunk of
    activations is exactly 0, else to ``min − 1e7``, recomputing that minimum after
    each row it has ablated (so the value depends on its batch size). LayerNorm
    outputs are never exactly 0, so it always ablates to a huge negative value, class
    token included: its maps differ from ours entirely. The reference here is an
    independent hand computation (one forward per image and channel with a hook
    zeroing the channel), and pytorch-grad-cam's machinery with its ablation layer
    replaced by one that zeroes the grid tokens only.
    """
    model = tiny_vit()
    name, layer = resolve_layer(model, None)
    assert name == "net.encoder.layers.encoder_layer_1.ln_1"
    images, targets = _images(3, 32), torch.tensor([0, 3, 4])
    ours = explain("ablationcam", model, images, targets)
    hand = _ablation_by_hand(model, layer, images, targets, vit_reshape, _zero_grid_tokens)
    assert ours.std() > 0.1
    assert (ours - hand).abs().max() <= 1e-5
    with AblationCAM(
        model=model,
        target_layers=[layer],
        reshape_transform=vit_reshape,
        ablation_layer=_ZeroGridTokens(),
        batch_size=64,
    ) as peer:
        reference = peer(
            input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]
        )
    assert (ours - minmax_normalize(torch.from_numpy(reference).float())).abs().max() <= 1e-4
    # The layers after ln_1 ran alone (a torch.fx split fed the class token back), and
    # whole forwards with the layer's output substituted agree.
    whole, real = [], score_cams._scores_by_model
    monkeypatch.setattr(score_cams, "_scores_by_model", lambda *a: whole.append(1) or real(*a))
    assert torch.equal(explain("ablationcam", model, images, targets), ours) and not whole
    monkeypatch.undo()
    monkeypatch.setattr(score_cams, "trace_tail", lambda model, layer: None)
    assert (explain("ablationcam", model, images, targets) - ours).abs().max() <= 1e-5


def test_ablationcam_on_a_channels_last_layer(monkeypatch):
    model, images, targets = tiny_convnext(), _images(2, 64), torch.tensor([0, 3])
    layer = model.get_submodule("features.3.0.block.2")

    def zero_last(output: torch.Tensor, k: int) -> torch.Tensor:
        output[..., k] = 0
        return output

    ours = explain("ablationcam", model, images, targets, layer="features.3.0.block.2")
    hand = _ablation_by_hand(model, layer, images, targets, swin_reshape, zero_last)
    assert ours.std() > 0.1
    assert (ours - hand).abs().max() <= 1e-5
    monkeypatch.setattr(score_cams, "trace_tail", lambda model, layer: None)
    slow = explain("ablationcam", model, images, targets, layer="features.3.0.block.2")
    assert (slow - ours).abs().max() <= 1e-5


def test_ablationcam_on_swins_last_layernorm(swin):
    """norm → permute → GAP → Linear: y_c − y_c^(k) = w_ck · mean(A^k)."""
    images, targets = _images(2, 64), torch.tensor([1, 4])
    acts, y, ablated = score_cams.ablation_scores(swin, images, targets, swin.norm, 256)
    assert acts.shape == (2, 768, 2, 2)
    expected = swin.head.weight[targets] * acts.mean((2, 3))
    torch.testing.assert_close(y.view(-1, 1) - ablated, expected, atol=1e-4, rtol=1e-4)


def _opticam_properties(model, images, targets, layer):
    maps = explain("opticam", model, images, targets, layer=layer, iterations=20)
    assert maps.shape == (len(images), *images.shape[-2:])
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    alone = torch.cat(
        [
            explain(
                "opticam", model, images[i : i + 1], targets[i : i + 1], layer=layer, iterations=20
            )
            for i in range(len(images))
        ]
    )
    assert (maps - alone).abs().max() <= 1e-4
    uniform = explain("opticam", model, images, targets, layer=layer, iterations=0)
    with torch.no_grad():
        before = target_scores(model(images * uniform.unsqueeze(1)), targets)
        after = target_scores(model(images * maps.unsqueeze(1)), targets)
    assert torch.all(after >= before)
    return maps


def test_opticam_on_a_vit_layer():
    model = tiny_vit()
    _opticam_properties(model, _images(3, 32), torch.tensor([0, 3, 4]), None)


def test_opticam_on_a_channels_last_layer(swin):
    """On the second stage's 8 × 8 map. (On the last LayerNorm's 2 × 2 map, nearly
    uniform at u = 0, the first Adam step moves the min-max mask's zero to another
    corner and one image's masked logit falls below the uniform mask's for good.)"""
    _opticam_properties(swin, _images(2, 64), torch.tensor([1, 4]), "features.3")


def test_map_size_reads_each_layout(swin):
    outputs = _outputs(swin, _images(1, 64))
    assert map_size(*outputs["features.0"]) == 16 * 16  # (1, 16, 16, 96)
    assert map_size(*outputs["permute"]) == 2 * 2  # (1, 768, 2, 2)
    assert map_size(*outputs["flatten"]) == 0  # (1, 768)

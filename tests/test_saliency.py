"""The explain() output contract and the CAM formulas against independent references."""

from __future__ import annotations

import pytest
import torch
from conftest import small_mobilenet
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from cambench.models.normalization import Normalize
from cambench.saliency import METHODS, explain, finalize_maps, minmax_normalize
from cambench.saliency.core import weighted_sum
from cambench.specs import ATTENTION_METHODS

REQUIRED = {"gradcam", "fakecam", "random", "cam", "gradcampp", "xgradcam", "layercam"}
# castream_attention is by definition undefined on these generic (GAP) models; its own
# contract is tested on a CA-Stream model in test_castream.py, the attention methods'
# on a ViT in test_attention.py.
GENERIC = sorted(set(METHODS) - {"castream_attention", *ATTENTION_METHODS})


def object_masks(method: str, images: torch.Tensor) -> dict:
    """The object masks a method that reads them (mask_oracle) needs: a square per image,
    a different one each; nothing for the other methods."""
    if not METHODS[method].needs_masks:
        return {}
    b, _, h, w = images.shape
    masks = torch.zeros(b, h, w, dtype=torch.bool, device=images.device)
    for i in range(b):
        masks[i, i : i + h // 2, 2 * i : 2 * i + w // 3] = True
    return {"object_masks": masks}


PEER = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
}


def test_registry_has_the_skeleton_methods():
    assert set(METHODS) >= REQUIRED


def test_unknown_method_lists_valid_names(small_resnet, images, targets):
    with pytest.raises(ValueError, match="unknown saliency method 'nope'.*gradcam"):
        explain("nope", small_resnet, images, targets)


def test_unknown_layer_lists_candidates(small_resnet, images, targets):
    with pytest.raises(ValueError, match="layer 'layer9' not found.*layer4"):
        explain("gradcam", small_resnet, images, targets, layer="layer9")


def test_unknown_parameter_is_rejected(small_resnet, images, targets):
    with pytest.raises(ValueError, match="no parameter.*seed"):
        explain("gradcam", small_resnet, images, targets, seed=3)


@pytest.mark.parametrize("method", GENERIC)
def test_output_contract(method, small_resnet, images, targets):
    maps = explain(method, small_resnet, images, targets, **object_masks(method, images))
    assert maps.shape == (6, 32, 32)
    assert maps.dtype == torch.float32
    assert maps.device == images.device
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1
    # Per-image min-max: every non-constant map spans exactly [0, 1].
    flat = maps.flatten(1)
    spans = flat.max(1).values - flat.min(1).values
    assert torch.all((spans == 0) | ((flat.min(1).values == 0) & (flat.max(1).values == 1)))


@pytest.mark.parametrize("method", GENERIC)
def test_batch_independence(method, small_resnet, images, targets):
    if method in ("sscam", "smoothgradcampp"):
        pytest.skip("its noise is drawn per batch, as torchcam draws it (docs/methods.md)")
    extra = object_masks(method, images)
    whole = explain(method, small_resnet, images, targets, **extra)
    parts = torch.cat(
        [
            explain(
                method, small_resnet, images[i : i + 2], targets[i : i + 2],
                **{k: v[i : i + 2] for k, v in extra.items()},
            )
            for i in (0, 2, 4)
        ]
    )  # fmt: skip
    # RISE sums thousands of masked forwards' probabilities in float32: another batch
    # shape reorders the sums (maps in [0, 1] agree to 2e-5, its masks are the same)
    atol = 5e-5 if method == "rise" else 1e-5
    torch.testing.assert_close(whole, parts, atol=atol, rtol=0)


@pytest.mark.parametrize("method", GENERIC)
def test_model_state_is_restored(method, small_resnet, images, targets):
    model = small_resnet.train()
    model.layer2.eval()  # mixed modes must survive
    model.stem[0].weight.requires_grad_(False)
    hook = model.layer4.register_forward_hook(lambda *a: None)
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    explain(method, model, images, targets, **object_masks(method, images))
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert list(model.layer4._forward_hooks.values()) == [hook.hooks_dict_ref()[hook.id]]
    assert all(not m._forward_hooks for name, m in model.named_modules() if name != "layer4")
    assert all(p.grad is None for p in model.parameters())
    hook.remove()


def test_no_autograd_graph_before_the_target_layer(small_resnet, images, targets):
    """Grad-CAM backpropagates through the layers after the target layer only."""
    seen = []

    def record(module, inputs, output):
        seen.append(output.requires_grad)

    handles = [
        small_resnet.layer3.register_forward_hook(record),
        small_resnet.fc.register_forward_hook(record),
    ]
    explain("gradcam", small_resnet, images, targets)
    for h in handles:
        h.remove()
    assert seen == [False, True]


def test_constant_map_becomes_zeros():
    raw = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])
    maps = finalize_maps(raw, (8, 8))
    assert torch.equal(maps[0], torch.zeros(8, 8))
    assert maps[1].min() == 0 and maps[1].max() == 1


def test_minmax_normalize_by_hand():
    raw = torch.tensor([[[1.0, 3.0], [5.0, 9.0]]])
    expected = torch.tensor([[[0.0, 0.25], [0.5, 1.0]]])
    torch.testing.assert_close(minmax_normalize(raw), expected)


def test_relu_applies_before_normalization():
    raw = torch.tensor([[[-4.0, 0.0], [2.0, 4.0]]])
    torch.testing.assert_close(finalize_maps(raw, (2, 2)), torch.tensor([[[0.0, 0.0], [0.5, 1.0]]]))


def test_fakecam_by_hand(small_resnet, images, targets):
    maps = explain("fakecam", small_resnet, images, targets)
    expected = torch.ones(6, 32, 32)
    expected[:, 0, 0] = 0
    assert torch.equal(maps, expected)


def test_random_is_seeded_and_uniform(small_resnet, images, targets):
    a = explain("random", small_resnet, images, targets, seed=1)
    b = explain("random", small_resnet, images, targets, seed=1)
    c = explain("random", small_resnet, images, targets, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # different images, different noise
    assert abs(float(a.mean()) - 0.5) < 0.03
    hist = torch.histc(a, bins=10, min=0, max=1) / a.numel()
    assert torch.all((hist - 0.1).abs() < 0.02)


def test_gap_models_make_cam_gradcam_and_xgradcam_coincide(small_resnet, images, targets):
    """With GAP → Linear after the target layer, ∂y_c/∂A^k = w_ck / hw everywhere,
    so Grad-CAM's and XGrad-CAM's weights are both w_ck / hw: the same map as CAM."""
    cam = explain("cam", small_resnet, images, targets)
    torch.testing.assert_close(
        explain("gradcam", small_resnet, images, targets), cam, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        explain("xgradcam", small_resnet, images, targets), cam, atol=1e-5, rtol=0
    )


def test_cam_needs_a_gap_linear_head(images, targets):
    model = nn.Sequential(
        Normalize([0.5] * 3, [0.25] * 3), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10)
    )
    model(images)
    with pytest.raises(ValueError, match="needs a global-average-pooling"):
        explain("cam", model, images, targets, layer="1")


@pytest.mark.parametrize("method", sorted(PEER))
@pytest.mark.parametrize("arch", ["small_resnet", "mobilenet_v2"])
def test_equals_pytorch_grad_cam(method, arch, small_resnet, images, targets):
    if arch == "small_resnet":
        model, layer, module = small_resnet, "layer4", small_resnet.layer4
    else:
        model = small_mobilenet()
        layer, module = "1.features", model[1].features
        images = torch.nn.functional.interpolate(images, size=96, mode="bilinear")  # 3×3 features
    ours = explain(method, model, images, targets, layer=layer)
    with PEER[method](model=model, target_layers=[module]) as peer:
        reference = peer(
            input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]
        )
    reference = minmax_normalize(torch.from_numpy(reference).float())
    assert (ours - reference).abs().max() <= 1e-4


def test_layer_given_as_module(small_resnet, images, targets):
    by_name = explain("gradcam", small_resnet, images, targets, layer="layer3")
    by_module = explain("gradcam", small_resnet, images, targets, layer=small_resnet.layer3)
    assert torch.equal(by_name, by_module)


def test_bad_inputs(small_resnet, images, targets):
    with pytest.raises(ValueError, match="images must be"):
        explain("gradcam", small_resnet, images[:, :2], targets)
    with pytest.raises(ValueError, match="targets must be"):
        explain("gradcam", small_resnet, images, targets[:3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("method", GENERIC)
def test_cuda_maps_stay_on_the_device_and_match_cpu(method, small_resnet, images, targets):
    cpu = explain(method, small_resnet, images, targets)
    model = small_resnet.cuda()
    maps = explain(method, model, images.cuda(), targets.cuda())
    assert maps.device.type == "cuda"
    torch.testing.assert_close(maps.cpu(), cpu, atol=1e-3, rtol=0)


def test_cam_refuses_a_castream_model(small_resnet, images, targets):
    """A CA-Stream head is not GAP → Linear: CAM's class map would not be its logit."""
    from cambench.models.castream import CAStream

    with pytest.raises(ValueError, match="needs a global-average-pooling"):
        explain("cam", CAStream(small_resnet).eval(), images, targets)


def test_weighted_sum_by_hand():
    """``S = Σ_k α_k A^k`` per image, in the activations' dtype."""
    acts = torch.tensor(
        [[[[1.0, 2.0]], [[3.0, -1.0]]], [[[0.0, 1.0]], [[2.0, 2.0]]]]
    )  # (B=2, K=2, h=1, w=2)
    weights = torch.tensor([[2.0, 1.0], [-1.0, 0.5]], dtype=torch.float64)
    expected = torch.tensor([[[2 * 1 + 3, 2 * 2 - 1]], [[0 + 1, -1 + 1]]], dtype=torch.float32)
    out = weighted_sum(weights, acts)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)

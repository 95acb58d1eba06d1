"""The other CAMs (issue 19, item 3) against their reference implementations.

HiResCAM, Grad-CAM element-wise, Eigen-CAM, EigenGrad-CAM and FullGrad against
pytorch-grad-cam 1.5.x; SS-CAM, IS-CAM and SmoothGrad-CAM++ against torchcam 0.5 with
the same noise (both seeded: torchcam draws from the global CPU generator, cambench
from a CPU generator seeded alike). Models: cambench's SmallResNet (32 px), torchvision
ResNet-18 (32 px) and a tiny torchvision ViT (32 px, pytorch-grad-cam's ViT reshape).
Every comparison is on the normalized maps (``n(up(ReLU(S)))``), tolerance 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import perturb_batchnorm
from pytorch_grad_cam import EigenCAM, EigenGradCAM, FullGrad, GradCAMElementWise, HiResCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import (
    get_2d_projection,
    get_2d_projection_with_sign_correction,
)
from test_external_models import tiny_vit, vit_reshape
from torch import nn
from torchcam.methods import ISCAM, SSCAM, SmoothGradCAMpp
from torchvision.models import resnet18

from cambench.models import build_model
from cambench.saliency import explain, finalize_maps, minmax_normalize
from cambench.saliency.core import activations
from cambench.saliency.eigen_cams import first_component
from cambench.saliency.fullgrad import _config_has_bias_layers, bias_layers
from cambench.specs import _method_params

TOL = 1e-4


def _small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return perturb_batchnorm(build_model({"width": 8, "blocks": [1, 1, 1, 1]}, 10)).eval()


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return perturb_batchnorm(resnet18(num_classes=5)).eval()


# (model factory, target layer, reshape for the peers, targets): 3 images at 32 px each
MODELS = {
    "small_resnet": (_small_resnet, "layer3", None, [0, 3, 7]),
    "resnet18": (_resnet18, "layer3", None, [0, 2, 4]),
    "vit": (tiny_vit, "net.encoder.layers.encoder_layer_1.ln_1", vit_reshape, [0, 3, 4]),
}


def _setup(name: str):
    factory, layer, reshape, targets = MODELS[name]
    model = factory()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, layer, reshape, images, torch.tensor(targets)


def _grad_cam_peer(cls, model, layer, reshape, images, targets) -> torch.Tensor:
    module = model.get_submodule(layer)
    with cls(model=model, target_layers=[module], reshape_transform=reshape) as peer:
        maps = peer(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return minmax_normalize(torch.from_numpy(maps).float())


def _close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert ours.std() > 0.05  # not a degenerate map
    assert (ours - reference).abs().max() < TOL


# --- HiResCAM, Grad-CAM element-wise ---------------------------------------------------


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize(
    "method, peer", [("hirescam", HiResCAM), ("gradcam_elementwise", GradCAMElementWise)]
)
def test_elementwise_cams_equal_pytorch_grad_cam(method, peer, model_name):
    model, layer, reshape, images, targets = _setup(model_name)
    ours = explain(method, model, images, targets, layer=layer)
    _close(ours, _grad_cam_peer(peer, model, layer, reshape, images, targets))


def test_hirescam_sums_to_the_logit_on_a_gap_linear_head():
    """HiResCAM's defining property: with GAP → Linear after the layer,
    y_c − b_c = Σ_ij S_ij, for the raw (unnormalized) map."""
    from cambench.saliency.hires_cams import hirescam

    model, _, _, images, targets = _setup("small_resnet")
    layer = model.get_submodule("layer4")
    raw = hirescam(model, images, targets, layer)
    logits = model(images).detach()
    bias = model.fc.bias.detach()[targets]
    expected = logits.gather(1, targets.view(-1, 1)).squeeze(1) - bias
    assert torch.allclose(raw.sum((1, 2)), expected, atol=1e-5)


# --- Eigen-CAM, EigenGrad-CAM ----------------------------------------------------------


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("method, peer", [("eigencam", EigenCAM), ("eigengradcam", EigenGradCAM)])
def test_eigen_cams_equal_pytorch_grad_cam_with_its_sign_fix(method, peer, model_name, monkeypatch):
    """pytorch-grad-cam's EigenCAM keeps LAPACK's sign; with the sign fix it ships
    (SegEigenCAM's get_2d_projection_with_sign_correction) patched in, the maps agree."""
    import pytorch_grad_cam.eigen_cam as eigen_cam
    import pytorch_grad_cam.eigen_grad_cam as eigen_grad_cam

    for module in (eigen_cam, eigen_grad_cam):
        monkeypatch.setattr(module, "get_2d_projection", get_2d_projection_with_sign_correction)
    model, layer, reshape, images, targets = _setup(model_name)
    ours = explain(method, model, images, targets, layer=layer)
    _close(ours, _grad_cam_peer(peer, model, layer, reshape, images, targets))


def test_first_component_is_pytorch_grad_cams_projection_up_to_its_sign():
    model, layer, _, images, targets = _setup("resnet18")
    acts, _ = activations(model, images, targets, model.get_submodule(layer))
    ours = first_component(acts)
    reference = torch.from_numpy(get_2d_projection(acts.numpy()))
    for o, r in zip(ours, reference, strict=True):  # per image: either sign
        assert min((o - r).abs().max(), (o + r).abs().max()) < 1e-4 * r.abs().max()
        assert o.max().abs() >= o.min().abs()  # the sign rule


# --- FullGrad --------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_fullgrad_equals_pytorch_grad_cam(model_name):
    model, _, _, images, targets = _setup(model_name)
    ours = explain("fullgrad", model, images, targets)
    with FullGrad(model=model, target_layers=[]) as peer:
        reference = peer(
            input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]
        )
    _close(ours, minmax_normalize(torch.from_numpy(reference).float()))


def test_fullgrad_reads_conv_and_eval_batchnorm_biases():
    model = _small_resnet()
    found = {name: bias for name, _, bias in bias_layers(model)}
    bn = model.get_submodule("bn1") if hasattr(model, "bn1") else None
    if bn is not None:  # β − μ γ / sqrt(σ² + ε), by hand
        expected = bn.bias - bn.running_mean * bn.weight / (bn.running_var + bn.eps).sqrt()
        assert torch.allclose(found["bn1"], expected.detach())
    assert all(b.ndim == 1 for b in found.values()) and found


def _no_bias_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


def test_fullgrad_refuses_a_model_without_readable_biases():
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="'fullgrad' needs the model's bias terms"):
        explain("fullgrad", _no_bias_net(), images, torch.tensor([0, 1]))


def test_workflow_skips_fullgrad_where_no_bias_is_readable(monkeypatch):
    import json

    import cambench.saliency.fullgrad as fullgrad_module
    from cambench.specs import ModelSpec

    real = fullgrad_module.build_on_meta
    monkeypatch.setattr(
        fullgrad_module,
        "build_on_meta",
        lambda config, *a, **k: (
            _no_bias_net() if config["arch"] == "nobias" else real(config, *a, **k)
        ),
    )
    _config_has_bias_layers.cache_clear()
    try:
        assert not _config_has_bias_layers(json.dumps({"arch": "nobias"}))
        spec = ModelSpec(
            "m", "baseline", {"arch": "resnet_small"}, "resnet_small", None, "layer4", 0
        )
        assert spec.applies("fullgrad") and spec.applies("hirescam")
        nobias = ModelSpec("n", "baseline", {"arch": "nobias"}, "nobias", None, "0", 0)
        assert not nobias.applies("fullgrad") and nobias.applies("eigencam")
    finally:
        _config_has_bias_layers.cache_clear()


# --- SS-CAM, IS-CAM, SmoothGrad-CAM++ (torchcam) ---------------------------------------


def _torchcam_maps(extractor, model, images, targets, seed=None) -> torch.Tensor:
    with extractor:
        model(images)  # the forward torchcam's hooks read (input, activations)
        if seed is not None:
            torch.manual_seed(seed)
        (cams,) = extractor(class_idx=[int(t) for t in targets], normalized=False)
    return finalize_maps(cams.detach(), tuple(images.shape[-2:]))


TORCHCAM_MODELS = ("small_resnet", "vit")


def _layer_args(model_name: str) -> tuple[str, dict]:
    _, layer, reshape, _ = MODELS[model_name]
    return layer, {"reshape_transform": reshape} if reshape else {}


@pytest.mark.parametrize("model_name", TORCHCAM_MODELS)
def test_sscam_equals_torchcam_with_the_same_noise(model_name):
    model, layer, _, images, targets = _setup(model_name)
    layer, kwargs = _layer_args(model_name)
    ours = explain(
        "sscam", model, images, targets, layer=layer, samples=3, std=0.5, seed=7, batch_size=40
    )
    peer = SSCAM(
        model, layer, batch_size=32, num_samples=3, std=0.5, input_shape=(3, 32, 32), **kwargs
    )
    _close(ours, _torchcam_maps(peer, model, images, targets, seed=7))
    other = explain("sscam", model, images, targets, layer=layer, samples=3, std=0.5, seed=8)
    assert (other - ours).abs().max() > 1e-3  # the seed matters


@pytest.mark.parametrize("model_name", TORCHCAM_MODELS)
def test_iscam_equals_torchcam(model_name):
    model, layer, _, images, targets = _setup(model_name)
    layer, kwargs = _layer_args(model_name)
    ours = explain("iscam", model, images, targets, layer=layer, samples=4, batch_size=50)
    peer = ISCAM(model, layer, batch_size=32, num_samples=4, input_shape=(3, 32, 32), **kwargs)
    _close(ours, _torchcam_maps(peer, model, images, targets))


@pytest.mark.parametrize("model_name", TORCHCAM_MODELS)
def test_smoothgradcampp_equals_torchcam_with_the_same_noise(model_name):
    """batch_size 3: each forward is torchcam's (one noisy copy of the 3 images). Other
    chunkings round the ViT's batched matmuls differently; the cubed gradients amplify
    that to 1.1e-4 on one image (measured), just over the tolerance."""
    model, layer, _, images, targets = _setup(model_name)
    layer, kwargs = _layer_args(model_name)
    ours = explain(
        "smoothgradcampp",
        model,
        images,
        targets,
        layer=layer,
        samples=3,
        std=0.2,
        seed=5,
        batch_size=3,
    )
    peer = SmoothGradCAMpp(model, layer, num_samples=3, std=0.2, input_shape=(3, 32, 32), **kwargs)
    _close(ours, _torchcam_maps(peer, model, images, targets, seed=5))


def test_iscam_by_hand_from_its_coefficients():
    """IS-CAM's weights written out for one image from the definition (torchcam's
    coefficients c_i = i(i+1)/2N), with plain forwards."""
    import torch.nn.functional as F

    model, layer, _, images, targets = _setup("small_resnet")
    x, c, n = images[:1], int(targets[0]), 3
    acts, _ = activations(model, x, layer=model.get_submodule(layer))
    a = acts[0]
    low = a.flatten(1).amin(1).view(-1, 1, 1)
    scaled = (a - low) / ((a - low).flatten(1).amax(1).view(-1, 1, 1) + 1e-8)
    masks = F.interpolate(scaled[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    with torch.no_grad():
        s = sum(model(i * (i + 1) / (2 * n) * x * masks)[:, c] for i in range(1, n + 1)) / n
    raw = torch.einsum("k,khw->hw", torch.softmax(s, 0), a)
    expected = finalize_maps(raw[None], (32, 32))
    _close(explain("iscam", model, x, targets[:1], layer=layer, samples=n), expected)


# --- parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, params, key",
    [
        ("sscam", {"samples": 0}, "methods.sscam.samples"),
        ("sscam", {"std": -1.0}, "methods.sscam.std"),
        ("iscam", {"samples": "ten"}, "methods.iscam.samples"),
        ("smoothgradcampp", {"batch_size": 0}, "methods.smoothgradcampp.batch_size"),
        ("smoothgradcampp", {"seed": 1.5}, "methods.smoothgradcampp.seed"),
        ("sscam", {"samples": True}, "methods.sscam.samples"),
    ],
)
def test_bad_parameters_fail_at_parse_time_naming_the_key(method, params, key):
    with pytest.raises(ValueError, match=f"config key '{key}'"):
        _method_params({method: params})


def test_bad_parameters_fail_through_the_api():
    model, layer, _, images, targets = _setup("small_resnet")
    with pytest.raises(ValueError, match="'samples'"):
        explain("iscam", model, images, targets, samples=0)


def test_no_map_depends_on_the_chunk_size():
    model, layer, _, images, targets = _setup("small_resnet")
    for method, params in [("iscam", {"samples": 2}), ("smoothgradcampp", {"samples": 2})]:
        a = explain(method, model, images, targets, layer=layer, batch_size=3, **params)
        b = explain(method, model, images, targets, layer=layer, batch_size=1000, **params)
        assert (a - b).abs().max() < 1e-5, method
    assert np.isfinite(a.numpy()).all()

"""Models cambench does not define: torchvision:/timm: names, weights that must fit,
outputs adapted to logits, and the CAMs on transformer (token) layers."""

from __future__ import annotations

import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchvision.models import VisionTransformer, resnet18

from cambench.models import build_model, check_model_config, load_checkpoint, save_checkpoint
from cambench.models.external import ExternalClassifier, logits_of
from cambench.saliency import explain, minmax_normalize, resolve_layer

PEERS = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
}


def tiny_vit() -> ExternalClassifier:
    """A seeded vit_b_16-style torchvision VisionTransformer (32 px, 8 px patches: a
    4 × 4 grid and a class token), LayerNorms and head perturbed so that maps are not
    degenerate, behind a normalization."""
    torch.manual_seed(0)
    net = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=5,
    )
    gen = torch.Generator().manual_seed(2)
    for m in net.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.5
    net.heads.head.weight.data = torch.randn(net.heads.head.weight.shape, generator=gen)
    return ExternalClassifier("tiny_vit", net, ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))).eval()


def vit_reshape(tokens: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ViT reshape_transform: drop the class token, 4 × 4 grid."""
    grid = tokens[:, 1:, :].reshape(tokens.size(0), 4, 4, tokens.size(2))
    return grid.transpose(2, 3).transpose(1, 2)


@pytest.mark.parametrize("method", sorted(PEERS))
def test_cams_on_a_vit_equal_pytorch_grad_cam(method):
    model = tiny_vit()
    name, layer = resolve_layer(model, None)
    assert name == "net.encoder.layers.encoder_layer_1.ln_1"  # last block's ln_1
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 3, 4])
    ours = explain(method, model, images, targets)
    peer = PEERS[method](model=model, target_layers=[layer], reshape_transform=vit_reshape)
    if method == "scorecam":
        peer.batch_size = 64
    with peer:
        reference = peer(
            input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]
        )
    reference = minmax_normalize(torch.from_numpy(reference).float())
    assert ours.std() > 0.1  # not a degenerate map
    assert (ours - reference).abs().max() <= 1e-4


def test_a_non_square_token_count_names_the_layer():
    torch.manual_seed(0)
    net = VisionTransformer(
        image_size=24,
        patch_size=8,
        num_layers=1,
        num_heads=1,
        hidden_dim=8,
        mlp_dim=8,
        num_classes=3,
    )  # 9 patches + class token = 10: fine (and 2 prefix tokens, DeiT's); 3 are not
    model = ExternalClassifier("v", net, None).eval()

    class ThreePrefix(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x[:, :2], x], 1)  # 12 tokens: neither 9 + 0/1/2

    net.encoder.layers.encoder_layer_0.ln_1 = torch.nn.Sequential(
        net.encoder.layers.encoder_layer_0.ln_1, ThreePrefix()
    )
    with pytest.raises(ValueError, match="target layer Sequential outputs 12 tokens"):
        explain(
            "gradcam",
            model,
            torch.rand(1, 3, 24, 24),
            torch.tensor([0]),
            layer="encoder.layers.encoder_layer_0.ln_1",
        )


def test_outputs_are_adapted_to_logits():
    logits = torch.rand(2, 3)

    class Out:
        pass

    obj = Out()
    obj.logits = logits
    for out in (logits, {"logits": logits}, (logits, None), [logits], obj):
        assert logits_of(out) is logits
    with pytest.raises(ValueError, match="a dict without 'logits'"):
        logits_of({"out": logits})


def test_torchvision_weights_from_a_wrapped_state_dict(tmp_path):
    torch.manual_seed(0)
    reference = resnet18(num_classes=7).eval()
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "r.pt")
    config = {
        "kind": "pretrained",
        "arch": "torchvision:resnet18",
        "weights": str(tmp_path / "r.pt"),
    }
    check_model_config("r", config)
    model = build_model(config, 7).eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), reference((x - mean) / std), atol=1e-5)
    save_checkpoint(tmp_path / "c.pt", model, config, 7, [])
    (tmp_path / "r.pt").unlink()  # the checkpoint holds every weight
    with torch.no_grad():
        assert torch.equal(load_checkpoint(tmp_path / "c.pt")(x), model(x))


def test_errors_name_the_config_key(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"^config key 'models.m.arch': unknown torchvision classification model 'nope'",
    ):
        check_model_config("m", {"kind": "pretrained", "arch": "torchvision:nope"})
    with pytest.raises(
        ValueError, match=r"^config key 'models.m.weights': weights file missing.pt does not exist"
    ):
        check_model_config(
            "m", {"kind": "pretrained", "arch": "torchvision:resnet18", "weights": "missing.pt"}
        )
    torch.save(resnet18(num_classes=10).state_dict(), tmp_path / "ten.pt")
    config = {
        "kind": "pretrained",
        "arch": "torchvision:resnet18",
        "weights": str(tmp_path / "ten.pt"),
    }
    with pytest.raises(
        ValueError,
        match=r"do not fit the model: shape mismatch: fc.weight \(10, 512\) != \(4, 512\)",
    ):
        build_model(config, 4)


def test_timm_vit_gradcam_equals_pytorch_grad_cam():
    timm = pytest.importorskip("timm")
    config = {
        "kind": "pretrained",
        "arch": "timm:vit_tiny_patch16_224",
        "arch_kwargs": {"img_size": 32, "patch_size": 8, "depth": 2},
        "normalize": "none",
    }
    torch.manual_seed(0)
    model = build_model(config, 5).eval()
    assert isinstance(model.net, timm.models.vision_transformer.VisionTransformer)
    name, layer = resolve_layer(model, None)
    assert name == "net.blocks.1.norm1"
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 4])
    with GradCAM(model=model, target_layers=[layer], reshape_transform=vit_reshape) as peer:
        reference = peer(
            input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]
        )
    ours = explain("gradcam", model, images, targets)
    assert (ours - minmax_normalize(torch.from_numpy(reference).float())).abs().max() <= 1e-4

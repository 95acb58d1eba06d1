"""HuggingFace transformers classifiers as cambench models (``arch: hf:...``).

Tiny configs built here (nothing downloaded): each family's model is saved with
``save_pretrained`` into tmp_path and loaded through ``arch: hf:...`` + ``weights:``;
its logits must equal the transformers model's own on the normalized images, its
default target layer the family's (hand-written paths), and Grad-CAM on the HF ViT
pytorch-grad-cam's with the same layer and the ViT reshape (1e-4).
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from cambench.models import build_model, check_model_config, load_checkpoint  # noqa: E402
from cambench.models.external import check_weights_available  # noqa: E402
from cambench.models.normalization import Normalize  # noqa: E402
from cambench.saliency import explain, minmax_normalize  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VIT = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}

# family: (model class, tiny config, its default target layer in transformers 5's names)
FAMILIES = {
    "vit": (
        "ViTForImageClassification",
        lambda: transformers.ViTConfig(**VIT, num_labels=4),
        "net.vit.layers.1.layernorm_before",
    ),
    "deit": (
        "DeiTForImageClassification",
        lambda: transformers.DeiTConfig(**VIT, num_labels=4),
        "net.deit.layers.1.layernorm_before",
    ),
    "swin": (
        "SwinForImageClassification",
        lambda: transformers.SwinConfig(
            image_size=32,
            patch_size=2,
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 2],
            window_size=4,
            num_labels=4,
        ),
        "net.swin.layernorm",
    ),
    "convnext": (
        "ConvNextForImageClassification",
        lambda: transformers.ConvNextConfig(
            hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=4
        ),
        "net.convnext.encoder.stages.1",
    ),
    "resnet": (
        "ResNetForImageClassification",
        lambda: transformers.ResNetConfig(
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            layer_type="basic",
            num_labels=4,
        ),
        "net.resnet.encoder.stages.1",
    ),
}


def _saved(family: str, folder) -> torch.nn.Module:
    """A seeded tiny model of ``family`` saved with save_pretrained into ``folder``."""
    class_name, make_config, _ = FAMILIES[family]
    torch.manual_seed(0)
    net = getattr(transformers, class_name)(make_config()).eval()
    net.save_pretrained(folder)
    return net


def _images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_save_pretrained_directory_loads_with_its_logits_and_default_layer(family, tmp_path):
    reference = _saved(family, tmp_path / family)
    config = {"kind": "pretrained", "arch": f"hf:{family}", "weights": str(tmp_path / family)}
    check_model_config("m", config)
    check_weights_available("m", config)
    model = build_model(config, 4).eval()
    images = _images()
    with torch.no_grad():
        expected = reference(Normalize(MEAN, STD)(images)).logits
        assert torch.equal(model(images), expected)
    assert model.default_target_layer == FAMILIES[family][2]
    maps = explain("gradcam", model, images, torch.tensor([0, 1, 3]))
    assert maps.shape == (3, 32, 32) and maps.amax() == 1  # a random model: some maps are 0


def test_a_class_name_and_a_safetensors_file_load_too(tmp_path):
    reference = _saved("vit", tmp_path / "vit")
    file = tmp_path / "vit" / "model.safetensors"
    model = build_model(
        {"kind": "pretrained", "arch": "hf:ViTForImageClassification", "weights": str(file)}, 4
    ).eval()
    images = _images()
    with torch.no_grad():
        assert torch.equal(model(images), reference(Normalize(MEAN, STD)(images)).logits)
    # a file without config.json beside it: the architecture from arch_kwargs
    alone = tmp_path / "alone" / "weights.safetensors"
    alone.parent.mkdir()
    alone.write_bytes(file.read_bytes())
    config = {"kind": "pretrained", "arch": "hf:vit", "weights": str(alone), "arch_kwargs": VIT}
    with torch.no_grad():
        assert torch.equal(build_model(config, 4).eval()(images), model(images))


def test_a_checkpoint_of_an_hf_model_needs_no_weights_directory(tmp_path):
    import shutil

    from cambench.data.store import Split, write_split
    from cambench.jobs import convert

    _saved("swin", tmp_path / "swin")
    images = (torch.rand(6, 3, 32, 32) * 255).to(torch.uint8)
    masks = torch.ones(6, 32, 32, dtype=torch.bool)
    write_split(
        tmp_path / "test.h5", Split(images, torch.arange(6) % 4, masks, ["a", "b", "c", "d"])
    )
    config = {"kind": "pretrained", "arch": "hf:swin", "weights": str(tmp_path / "swin")}
    convert.run(
        "swin",
        config,
        tmp_path / "test.h5",
        tmp_path / "m.pt",
        tmp_path / "m.json",
        4,
        torch.device("cpu"),
    )
    expected = build_model(config, 4).eval()(_images())
    shutil.rmtree(tmp_path / "swin")
    model = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(model(_images()), expected)
    assert model.default_target_layer == "net.swin.layernorm"


def test_gradcam_on_an_hf_vit_equals_pytorch_grad_cam(tmp_path):
    """Same layer (the last block's first LayerNorm), pytorch-grad-cam's ViT reshape:
    drop the class token, tokens row by row into (B, C, h, w)."""
    _saved("vit", tmp_path / "vit")
    model = build_model(
        {"kind": "pretrained", "arch": "hf:vit", "weights": str(tmp_path / "vit")}, 4
    )
    model.eval()
    images, targets = _images(), torch.tensor([0, 2, 3])
    ours = explain("gradcam", model, images, targets)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        grid = tokens[:, 1:].reshape(tokens.shape[0], 4, 4, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    class Logits(torch.nn.Module):  # pytorch-grad-cam needs a tensor output
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner.net(self.inner.normalize(x)).logits

    wrapped = Logits().eval()
    layer = model.net.vit.layers[-1].layernorm_before
    with GradCAM(model=wrapped, target_layers=[layer], reshape_transform=reshape) as peer:
        maps = peer(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    reference = minmax_normalize(torch.from_numpy(maps).float())
    assert ours.std() > 0.05
    assert (ours - reference).abs().max() < 1e-4


def test_bad_hf_configs_fail_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"models\.m\.arch'.*unknown HuggingFace image classifier"):
        check_model_config("m", {"kind": "pretrained", "arch": "hf:NoSuchModel"})
    with pytest.raises(ValueError, match=r"unknown architecture prefix 'hugface:'.*hf:<name>"):
        check_model_config("m", {"kind": "pretrained", "arch": "hugface:vit"})
    (tmp_path / "empty").mkdir()
    for weights, message in (
        (tmp_path / "empty", "has no model.safetensors"),
        (tmp_path / "x", "do not exist"),
    ):
        config = {"kind": "pretrained", "arch": "hf:vit", "weights": str(weights)}
        with pytest.raises(ValueError, match=rf"models\.m\.weights'.*{message}"):
            check_weights_available("m", config)
    _saved("vit", tmp_path / "vit")
    with pytest.raises(ValueError, match=r"classifier\.weight.*num_classes"):
        build_model({"kind": "pretrained", "arch": "hf:vit", "weights": str(tmp_path / "vit")}, 10)

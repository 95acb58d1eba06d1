"""torchvision backbones: layout, default target layers, offline weights, checkpoints.

Sizes: every forward runs on 64×64 images in eval mode. vgg16_bn (138 M parameters,
~3 s to initialize on one core) and convnext_tiny (28 M) are the heaviest; each is
built once per test that needs it.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from cambench.models import (
    ARCHITECTURES,
    build_model,
    check_model_config,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    weights_file,
)
from cambench.models.castream import CAStream
from cambench.models.layers import resolve_layer
from cambench.models.normalization import Normalize
from cambench.models.torchvision_models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TorchvisionClassifier,
    pretrained_weights_path,
)
from cambench.saliency import explain
from cambench.training import GradAlignObjective

TARGETS = {
    "resnet18": "layer4",
    "resnet34": "layer4",
    "resnet50": "layer4",
    "mobilenet_v2": "features",
    "vgg16_bn": "features",
    "convnext_tiny": "features",
}


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """A torch hub cache with nothing in it (as on a machine without internet)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _same_parameters(a: nn.Module, b: nn.Module, skip: tuple[str, ...] = ()) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        if not key.startswith(skip):
            assert torch.equal(sa[key], sb[key]), key


def test_every_arch_is_listed():
    assert set(ARCHITECTURES) == {"resnet_small", *TARGETS}


@pytest.mark.parametrize("arch", list(TARGETS))
def test_arch_layout_forward_and_gradcam(arch):
    torch.manual_seed(0)
    model = build_model({"arch": arch}, 5).eval()
    first = next(iter(model.children()))
    assert isinstance(first, Normalize)  # input normalization is the first module
    torch.testing.assert_close(first.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(first.std.flatten(), torch.tensor(IMAGENET_STD))
    assert model.default_target_layer == TARGETS[arch]
    name, layer = resolve_layer(model, None)
    assert name == TARGETS[arch] and layer is getattr(model, name)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    maps = explain("gradcam", model, images, torch.tensor([0, 3]))
    assert maps.shape == (2, 64, 64) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_state_dict_keys_are_torchvisions():
    from torchvision.models import resnet18

    model = build_model({"arch": "resnet18"}, 1000)
    keys = set(model.state_dict())
    assert keys == set(resnet18().state_dict()) | {"normalize.mean", "normalize.std"}


def test_pretrained_weights_missing_offline_fail_at_once(empty_torch_home):
    expected = empty_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert pretrained_weights_path("resnet18", "IMAGENET1K_V1") == expected
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not in the local torch hub cache") as err:
        build_model({"arch": "resnet18", "weights": "IMAGENET1K_V1"}, 10)
    assert time.perf_counter() - start < 10  # no download attempt, no hang
    assert str(expected) in str(err.value)
    assert "local state dict" in str(err.value)
    assert not expected.exists()


def test_pretrained_weights_come_from_the_hub_cache(empty_torch_home):
    """A cached ImageNet file (here: a random torchvision state dict put where the
    download would go) loads; a 5-class model keeps a fresh head."""
    from torchvision.models import mobilenet_v2

    torch.manual_seed(1)
    imagenet = mobilenet_v2()
    path = pretrained_weights_path("mobilenet_v2", "IMAGENET1K_V2")
    path.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), path)
    torch.manual_seed(2)
    model = build_model({"arch": "mobilenet_v2", "weights": "IMAGENET1K_V2"}, 5)
    state = model.state_dict()
    for key, value in imagenet.state_dict().items():
        if key.startswith("classifier.1."):
            assert state[key].shape[0] == 5  # replaced head
        else:
            assert torch.equal(state[key], value), key
    # the same number of classes loads the head too
    torch.manual_seed(3)
    full = build_model({"arch": "mobilenet_v2", "weights": "IMAGENET1K_V2"}, 1000)
    assert torch.equal(full.classifier[1].weight, imagenet.classifier[1].weight)


def test_local_state_dict_weights(tmp_path):
    torch.manual_seed(0)
    source = build_model({"arch": "resnet18"}, 7)
    torch.nn.init.normal_(source.fc.weight)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    config = {"arch": "resnet18", "weights": str(tmp_path / "r18.pth")}
    assert weights_file(config) == str(tmp_path / "r18.pth")
    assert weights_file({"arch": "resnet18", "weights": "IMAGENET1K_V1"}) is None
    torch.manual_seed(1)
    model = build_model(config, 7)
    _same_parameters(model, source)
    # a torchvision-keyed state dict with a DDP prefix and another head also loads
    torch.save(
        {"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "d.pt"
    )
    other = build_model({"arch": "resnet18", "weights": str(tmp_path / "d.pt")}, 3)
    _same_parameters(other, source, skip=("fc.",))
    assert other.fc.out_features == 3
    with pytest.raises(ValueError, match="does not exist"):
        build_model({"arch": "resnet18", "weights": str(tmp_path / "none.pt")}, 7)
    with pytest.raises(ValueError, match="do not fit.*missing"):
        build_model({"arch": "resnet34", "weights": str(tmp_path / "r18.pth")}, 7)


def test_checkpoints_never_need_pretrained_weights(tmp_path, empty_torch_home):
    torch.manual_seed(0)
    model = build_model({"arch": "resnet18"}, 4)
    config = {"kind": "baseline", "arch": "resnet18", "weights": "IMAGENET1K_V1"}
    save_checkpoint(tmp_path / "m.pt", model, config, 4, list("abcd"))
    loaded = load_checkpoint(tmp_path / "m.pt")  # the hub cache is empty
    assert (
        isinstance(loaded, TorchvisionClassifier)
        and read_checkpoint(tmp_path / "m.pt").config == config
    )
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(loaded(images), model.eval()(images), atol=0, rtol=0)
    # a CA-Stream on it: built from its base config, without the base's weights
    stream = CAStream(loaded)
    ca_config = {"kind": "castream", "base": "m", "base_config": config}
    save_checkpoint(tmp_path / "ca.pt", stream, ca_config, 4, list("abcd"))
    ca = load_checkpoint(tmp_path / "ca.pt")
    torch.testing.assert_close(ca(images), stream.eval()(images), atol=0, rtol=0)


def test_castream_on_wrapped_archs_but_not_vgg():
    torch.manual_seed(0)
    base = build_model({"arch": "resnet18"}, 3).eval()
    model = CAStream(base)
    assert model.layout.positions[0] == ("normalize", "conv1", "bn1", "relu", "maxpool")
    assert {k for k in model.state_dict() if not k.startswith("stream.")} <= set(base.state_dict())
    images = torch.rand(2, 3, 64, 64)
    logits, attention = model.forward_with_attention(images)
    assert logits.shape == (2, 3) and attention.shape == (2, 2, 2)
    assert explain("gradcam", model, images, torch.tensor([0, 2])).shape == (2, 64, 64)
    with pytest.raises(ValueError, match=r"CA-Stream supports.*arch vgg16_bn"):
        CAStream(build_model({"arch": "vgg16_bn"}, 3))


def test_guided_backprop_relu6_and_gelu():
    torch.manual_seed(0)
    mobilenet = build_model({"arch": "mobilenet_v2"}, 3).eval()
    images = torch.rand(2, 3, 64, 64)
    assert explain("guided_backprop", mobilenet, images, torch.tensor([0, 1])).shape == (
        2,
        64,
        64,
    )
    convnext = build_model({"arch": "convnext_tiny"}, 3)
    with pytest.raises(ValueError, match="GELU"):
        GradAlignObjective().check(convnext)


def test_model_config_checks_for_archs():
    check_model_config("r", {"arch": "resnet50", "weights": "IMAGENET1K_V2", "optimizer": "adamw"})
    check_model_config("r", {"arch": "vgg16_bn", "weights": "some/file.pth"})
    with pytest.raises(ValueError, match=r"models\.r\.arch'.*unknown arch 'vit'"):
        check_model_config("r", {"arch": "vit"})
    with pytest.raises(ValueError, match=r"models\.r\.width'.*only arch resnet_small"):
        check_model_config("r", {"arch": "resnet18", "width": 8})
    with pytest.raises(ValueError, match=r"models\.r\.weights'.*unknown weights 'IMAGENET1K_V9'"):
        check_model_config("r", {"arch": "resnet18", "weights": "IMAGENET1K_V9"})
    with pytest.raises(ValueError, match=r"models\.r\.weights'.*no torchvision pretrained"):
        check_model_config("r", {"arch": "resnet_small", "weights": "IMAGENET1K_V1"})


def test_arch_capability_lists():
    from cambench.models import CASTREAM_BASE_ARCHS, GAP_FC_ARCHS

    torch.manual_seed(0)
    images = torch.rand(1, 3, 64, 64)
    for arch in ("resnet18", "mobilenet_v2"):  # GAP → Linear heads: CAM works
        assert arch in GAP_FC_ARCHS and arch in CASTREAM_BASE_ARCHS
        model = build_model({"arch": arch}, 3).eval()
        assert explain("cam", model, images, torch.tensor([1])).shape == (1, 64, 64)
    assert "convnext_tiny" not in GAP_FC_ARCHS
    assert "vgg16_bn" not in CASTREAM_BASE_ARCHS
    # every listed base builds a CA-Stream (the config check and the model agree)
    for arch in CASTREAM_BASE_ARCHS:
        config = {"arch": arch} if arch != "resnet_small" else {"width": 4, "blocks": [1] * 4}
        assert CAStream(build_model(config, 3).eval()).num_classes == 3


def test_config_accepts_a_castream_on_convnext_with_the_released_recipe():
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    from cambench.specs import parse_config

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["models"] = {
        "c": {"kind": "baseline", "arch": "convnext_tiny", "optimizer": "adamw", "lr": 1e-3},
        "ca": {
            "kind": "castream",
            "base": "c",
            "nesterov": False,
            "schedule": "step",
            "milestones": [30, 60, 90],
            "projection_bias_init": "default",
            "backbone_bn": "train",
        },
    }
    config["methods"] = {"gradcam": {}}
    config["sanity"] = {"randomization": False}
    # ConvNeXt's features are 1×1 at 32 px (refused: constant maps); 2×2 at 64 px
    config["dataset"]["image_size"] = 64
    validate(config, str(root / "workflow" / "schemas" / "config.schema.yaml"))
    spec = parse_config(config).models["ca"]
    assert spec.arch == "convnext_tiny" and spec.base == "c"
    config["models"]["ca"]["backbone_bn"] = "eval"
    with pytest.raises(Exception, match="'eval' is not one of"):
        validate(config, str(root / "workflow" / "schemas" / "config.schema.yaml"))


@pytest.mark.parametrize(
    ("name", "gap_linear"),
    [
        ("mobilenet_v2", True),
        ("efficientnet_b0", True),
        ("regnet_y_400mf", True),
        ("resnext50_32x4d", True),
        ("densenet121", False),  # a ReLU between the features and the pooling
        ("convnext_tiny", False),  # a LayerNorm between the pooling and the Linear
        ("mobilenet_v3_small", False),  # two Linear layers
    ],
)
def test_the_workflow_runs_cam_exactly_on_torchvision_models_with_a_gap_linear_head(
    name, gap_linear
):
    """``has_gap_linear_head`` (which model × method pairs the workflow plans) agrees
    with what ``cam`` finds on the model itself, on the default target layer."""
    import torchvision

    from cambench.models import has_gap_linear_head

    assert has_gap_linear_head(f"torchvision:{name}") is gap_linear
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=3).eval()
    images, targets = torch.rand(2, 3, 64, 64), torch.tensor([0, 2])
    if gap_linear:
        assert explain("cam", model, images, targets).shape == (2, 64, 64)
    else:
        with pytest.raises(ValueError, match="GAP|global-average-pooling"):
            explain("cam", model, images, targets)

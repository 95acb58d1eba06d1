"""CA-Stream: the attention pooling, the frozen backbone, checkpoints and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import perturb_batchnorm
from torch import nn
from torchvision.models import convnext_tiny, mobilenet_v2, resnet18, vgg11

from cambench.cli import main
from cambench.data.store import Split, write_split
from cambench.models import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from cambench.models.castream import (
    POSITIONS,
    CAStream,
    cross_attention_logits,
    cross_attention_pool,
)
from cambench.saliency import explain, minmax_normalize
from cambench.training import TrainConfig, train_model

BASE_CONFIG = {"kind": "baseline", "width": 4, "blocks": [1, 1, 1, 1]}


def _base(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return perturb_batchnorm(build_model(BASE_CONFIG, num_classes)).eval()


def test_attention_pooling_by_hand():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 3, 4, generator=gen)
    token = torch.randn(2, 5, generator=gen)
    z, logits = cross_attention_pool(features, token)
    tokens = features.flatten(2).transpose(1, 2)  # (B, p, d)
    expected_logits = torch.stack([tokens[b] @ token[b] for b in range(2)]) / math.sqrt(5)
    torch.testing.assert_close(logits, expected_logits)
    attention = torch.softmax(logits, 1)
    torch.testing.assert_close(attention.sum(1), torch.ones(2))
    torch.testing.assert_close(z, torch.stack([tokens[b].T @ attention[b] for b in range(2)]))
    torch.testing.assert_close(cross_attention_logits(features, token), logits)


def test_layout_and_frozen_backbone():
    model = CAStream(_base())
    assert model.default_target_layer == "layer4"
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"stream.q0"} | {
        f"stream.proj.{i}.{w}" for i in range(5) for w in ("weight", "bias")
    }
    dims = [4, 4, 8, 16, 32]
    assert [lin.in_features for lin in model.stream.proj] == dims
    assert [lin.out_features for lin in model.stream.proj] == [*dims[1:], 32]
    assert all(torch.equal(lin.bias, torch.zeros_like(lin.bias)) for lin in model.stream.proj)
    model.train()
    assert model.stream.training
    assert not any(
        m.training for name, m in model.named_modules() if name and not name.startswith("stream")
    )
    x = torch.rand(3, 3, 32, 32)
    logits, attention = model.forward_with_attention(x)
    assert logits.shape == (3, 10) and attention.shape == (3, 4, 4)
    assert torch.equal(logits, model(x))
    assert model.num_classes == 10


def _gap_stream(base: nn.Module) -> CAStream:
    """One block at layer4 fed a zero token (uniform attention: z = GAP(F)), W_L the
    identity with zero bias: the logits should be the base model's."""
    model = CAStream(base, blocks_at=["layer4"]).eval()
    with torch.no_grad():
        model.stream.q0.zero_()
        last = model.stream.proj[-1]
        last.weight.copy_(torch.eye(last.in_features))
    return model


def test_uniform_attention_is_global_average_pooling():
    """One block at layer4 fed a zero token attends uniformly: z = GAP(F). With
    W_L = identity and zero bias the logits are the base model's."""
    base = _base()
    model = _gap_stream(base)
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(model(x), base(x), atol=1e-6, rtol=0)
    assert torch.equal(model.forward_with_attention(x)[1], torch.zeros(4, 4, 4))
    # a non-zero token attends non-uniformly and changes the logits
    with torch.no_grad():
        model.stream.q0.normal_(1.0, 1.0)
        model.stream.proj[3].weight.normal_()
    assert (model(x) - base(x)).abs().max() > 1e-4


def test_skipped_positions_pass_the_token_on():
    model = CAStream(_base(), blocks_at=["layer2", "layer4"])
    assert model.blocks_at == ("layer2", "layer4")
    calls = []
    for position, module in zip(POSITIONS, model.stream.proj, strict=True):
        module.register_forward_hook(lambda m, i, o, p=position: calls.append(p))
    model(torch.rand(1, 3, 32, 32))
    assert calls == list(POSITIONS)
    with pytest.raises(ValueError, match="blocks_at must be"):
        CAStream(_base(), blocks_at=["layer5"])
    with pytest.raises(ValueError, match="blocks_at must be"):
        CAStream(_base(), blocks_at=[])


def test_torchvision_resnet_base_and_unsupported_bases():
    torch.manual_seed(0)
    model = CAStream(resnet18(num_classes=5).eval())
    x = torch.rand(2, 3, 64, 64)
    logits, attention = model.forward_with_attention(x)
    assert logits.shape == (2, 5) and attention.shape == (2, 2, 2)
    assert explain("gradcam", model, x, torch.tensor([0, 1])).shape == (2, 64, 64)
    with pytest.raises(ValueError, match="CA-Stream supports.*not VGG"):
        CAStream(vgg11(num_classes=5))


def _mobilenet_base(wrapped: bool) -> nn.Module:
    torch.manual_seed(0)
    base = build_model({"arch": "mobilenet_v2"}, 5) if wrapped else mobilenet_v2(num_classes=5)
    return perturb_batchnorm(base).eval()


@pytest.mark.parametrize("wrapped", [True, False], ids=["cambench-arch", "torchvision"])
def test_mobilenet_v2_base(wrapped):
    base = _mobilenet_base(wrapped)
    model = CAStream(base)
    assert model.default_target_layer == "features.18"
    assert [lin.in_features for lin in model.stream.proj] == [16, 24, 32, 96, 1280]
    # the backbone keeps the base's names and values; only the stream is trainable
    base_state = base.state_dict()
    state = model.state_dict()
    assert {k for k in state if not k.startswith("stream.")} == set(base_state)
    assert all(torch.equal(state[k], v) for k, v in base_state.items())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("stream.") for name in trainable)
    # train mode reaches the stream only: the classifier's dropout stays off
    model.train()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), atol=0, rtol=0)
        assert model.forward_with_attention(x)[1].shape == (3, 2, 2)
    assert model.num_classes == 5
    model.eval()
    # the default target layer is the base's last feature map (what `features` returns)
    with torch.no_grad():
        expected = base.features(base.normalize(x) if wrapped else x)
        got = CAStream(base).feature_maps(x)[-1]
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    maps = explain("gradcam", model, x, torch.tensor([0, 1, 4]))
    assert maps.shape == (3, 64, 64) and maps.amax() == 1


@pytest.mark.parametrize("wrapped", [True, False], ids=["cambench-arch", "torchvision"])
def test_mobilenet_v2_uniform_attention_is_global_average_pooling(wrapped):
    base = _mobilenet_base(wrapped)
    model = _gap_stream(base)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "convnext_tiny"])
def test_features_base_castream_checkpoint_round_trip(tmp_path, arch):
    base = _mobilenet_base(True) if arch == "mobilenet_v2" else _convnext_base(True)
    model = CAStream(base, blocks_at=["layer2", "layer4"])
    torch.nn.init.normal_(model.stream.q0)
    config = {"kind": "castream", "base": "m", "blocks_at": ["layer2", "layer4"]}
    config["base_config"] = {"kind": "baseline", "arch": arch}
    save_checkpoint(tmp_path / "ca.pt", model, config, 5, list("abcde"))
    loaded = load_checkpoint(tmp_path / "ca.pt")
    assert isinstance(loaded, CAStream) and loaded.blocks_at == ("layer2", "layer4")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), atol=0, rtol=0)


def _toy_split(n: int, seed: int) -> Split:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = (torch.rand(n, 3, 16, 16, generator=gen) * 100).to(torch.uint8)
    images[labels == 1, 0] += 120  # class 1 is redder
    return Split(images, labels, torch.zeros(n, 16, 16, dtype=torch.bool), ["a", "b"])


def test_training_changes_only_the_stream(tmp_path):
    base = _base(2)
    save_checkpoint(tmp_path / "base.pt", base, BASE_CONFIG, 2, ["a", "b"])
    reference = torch.load(tmp_path / "base.pt", weights_only=True)["state_dict"]
    model = CAStream(load_checkpoint(tmp_path / "base.pt"))
    stream_before = {k: v.clone() for k, v in model.stream.state_dict().items()}
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, seed=0)
    history = train_model(
        model, _toy_split(48, 0), _toy_split(16, 1), config, torch.device("cpu"), progress=False
    )
    state = model.state_dict()
    assert set(reference) == {k for k in state if not k.startswith("stream.")}
    for key, value in reference.items():
        assert torch.equal(state[key], value), key  # weights and batch-norm statistics
    assert all(
        not torch.equal(value, stream_before[key])
        for key, value in model.stream.state_dict().items()
    )
    assert {"train_loss", "train_ce", "grad_cosine", "lr", "seconds"} <= set(history[-1])
    assert "train_reg" not in history[-1]


def test_checkpoint_round_trip(tmp_path):
    base = _base()
    model = CAStream(base, blocks_at=["layer3", "layer4"])
    torch.nn.init.normal_(model.stream.q0)
    config = {"kind": "castream", "base": "b", "blocks_at": ["layer3", "layer4"]}
    with pytest.raises(ValueError, match="needs 'base_config'"):
        build_model(config, 10)
    config["base_config"] = BASE_CONFIG
    save_checkpoint(tmp_path / "ca.pt", model, config, 10, [str(i) for i in range(10)])
    loaded = load_checkpoint(tmp_path / "ca.pt")
    assert isinstance(loaded, CAStream) and loaded.blocks_at == ("layer3", "layer4")
    assert read_checkpoint(tmp_path / "ca.pt").config["base_config"] == BASE_CONFIG
    assert not any(p.requires_grad for n, p in loaded.named_parameters() if "stream" not in n)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x), atol=0, rtol=0)


def test_castream_attention_contract():
    model = CAStream(_base())
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 3, 5, 7, 9, 1])
    maps = explain("castream_attention", model, images, targets)
    assert maps.shape == (6, 32, 32) and maps.dtype == torch.float32
    assert maps.min() == 0 and maps.max() == 1
    logits = model.forward_with_attention(images)[1]
    expected = minmax_normalize(
        nn.functional.interpolate(logits.unsqueeze(1), size=32, mode="bilinear").squeeze(1)
    )
    torch.testing.assert_close(maps, expected)
    # class-agnostic and batch-independent
    assert torch.equal(maps, explain("castream_attention", model, images, targets.flip(0)))
    torch.testing.assert_close(
        explain("castream_attention", model, images[2:4], targets[2:4]), maps[2:4]
    )
    # gradient methods and CAMs run through the stream
    for method in ("gradcam", "guided_backprop", "gradient"):
        assert explain(method, model, images, targets).shape == (6, 32, 32)


def _parse_models(models: dict) -> None:
    """Validate (schema defaults filled) and parse the default config with ``models``."""
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    from cambench.specs import parse_config

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config.yaml").read_text())
    config.update(models=models, methods={"gradcam": {}}, sanity={"randomization": False})
    validate(config, str(root / "workflow" / "schemas" / "config.schema.yaml"))
    parse_config(config)


def test_model_config_checks():
    b = {"kind": "baseline", "width": 8}
    _parse_models({"b": b, "ca": {"kind": "castream", "base": "b", "blocks_at": ["layer4"]}})
    _parse_models({"ga": {"kind": "gradalign", "lambda": 0.1, "distance": "l1", "width": 8}})
    with pytest.raises(ValueError, match=r"models\.ca\.width'.*architecture from its base"):
        _parse_models({"b": b, "ca": {"kind": "castream", "base": "b", "width": 8}})
    with pytest.raises(ValueError, match=r"models\.b\.lambda'.*only gradalign"):
        _parse_models({"b": {"kind": "baseline", "lambda": 0.1}})
    with pytest.raises(ValueError, match=r"models\.b\.blocks_at'.*only castream"):
        _parse_models({"b": {"blocks_at": ["layer4"]}})


def test_train_command_builds_castream_from_a_base_checkpoint(tmp_path):
    write_split(tmp_path / "train.h5", _toy_split(32, 0))
    write_split(tmp_path / "test.h5", _toy_split(16, 1))
    common = ["--train", str(tmp_path / "train.h5"), "--test", str(tmp_path / "test.h5")]
    common += ["--no-progress", "--device", "cpu", "--threads", "1"]
    base = {**BASE_CONFIG, "epochs": 1, "batch_size": 16}
    argv = ["train", *common, "--model", json.dumps(base), "--name", "base"]
    argv += ["--out-model", str(tmp_path / "base.pt"), "--out-history", str(tmp_path / "base.json")]
    assert main(argv) == 0
    ca = {
        "kind": "castream",
        "base": "base",
        "blocks_at": ["layer4"],
        "epochs": 1,
        "batch_size": 16,
    }
    argv = ["train", *common, "--model", json.dumps(ca), "--name", "ca"]
    argv += ["--out-model", str(tmp_path / "ca.pt"), "--out-history", str(tmp_path / "ca.json")]
    assert main(argv) == 1  # --base is required
    assert main([*argv, "--base", str(tmp_path / "base.pt")]) == 0
    history = json.loads((tmp_path / "ca.json").read_text())
    assert history["kind"] == "castream"
    assert (
        history["trainable_parameters"]
        == 32 * 32
        + 32
        + sum(d_in * d_out + d_out for d_in, d_out in [(4, 4), (4, 8), (8, 16), (16, 32)])
        + 4
    )
    assert history["parameters"] > history["trainable_parameters"]
    assert "grad_cosine" in history["epochs"][0]
    model = load_checkpoint(tmp_path / "ca.pt")
    assert isinstance(model, CAStream)
    base_state = load_checkpoint(tmp_path / "base.pt").state_dict()
    for key, value in base_state.items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize("method", ["castream_attention", "guided_backprop", "gradient", "gradcam"])
def test_model_state_is_restored(method):
    model = CAStream(_base()).train()
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    explain(method, model, torch.rand(2, 3, 32, 32), torch.tensor([1, 2]))
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("method", ["castream_attention", "guided_backprop", "gradient"])
def test_cuda_matches_cpu(method):
    model = CAStream(_base()).eval()
    images, targets = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    cpu = explain(method, model, images, targets)
    maps = explain(method, model.cuda(), images.cuda(), targets.cuda())
    assert maps.device.type == "cuda"
    torch.testing.assert_close(maps.cpu(), cpu, atol=1e-3, rtol=0)


# --------------------------------------------------------------------------- options


def test_projection_bias_init_zeros_or_pytorch_default():
    torch.manual_seed(0)
    zeros = CAStream(_base(), projection_bias_init="zeros")
    torch.manual_seed(0)
    default = CAStream.from_config(_base(), {"projection_bias_init": "default"})
    for lin_zero, lin_default in zip(zeros.stream.proj, default.stream.proj, strict=True):
        assert torch.equal(lin_zero.bias, torch.zeros_like(lin_zero.bias))
        bound = 1 / math.sqrt(lin_default.in_features)  # nn.Linear: U(-1/√fan_in, 1/√fan_in)
        assert lin_default.bias.abs().max() <= bound
        assert lin_default.bias.abs().max() > bound / 10  # drawn, not zero
        # the option changes the bias only: the same seed gives the same weights
        assert torch.equal(lin_zero.weight, lin_default.weight)
    with pytest.raises(ValueError, match="projection_bias_init must be one of"):
        CAStream(_base(), projection_bias_init="ones")


def _one_training_step(model: CAStream) -> None:
    model.train()
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    loss = nn.functional.cross_entropy(model(x), torch.arange(8) % 10)
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()


def test_frozen_backbone_is_bit_identical_after_a_training_step():
    base = _base()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = CAStream(base, backbone_bn="frozen")
    stream_before = model.stream.q0.detach().clone()
    _one_training_step(model)
    state = model.state_dict()
    for key, value in before.items():  # parameters and buffers (BN statistics, counters)
        assert torch.equal(state[key], value), key
    assert not torch.equal(model.stream.q0, stream_before)


def test_backbone_bn_train_updates_statistics_but_not_weights():
    base = _base()
    params_before = {k: v.detach().clone() for k, v in base.named_parameters()}
    buffers_before = {k: v.clone() for k, v in base.named_buffers()}
    model = CAStream.from_config(base, {"backbone_bn": "train"})
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.training for m in norms)
    model.eval()
    assert not any(m.training for m in norms)
    _one_training_step(model)
    for key, value in params_before.items():
        assert torch.equal(model.get_parameter(key), value), key
    running = [k for k in buffers_before if k.endswith("running_mean")]
    assert all(not torch.equal(model.get_buffer(k), buffers_before[k]) for k in running)
    counters = [k for k in buffers_before if k.endswith("num_batches_tracked")]
    assert all(model.get_buffer(k) == buffers_before[k] + 1 for k in counters)
    with pytest.raises(ValueError, match="backbone_bn must be one of"):
        CAStream(_base(), backbone_bn="eval")


def test_backbone_bn_train_keeps_dropout_off():
    model = CAStream(_mobilenet_base(True), backbone_bn="train").train()
    assert model.classifier[0].training is False  # the classifier's dropout
    assert model.features[0][1].training  # a batch norm


def test_float64_base_gives_a_float64_model():
    base = _base().double()
    model = CAStream(base)
    assert all(
        t.dtype == torch.float64 for t in model.state_dict().values() if t.is_floating_point()
    )
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    logits, attention = model.forward_with_attention(x)
    assert logits.dtype == attention.dtype == torch.float64
    # the same model in float32 agrees to float32 precision
    single = CAStream(_base())
    single.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    torch.testing.assert_close(single(x.float()), logits.float(), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- ConvNeXt


def _convnext_base(wrapped: bool) -> nn.Module:
    torch.manual_seed(0)
    if wrapped:
        return build_model({"arch": "convnext_tiny"}, 5).eval()
    return convnext_tiny(num_classes=5).eval()


@pytest.mark.parametrize("wrapped", [True, False], ids=["cambench-arch", "torchvision"])
def test_convnext_base(wrapped):
    base = _convnext_base(wrapped)
    model = CAStream(base)
    assert model.default_target_layer == "features.7" and model.num_classes == 5
    dims = [96, 192, 384, 768, 768]
    assert [lin.in_features for lin in model.stream.proj] == dims
    assert [lin.out_features for lin in model.stream.proj] == [*dims[1:], 768]
    # the released ConvNeXt stream's init: truncated normal (std 0.02), zero bias
    weights = torch.cat([lin.weight.flatten() for lin in model.stream.proj])
    assert abs(float(weights.std()) - 0.02) < 0.001 and abs(float(weights.mean())) < 0.001
    assert all(torch.equal(lin.bias, torch.zeros_like(lin.bias)) for lin in model.stream.proj)
    # the backbone keeps the base's names and values; only the stream is trainable
    base_state = base.state_dict()
    state = model.state_dict()
    assert {k for k in state if not k.startswith("stream.")} == set(base_state)
    assert all(torch.equal(state[k], v) for k, v in base_state.items())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"stream.q0"} | {
        f"stream.proj.{i}.{w}" for i in range(5) for w in ("weight", "bias")
    }
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits, attention = model.forward_with_attention(x)
        assert logits.shape == (2, 5) and attention.shape == (2, 2, 2)
        # the stem is stride 4 and the positions after the downsamplings 8, 16, 32
        sizes = [f.shape[2:] for f in model.feature_maps(x)]
        assert sizes == [(16, 16), (8, 8), (4, 4), (2, 2), (2, 2)]
        # the default target layer is the base's last feature map (what `features` returns)
        expected = base.features(base.normalize(x) if wrapped else x)
        torch.testing.assert_close(model.feature_maps(x)[-1], expected, atol=0, rtol=0)
    assert explain("gradcam", model, x, torch.tensor([0, 4])).shape == (2, 64, 64)


def test_convnext_uniform_attention_is_global_average_pooling():
    """GAP → LayerNorm2d → Flatten → Linear in the base; the stream's zero token pools
    uniformly, so with W_L = identity the logits are the base's."""
    base = _convnext_base(True)
    model = _gap_stream(base)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), atol=1e-5, rtol=0)


def test_convnext_training_changes_only_the_stream():
    base = _convnext_base(True)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = CAStream(base, blocks_at=["layer3", "layer4"])
    q0 = model.stream.q0.detach().clone()
    model.train()
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    assert not torch.equal(model.stream.q0, q0)

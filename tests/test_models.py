"""Models: architecture conventions, checkpoints and deterministic training."""

from __future__ import annotations

import pytest
import torch

from cambench.data.store import Split
from cambench.models import build_model, load_checkpoint, read_checkpoint, save_checkpoint
from cambench.models.normalization import Normalize
from cambench.training import TrainConfig, train_model


def test_small_resnet_layout():
    model = build_model({"width": 8, "blocks": [2, 2, 2, 2]}, 7)
    assert isinstance(list(model.children())[0], Normalize)
    assert model.default_target_layer == "layer4"
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    assert model.features(x).shape == (2, 64, 4, 4)  # stride 8: stride-1 stem, no max-pool
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert len({id(m) for m in relus}) == len(relus) == 1 + 8 * 2


def test_normalization_is_inside_the_model():
    norm = Normalize([0.5, 0.25, 0.0], [0.5, 0.25, 1.0])
    x = torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x).flatten(), torch.tensor([1.0, 1.0, 0.25]))


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch 'vit'"):
        build_model({"arch": "vit"}, 10)


def test_checkpoint_round_trip(tmp_path):
    model = build_model({"width": 4, "blocks": [1, 1, 1, 1]}, 3)
    model.train()
    torch.nn.init.normal_(model.fc.weight)
    save_checkpoint(
        tmp_path / "m.pt", model, {"width": 4, "blocks": [1, 1, 1, 1]}, 3, ["a", "b", "c"]
    )
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert not loaded.training
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model.eval()(x), atol=0, rtol=0)
    info = read_checkpoint(tmp_path / "m.pt")
    assert info.class_names == ["a", "b", "c"] and info.num_classes == 3
    assert info.config == {"width": 4, "blocks": [1, 1, 1, 1]}
    assert not hasattr(loaded, "class_names")  # nothing rides on the module


def test_bad_checkpoint_names_the_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def _toy_split(n: int, seed: int) -> Split:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = (torch.rand(n, 3, 8, 8, generator=gen) * 100).to(torch.uint8)
    images[labels == 1, 0] += 120  # class 1 is redder
    return Split(images, labels, torch.zeros(n, 8, 8, dtype=torch.bool), ["a", "b"])


def test_training_is_deterministic_and_learns():
    train, test = _toy_split(64, 0), _toy_split(32, 1)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.05, seed=3)
    weights, histories = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model({"width": 4, "blocks": [1, 1, 1, 1]}, 2)
        histories.append(
            train_model(model, train, test, config, torch.device("cpu"), progress=False)
        )
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert [h["train_loss"] for h in histories[0]] == [h["train_loss"] for h in histories[1]]
    assert set(histories[0][0]) >= {"epoch", "train_loss", "train_acc", "test_acc", "lr", "seconds"}
    assert histories[0][-1]["test_acc"] > 0.9


def test_small_resnet_weights_from_a_file(tmp_path):
    config = {"width": 4, "blocks": [1, 1, 1, 1]}
    torch.manual_seed(0)
    source = build_model(config, 3)
    save_checkpoint(tmp_path / "src.pt", source, config, 3, ["a", "b", "c"])
    torch.manual_seed(1)
    model = build_model({**config, "weights": str(tmp_path / "src.pt")}, 3)  # a checkpoint
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(ValueError, match="resnet_small.*no torchvision pretrained weights"):
        build_model({**config, "weights": "IMAGENET1K_V1"}, 3)

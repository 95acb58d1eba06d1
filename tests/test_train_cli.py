"""`cambench train` builds and trains a CA-Stream on every supported base arch.

Each base is trained 1 epoch on 64 shapes images at 32 px, then its CA-Stream 1 epoch:
the point is that the command runs end to end whatever the base's classifier is
called (``fc``, ``classifier``) and that the stream leaves the base untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cambench.cli import main
from cambench.models import load_checkpoint
from cambench.models.castream import CAStream
from cambench.saliency import explain

NUM_CLASSES = 3
RUNTIME = ["--device", "cpu", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shapes")
    dataset = {
        "name": "shapes",
        "image_size": 32,
        "num_classes": NUM_CLASSES,
        "train_size": 64,
        "test_size": 16,
        "seed": 1,
    }
    train, test = root / "train.h5", root / "test.h5"
    argv = ["prepare-data", "--dataset", json.dumps(dataset)]
    assert main([*argv, "--out-train", str(train), "--out-test", str(test)]) == 0
    return train, test


def _train(splits, tmp_path: Path, name: str, model: dict, base: Path | None = None) -> Path:
    train, test = splits
    out = tmp_path / f"{name}.pt"
    argv = ["train", "--train", str(train), "--test", str(test), "--model", json.dumps(model)]
    argv += [
        "--name",
        name,
        "--out-model",
        str(out),
        "--out-history",
        str(tmp_path / f"{name}.json"),
    ]
    if base is not None:
        argv += ["--base", str(base)]
    assert main([*argv, *RUNTIME]) == 0
    return out


@pytest.mark.parametrize("arch", ["resnet_small", "resnet18", "mobilenet_v2", "convnext_tiny"])
def test_train_castream_on_each_base(splits, tmp_path, arch):
    base_config = {"kind": "baseline", "arch": arch, "epochs": 1, "batch_size": 32}
    if arch == "resnet_small":
        base_config.update(width=4, blocks=[1, 1, 1, 1])
    if arch == "convnext_tiny":
        base_config.update(optimizer="adamw", lr=1e-3)
    base_path = _train(splits, tmp_path, "base", base_config)
    ca_config = {"kind": "castream", "base": "base", "epochs": 1, "batch_size": 32}
    ca_path = _train(splits, tmp_path, "ca", ca_config, base=base_path)

    model = load_checkpoint(ca_path)
    assert isinstance(model, CAStream) and model.num_classes == NUM_CLASSES
    history = json.loads((tmp_path / "ca.json").read_text())
    assert history["kind"] == "castream" and len(history["epochs"]) == 1
    # the base's weights and statistics did not move
    base_state = load_checkpoint(base_path).state_dict()
    state = model.state_dict()
    assert {k for k in state if not k.startswith("stream.")} == set(base_state)
    assert all(torch.equal(state[k], v) for k, v in base_state.items())
    maps = explain("castream_attention", model, torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert maps.shape == (2, 32, 32)

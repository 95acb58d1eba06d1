"""Tests of the model parameter randomization sanity check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL_RESNET_CASCADE

from cambench.metrics.randomization import (
    cascade_blocks,
    randomization_test,
    reinitialize,
    spearman,
)


def test_spearman_by_hand_and_against_scipy():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0]])
    assert torch.allclose(spearman(a, b), torch.tensor([1.0, -1.0], dtype=torch.float64))
    # one swap among 4: rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    c = torch.tensor([[2.0, 1.0, 3.0, 4.0]])
    assert spearman(a[:1], c).item() == pytest.approx(0.8)
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (4, 6, 6), generator=g).float()  # many ties
    y = x + torch.randint(0, 3, (4, 6, 6), generator=g).float()
    ours = spearman(x, y)
    for i in range(4):
        ref = stats.spearmanr(x[i].flatten().numpy(), y[i].flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(ref, abs=1e-12)


def test_spearman_of_fakecam_like_and_constant_maps():
    fake = torch.ones(2, 5, 5)
    fake[:, 0, 0] = 0
    assert torch.equal(spearman(fake, fake.clone()), torch.ones(2, dtype=torch.float64))
    moved = torch.ones(2, 5, 5)
    moved[:, 4, 4] = 0  # the one distinct pixel elsewhere: a low correlation
    assert (spearman(fake, moved) < 0.1).all()
    zero = torch.zeros(1, 5, 5)
    assert spearman(zero, zero).item() == 1.0  # unchanged constant map
    assert spearman(fake[:1], zero).item() == 0.0  # became constant: nothing retained


def test_cascade_is_top_down_and_reinitialize_is_seeded(small_resnet):
    assert [name for name, _ in cascade_blocks(small_resnet)] == list(SMALL_RESNET_CASCADE)
    import copy

    a, b = copy.deepcopy(small_resnet), copy.deepcopy(small_resnet)
    state = torch.random.get_rng_state()
    reinitialize(a.layer4, seed=3)
    reinitialize(b.layer4, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    other = b.layer4.state_dict()
    for name, p in a.layer4.state_dict().items():
        assert torch.equal(p, other[name]), name
    assert not torch.equal(a.layer4[0].conv1.weight, small_resnet.layer4[0].conv1.weight)
    assert torch.equal(a.layer3[0].conv1.weight, small_resnet.layer3[0].conv1.weight)


def test_randomization_flags_fakecam_not_gradcam(small_resnet, images, targets):
    before = {k: v.clone() for k, v in small_resnet.state_dict().items()}
    fake = randomization_test(small_resnet, images, targets, "fakecam")
    grad = randomization_test(small_resnet, images, targets, "gradcam", batch_size=4)
    assert fake.blocks == ["none", "fc", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert fake.correlation.shape == (7, 6)
    assert torch.allclose(fake.mean(), torch.ones(7, dtype=torch.float64))
    assert fake.model_independent(0.99)
    assert not grad.model_independent(0.99)
    assert grad.mean()[1:].max() < 0.9  # Grad-CAM changes as soon as fc is randomized
    # the trained model is left as it was
    for key, value in small_resnet.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_randomization_named_blocks(small_resnet, images, targets):
    result = randomization_test(small_resnet, images, targets, "gradcam", blocks=["fc"])
    assert result.blocks == ["none", "fc"]
    with pytest.raises(ValueError, match="classifier"):
        randomization_test(small_resnet, images, targets, "gradcam", blocks=["classifier"])


@pytest.mark.parametrize("target", ["label", "predicted"])
def test_run_randomization_writes_the_csv(tmp_path, small_resnet, target):
    from cambench.data.store import Split, write_split
    from cambench.jobs import sanity
    from cambench.models import save_checkpoint

    g = torch.Generator().manual_seed(0)
    split = Split(
        images=torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=g),
        labels=torch.tensor([0, 1, 2, 3, 4]),
        masks=torch.zeros(5, 32, 32, dtype=torch.bool),
        class_names=[f"c{i}" for i in range(10)],
    )
    write_split(tmp_path / "test.h5", split)
    save_checkpoint(
        tmp_path / "m.pt", small_resnet, {"width": 8, "blocks": [1, 1, 1, 1]}, 10, split.class_names
    )
    out = tmp_path / "sanity" / "fakecam.csv"
    sanity.run(
        tmp_path / "m.pt",
        tmp_path / "test.h5",
        out,
        "fakecam",
        {},
        None,
        n_images=4,  # of 5, in batches of 3: the last batch is short
        target=target,
        batch_size=3,
        device=torch.device("cpu"),
        model_name="baseline",
        seed=0,
        threshold=0.99,
        statistics={"resamples": 50, "confidence": 0.95},
    )
    frame = pd.read_csv(out)
    assert list(frame["randomized"]) == ["none", *SMALL_RESNET_CASCADE]
    assert (frame["n_images"] == 4).all() and frame["model_independent"].all()
    np.testing.assert_allclose(frame["spearman"], 1.0)
    assert set(frame["model"]) == {"baseline"} and set(frame["method"]) == {"fakecam"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_randomization_on_cuda(small_resnet, images, targets):
    result = randomization_test(small_resnet.cuda(), images.cuda(), targets.cuda(), "gradcam")
    assert result.correlation.device.type == "cuda"
    fake = randomization_test(small_resnet, images.cuda(), targets.cuda(), "fakecam")
    assert fake.model_independent(0.99) and not result.model_independent(0.99)

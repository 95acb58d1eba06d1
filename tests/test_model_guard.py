"""Plug-ins that change the model they explain, and maps that overflow once stored
(issue: integrity, item 5). The saliency job checks cheap state (storage, version
counters, modes, hooks) after every method call and the weights' values at its start
and end; each fault is reproduced by a plug-in method on a tiny split and model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cambench.cache import read_saliency
from cambench.data.store import Split, write_split
from cambench.jobs import saliency
from cambench.models import load_checkpoint, save_checkpoint
from cambench.models.guard import changes, check_unchanged, fingerprint
from cambench.models.small_resnet import SmallResNet
from cambench.saliency import explain, register

CONFIG = {"kind": "baseline", "arch": "resnet_small", "width": 4, "blocks": [1, 1, 1, 1]}
N, SIZE, BATCH = 16, 16, 4


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_split(
        tmp_path / "test.h5",
        Split(
            images=torch.from_numpy(rng.integers(0, 256, (N, 3, SIZE, SIZE), dtype=np.uint8)),
            labels=torch.from_numpy(rng.integers(0, 4, N)),
            masks=torch.from_numpy(rng.random((N, SIZE, SIZE)) > 0.5),
            class_names=["a", "b", "c", "d"],
            attrs={"dataset": "shapes", "split": "test"},
        ),
    )
    torch.manual_seed(0)
    model = SmallResNet(num_classes=4, width=4, blocks=(1, 1, 1, 1))
    save_checkpoint(tmp_path / "model.pt", model, CONFIG, 4, ["a", "b", "c", "d"])
    return tmp_path


def _run(tmp_path: Path, method: str, out: Path, target: str = "label") -> None:
    saliency.run(
        model_path=tmp_path / "model.pt",
        data_path=tmp_path / "test.h5",
        out_path=out,
        method=method,
        params={},
        layer=None,
        n_images=N,
        shards=1,
        shard=0,
        batch_size=BATCH,
        target=target,
        device=torch.device("cpu"),
        model_name="baseline",
        progress=False,
    )


def _plugin(name: str, edit, at_call: int = 1) -> None:
    """A plug-in method whose maps depend on the model, and which runs ``edit(model,
    images)`` on its ``at_call``-th call (0-based), as a faulty plug-in would."""
    calls = {"n": 0}

    @register(name)
    def method(model, images, targets, layer):
        if calls["n"] == at_call:
            edit(model, images)
        calls["n"] += 1
        with torch.no_grad():
            logits = model(images)
        return images.mean(1) * logits.gather(1, targets[:, None]).exp()[:, :, None]


def _conv1(model: nn.Module) -> torch.Tensor:
    return next(p for k, p in model.named_parameters() if k.endswith("conv1.weight"))


def _bn(model: nn.Module) -> nn.BatchNorm2d:
    return next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def _edit_through_data(model, images):
    _conv1(model).data.mul_(1.5)  # .data has its own version counter: no cheap trace


def _train_mode_batch_norm(model, images):
    bn = _bn(model)  # the kernel updates the running stats without a version bump
    x = torch.randn(4, bn.num_features, 3, 3)
    F.batch_norm(x, bn.running_mean, bn.running_var, training=True, momentum=0.5)


def _train_forward_then_eval(model, images):
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()  # the mode is restored; the statistics are not


def _weights_in_place(model, images):
    with torch.no_grad():
        _conv1(model).add_(0.1)


def _hook_left_behind(model, images):
    _conv1_module = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    _conv1_module.register_forward_hook(lambda m, i, o: o * 2)


@pytest.mark.parametrize(
    ("edit", "when", "phrase"),
    [
        (_weights_in_place, "(batch 1)", "conv1.weight changed"),
        (_train_forward_then_eval, "(batch 1)", "num_batches_tracked changed"),
        (_hook_left_behind, "(batch 1)", "hook(s)"),
        (_edit_through_data, "(job end)", "conv1.weight changed"),
        (_train_mode_batch_norm, "(job end)", "running_mean changed"),
    ],
)
@pytest.mark.parametrize("target", ["label", "predicted"])
def test_a_plugin_that_changes_the_model_fails_naming_it(
    setup, registry, edit, when, phrase, target
):
    _plugin("meddler", edit)
    out = setup / "out.h5"
    with pytest.raises(ValueError, match=r"saliency method 'meddler'.*changed the model") as err:
        _run(setup, "meddler", out, target)
    message = str(err.value)
    assert when in message and phrase in message
    assert Path(__file__).name in message  # the plug-in's file
    assert not out.exists()
    assert not list(setup.glob(".out.h5*")), "the temporary file would be resumed"


def test_the_same_plugin_without_the_fault_matches_explain(setup, registry):
    """The guard reads the model only: a well-behaved plug-in's stored maps equal
    explain's on the checkpoint's model, batch by batch (float16 as stored)."""
    _plugin("polite", lambda model, images: None)
    out = setup / "out.h5"
    _run(setup, "polite", out, target="predicted")
    model = load_checkpoint(setup / "model.pt")
    from cambench.data.store import read_split

    with read_split(setup / "test.h5") as split:
        images = split.float_images()
    with torch.no_grad():
        predicted = model(images).argmax(1)
    expected = torch.cat(
        [
            explain("polite", model, images[i : i + BATCH], predicted[i : i + BATCH])
            for i in range(0, N, BATCH)
        ]
    )
    cache = read_saliency(out)
    assert torch.equal(cache.target, predicted)
    assert torch.equal(cache.maps, expected.half().float())


def test_float64_maps_that_overflow_in_the_cast_are_an_error(setup, registry):
    @register("overflow", relu=False)
    def overflow(model, images, targets, layer):
        raw = images.mean(1).double()
        raw[1, 2, 3] = 1e300  # finite in float64, inf in float32: the map becomes NaN
        return raw

    out = setup / "out.h5"
    with pytest.raises(ValueError, match=rf"{out}: maps 0–3 are not finite once stored"):
        _run(setup, "overflow", out)
    assert not out.exists()


def test_cheap_fingerprint_misses_data_edits_that_the_full_one_catches():
    """Why the job takes both: version counters miss an edit through ``.data``; the
    weights' sums and norms catch it."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    full, cheap = fingerprint(model), fingerprint(model, values=False)
    model[0].weight.data[0, 0, 0, 0] += 1.0
    assert changes(cheap, fingerprint(model, values=False)) == []
    assert changes(full, fingerprint(model)) == ["parameter 0.weight changed"]
    with pytest.raises(ValueError, match="the plug-in changed the model it explains"):
        check_unchanged(full, model, "the plug-in")
    check_unchanged(cheap, model, "the plug-in")  # passes: the cheap part cannot see it


def test_the_per_call_check_is_much_cheaper_than_the_full_fingerprint():
    """The per-call part reads no weights: on a model with large weights it costs a
    small fraction of the full fingerprint (generous bound; measured in benchmarks/)."""
    model = nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)])

    def best(fn) -> float:
        times = []
        for _ in range(5):
            tic = time.perf_counter()
            fn()
            times.append(time.perf_counter() - tic)
        return min(times)

    t_full = best(lambda: fingerprint(model))
    t_cheap = best(lambda: fingerprint(model, values=False))
    assert t_cheap < t_full / 3

"""The training loop: recipe options, augmentation, and resuming after a kill."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from cambench.cli import main
from cambench.data.store import Split, write_split
from cambench.models import build_model
from cambench.specs import check_model_entry
from cambench.training import (
    CrossEntropyObjective,
    GradAlignObjective,
    TrainConfig,
    TrainConfigError,
    build_optimizer,
    effective_augment,
    lr_factor,
    optimizer_record,
    train_model,
    uses_nesterov,
)
from cambench.training import loop as loop_module

CPU = torch.device("cpu")
SMALL = {"width": 4, "blocks": [1, 1, 1, 1]}


def _toy_split(n: int, seed: int, size: int = 8) -> Split:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = (torch.rand(n, 3, size, size, generator=gen) * 100).to(torch.uint8)
    images[labels == 1, 0] += 120  # class 1 is redder
    return Split(images, labels, torch.zeros(n, size, size, dtype=torch.bool), ["a", "b"])


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(SMALL, 2)


# --------------------------------------------------------------------------- recipe


def test_cosine_schedule_with_warmup():
    config = TrainConfig(epochs=4, warmup_epochs=1, lr=1.0)
    spe = 10
    factors = [lr_factor(config, s, spe) for s in range(40 + 1)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == pytest.approx(1.0)
    assert factors[25] == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 30)))
    assert factors[40] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    plain = TrainConfig(epochs=2)
    assert lr_factor(plain, 0, 5) == 1.0 and lr_factor(plain, 5, 5) == pytest.approx(0.5)


def test_step_schedule():
    config = TrainConfig(epochs=9, schedule="step", step_size=3, gamma=0.5)
    spe = 4
    assert [lr_factor(config, e * spe, spe) for e in range(9)] == pytest.approx(
        [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    )
    warm = TrainConfig(epochs=9, schedule="step", step_size=3, gamma=0.5, warmup_epochs=0.5)
    assert lr_factor(warm, 0, spe) == pytest.approx(0.5)  # 2 warmup steps
    assert lr_factor(warm, 2, spe) == 1.0


def test_step_schedule_with_milestones():
    """Epoch e trains at gamma ** #{m <= e}, as MultiStepLR stepped once per epoch."""
    config = TrainConfig(epochs=8, schedule="step", milestones=[2, 5], gamma=0.1)
    spe = 3
    factors = [lr_factor(config, s, spe) for s in range(8 * spe)]
    per_epoch = [1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    assert factors == pytest.approx([f for f in per_epoch for _ in range(spe)])
    # torch's MultiStepLR gives the same per-epoch learning rates
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 5], gamma=0.1)
    torch_lrs = []
    for _ in range(8):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert torch_lrs == pytest.approx(per_epoch)
    with pytest.raises(TrainConfigError, match="only the step schedule"):
        TrainConfig(milestones=[2])


def test_released_recipe_history_records_the_schedule():
    """The CA-Stream paper's recipe (plain momentum SGD, step schedule at milestones)
    trains, and the per-epoch history holds the learning rate after each epoch."""
    config = TrainConfig(
        epochs=3,
        batch_size=16,
        lr=0.1,
        nesterov=False,
        weight_decay=1e-4,
        schedule="step",
        milestones=[1, 2],
        gamma=0.5,
    )
    history = train_model(
        _model(), _toy_split(32, 0), _toy_split(16, 1), config, CPU, progress=False
    )
    # after epoch e the next step is in epoch e (0-based): 0.1 · 0.5^#{m <= e}
    assert [entry["lr"] for entry in history] == pytest.approx([0.05, 0.025, 0.025])
    record = optimizer_record(config)
    assert record["nesterov"] is False and record["milestones"] == [1, 2]


def _one_sgd_step(config: TrainConfig) -> float:
    """p = 1 under the loss p²/2 (gradient p), two steps; the final p."""
    p = torch.nn.Parameter(torch.ones(1))
    opt = build_optimizer([p], config)
    for _ in range(2):
        opt.zero_grad()
        (p**2 / 2).sum().backward()
        opt.step()
    return float(p)


def test_nesterov_default_and_plain_momentum():
    base = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}
    # by hand: plain momentum b1 = g1 = 1, p1 = 0.9; g2 = 0.9, b2 = 0.9·1 + 0.9 = 1.8,
    # p2 = 0.9 - 0.18 = 0.72. Nesterov steps along g + 0.9·b: p1 = 1 - 0.1·1.9 = 0.81;
    # g2 = 0.81, b2 = 0.9 + 0.81 = 1.71, p2 = 0.81 - 0.1·(0.81 + 0.9·1.71) = 0.5751
    assert _one_sgd_step(TrainConfig(**base, nesterov=False)) == pytest.approx(0.72)
    assert _one_sgd_step(TrainConfig(**base, nesterov=True)) == pytest.approx(0.5751)
    assert _one_sgd_step(TrainConfig(**base)) == pytest.approx(0.5751)  # default: Nesterov
    assert not uses_nesterov(TrainConfig(momentum=0.0))
    assert not uses_nesterov(TrainConfig(optimizer="adamw", lr=1e-3))
    for bad in ({"nesterov": True, "momentum": 0.0}, {"nesterov": True, "optimizer": "adamw"}):
        with pytest.raises(TrainConfigError, match="needs optimizer sgd with momentum > 0"):
            TrainConfig(**bad)


def test_optimizer_record_resolves_defaults():
    assert optimizer_record(TrainConfig(epochs=7, schedule="step", step_size=3)) == {
        "optimizer": "sgd",
        "lr": 0.1,
        "weight_decay": 5e-4,
        "schedule": "step",
        "warmup_epochs": 0,
        "momentum": 0.9,
        "nesterov": True,
        "milestones": [3, 6],
        "gamma": 0.1,
    }
    record = optimizer_record(TrainConfig(optimizer="adamw", lr=1e-3))
    assert record["optimizer"] == "adamw" and "nesterov" not in record
    assert "milestones" not in record and record["schedule"] == "cosine"


def test_optimizers():
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = build_optimizer(params, TrainConfig(momentum=0.9, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    adamw = build_optimizer(params, TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["weight_decay"] == 0.05


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("optimizer", "adam"),
        ("schedule", "linear"),
        ("epochs", 0),
        ("warmup_epochs", 11),
        ("label_smoothing", 1.0),
        ("amp", "yes"),
        ("lr", 0),
        ("nesterov", "yes"),
        ("milestones", [3, 2]),
        ("milestones", 30),
    ],
)
def test_bad_training_keys_are_named(key, value):
    with pytest.raises(TrainConfigError) as err:
        TrainConfig.from_model_config({key: value})
    assert err.value.key == key
    with pytest.raises(ValueError, match=rf"config key 'models\.m\.{key}'"):
        check_model_entry("m", {key: value})


def test_label_smoothing():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    model = torch.nn.Identity()
    loss, _, parts = CrossEntropyObjective(label_smoothing=0.1)(model, logits, labels)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels, label_smoothing=0.1))
    with pytest.raises(ValueError, match="label_smoothing"):
        train_model(
            _model(),
            _toy_split(8, 0),
            _toy_split(8, 1),
            TrainConfig(epochs=1, label_smoothing=0.1),
            CPU,
            progress=False,
            objective=GradAlignObjective(),
        )


def test_augmentation_config_and_hflip_override():
    assert effective_augment(TrainConfig(), None)["hflip"] is True  # historical default
    assert effective_augment(TrainConfig(hflip=False), None)["hflip"] is False
    given = {"hflip": False, "crop_padding": 2}
    assert effective_augment(TrainConfig(), given)["crop_padding"] == 2
    assert effective_augment(TrainConfig(), given)["hflip"] is False
    assert effective_augment(TrainConfig(hflip=True), given)["hflip"] is True


def test_loop_augments_every_batch(monkeypatch):
    calls = []
    original = loop_module.augment_batch

    def spy(images, config, generator):
        calls.append((tuple(images.shape), dict(config)))
        return original(images, config, generator)

    monkeypatch.setattr(loop_module, "augment_batch", spy)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05)
    augment = {"hflip": True, "crop_padding": 2, "padding_mode": "reflect"}
    train_model(_model(), _toy_split(40, 0), _toy_split(8, 1), config, CPU, False, augment=augment)
    assert len(calls) == 2 * 3
    assert calls[-1][0] == (8, 3, 8, 8)
    assert calls[0][1]["crop_padding"] == 2 and calls[0][1]["padding_mode"] == "reflect"


def test_recipe_learns_and_cuda_options_are_ignored_on_cpu():
    train, test = _toy_split(64, 0), _toy_split(32, 1)
    base = dict(
        epochs=3,
        batch_size=16,
        optimizer="adamw",
        lr=1e-2,
        weight_decay=0.01,
        schedule="step",
        step_size=2,
        warmup_epochs=1,
        label_smoothing=0.1,
    )
    weights = []
    for extra in ({}, {"amp": True, "channels_last": True}):
        model = _model()
        history = train_model(model, train, test, TrainConfig(**base, **extra), CPU, progress=False)
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert history[-1]["test_acc"] > 0.9
    assert history[0]["lr"] == pytest.approx(1e-2)  # after the warmup epoch
    assert history[-1]["lr"] == pytest.approx(1e-3)  # stepped at epoch 2
    assert {
        "epoch",
        "train_loss",
        "train_ce",
        "train_acc",
        "test_acc",
        "grad_cosine",
        "lr",
        "seconds",
    } <= set(history[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_bf16_channels_last():
    train, test = _toy_split(64, 0, size=16), _toy_split(32, 1, size=16)
    model = _model()
    config = TrainConfig(epochs=3, batch_size=16, lr=0.05)
    seen = []
    model.layer1.register_forward_hook(lambda m, i, o: seen.append((o.dtype, o.is_contiguous())))
    history = train_model(model, train, test, config, torch.device("cuda"), progress=False)
    assert (torch.bfloat16, False) in seen  # autocast, channels-last activations
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert history[-1]["test_acc"] > 0.9
    assert all(p.is_contiguous() and p.dtype == torch.float32 for p in model.parameters())
    ga = _model()
    history = train_model(
        ga, train, test, config, torch.device("cuda"), False, objective=GradAlignObjective()
    )
    assert all(math.isfinite(h["train_reg"]) for h in history)


# --------------------------------------------------------------------------- resuming


class _Interrupt(Exception):
    pass


def test_resume_in_process_is_bit_identical(tmp_path, monkeypatch):
    """Gradient-aligned training with AdamW, warmup, step schedule, label smoothing and
    padded crops, interrupted after epoch 2 of 3 and resumed."""
    train, test = _toy_split(48, 0), _toy_split(16, 1)
    config = TrainConfig(
        epochs=3,
        batch_size=16,
        optimizer="adamw",
        lr=3e-3,
        schedule="step",
        step_size=1,
        gamma=0.5,
        warmup_epochs=1,
        label_smoothing=0.1,
    )
    augment = {"hflip": True, "crop_padding": 2}

    def run(resume, **kwargs):
        model = _model()
        objective = GradAlignObjective(lam=0.5, label_smoothing=0.1)
        history = train_model(
            model, train, test, config, CPU, False, objective, augment, resume, **kwargs
        )
        return model, history

    reference, reference_history = run(None)
    resume = tmp_path / "m.pt.resume.pt"
    original = loop_module.gradient_cosine
    calls = []

    def interrupt_in_epoch_3(*args):
        calls.append(1)
        if len(calls) == 3:
            raise _Interrupt
        return original(*args)

    monkeypatch.setattr(loop_module, "gradient_cosine", interrupt_in_epoch_3)
    with pytest.raises(_Interrupt):
        run(resume)
    monkeypatch.setattr(loop_module, "gradient_cosine", original)
    assert torch.load(resume, weights_only=True)["epoch"] == 2
    resumed, history = run(resume)
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in reference_history]
    # a finished resume file returns at once; another setup's file is ignored
    again, _ = run(resume)
    for key, value in reference.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    other = TrainConfig(**{**config.__dict__, "lr": 1e-3})
    model = _model()
    history = train_model(
        model,
        train,
        test,
        other,
        CPU,
        False,
        GradAlignObjective(lam=0.5, label_smoothing=0.1),
        augment,
        resume,
    )
    assert len(history) == 3 and history[0]["lr"] == pytest.approx(0.5e-3)  # trained anew


def _train_args(tmp_path, out: str) -> list[str]:
    model = {"kind": "baseline", "arch": "resnet_small", **SMALL, "epochs": 6, "batch_size": 16}
    model.update(lr=0.05, seed=2)
    return [
        "train",
        "--train",
        str(tmp_path / "train.h5"),
        "--test",
        str(tmp_path / "test.h5"),
        "--model",
        json.dumps(model),
        "--name",
        out,
        "--augment",
        json.dumps({"hflip": True, "crop_padding": 2}),
        "--out-model",
        str(tmp_path / f"{out}.pt"),
        "--out-history",
        str(tmp_path / f"{out}.json"),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--no-progress",
    ]


def test_killed_training_resumes_bit_identical(tmp_path, capsys):
    """SIGKILL a `cambench train` process after an epoch's resume file appears, rerun
    the command, and compare with an uninterrupted run. The reference run and the
    rerun happen in this process (one thread, as the killed process), which saves
    two interpreter and torch start-ups."""
    write_split(tmp_path / "train.h5", _toy_split(160, 0, size=16))
    write_split(tmp_path / "test.h5", _toy_split(32, 1, size=16))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen(
        [sys.executable, "-m", "cambench", *_train_args(tmp_path, "killed")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    resume = tmp_path / "killed.pt.resume.pt"
    try:
        deadline = time.monotonic() + 120
        while not resume.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read().decode()
    assert not (tmp_path / "killed.pt").exists()
    epoch = torch.load(resume, weights_only=True)["epoch"]
    assert 1 <= epoch < 6
    assert main(_train_args(tmp_path, "full")) == 0
    capsys.readouterr()
    assert main(_train_args(tmp_path, "killed")) == 0
    assert f"resuming from {resume} after epoch {epoch}" in capsys.readouterr().out
    assert not resume.exists()  # removed once the outputs are written
    assert not (tmp_path / "full.pt.resume.pt").exists()
    a = torch.load(tmp_path / "full.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed.pt", weights_only=True)["state_dict"]
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ha = json.loads((tmp_path / "full.json").read_text())["epochs"]
    hb = json.loads((tmp_path / "killed.json").read_text())["epochs"]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in ha] == [
        {k: v for k, v in h.items() if k != "seconds"} for h in hb
    ]

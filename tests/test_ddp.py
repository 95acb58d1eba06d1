"""Data-parallel training: 2 torchrun processes (gloo, CPU) against one process with
the same global batch.

The reference is the single-process loop, run here. The 2-process runs go through
torchrun: the gradient-aligned run below runs this file as its worker script (a
batch-norm-free ReLU net, so per-rank batch norm cannot make the runs differ), the
CLI run launches ``cambench train`` with ``gpus: 2`` on a CA-Stream model (its
backbone's batch norm is frozen, so only the stream trains, like one process).

Tolerance: the two runs differ only in floating-point summation order (each rank sums
its half of a batch, then the all-reduce adds the halves). Measured after 2 epochs
(14 steps) of the gradient-aligned run: per-step losses within 1e-7 relative, weights
within 1e-7 absolute (they move by up to 0.25). The tolerances, 1e-5 on both, leave a
100x margin yet fail for any real difference: a per-rank sample order, or the last
batch's gradient weighted 1/2 instead of by its share, moves losses by 4-6 % and
weights by 0.05.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

from cambench.cli import _train_argv, build_parser, main
from cambench.data.shapes import CLASS_NAMES, generate_shapes
from cambench.data.store import Split, read_split, write_split
from cambench.models import build_model, save_checkpoint
from cambench.specs import check_model_entry
from cambench.training import (
    GradAlignObjective,
    TrainConfig,
    TrainConfigError,
    distributed,
    train_model,
)
from cambench.training import loop as loop_module

CPU = torch.device("cpu")
CLASSES = 4
TRAIN_SIZE = 193  # 6 batches of 32 and a last batch of 1: rank 1's part of it is empty
BATCH = 32
AUGMENT = {"hflip": True, "crop_padding": 2}
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5
INTERRUPT_AT_STEP = 10  # the 3rd step of epoch 2 (7 steps per epoch)


def _split(n: int, seed: int) -> Split:
    images, labels, masks = generate_shapes(n, image_size=16, num_classes=CLASSES, seed=seed)
    return Split(images, labels, masks, list(CLASS_NAMES[:CLASSES]))


def _net() -> nn.Module:
    """A small ReLU network without batch norm (guided backprop applies)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, CLASSES),
    )


def _config(gpus: int) -> TrainConfig:
    return TrainConfig(
        epochs=2,
        batch_size=BATCH,
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        warmup_epochs=0.5,
        label_smoothing=0.1,
        gpus=gpus,
    )


class RecordingGradAlign(GradAlignObjective):
    """The gradient-aligned objective, recording each step's (loss, batch images)."""

    steps: ClassVar[list[tuple[float, int]]] = []

    def __call__(self, model, images, labels):
        loss, logits, parts = super().__call__(model, images, labels)
        RecordingGradAlign.steps.append((loss.item(), len(labels)))
        return loss, logits, parts


def _objective() -> RecordingGradAlign:
    return RecordingGradAlign(lam=0.5, label_smoothing=0.1)


def _train(folder: Path, gpus: int, resume: Path | None = None):
    model = _net()
    train, test = read_split(folder / "train.h5"), read_split(folder / "test.h5")
    history = train_model(
        model, train, test, _config(gpus), CPU, False, _objective(), AUGMENT, resume
    )
    return model, history


class _Interrupt(Exception):
    pass


def _worker(folder: Path) -> None:
    """One torchrun rank: a full run, then a run interrupted in epoch 2 and resumed."""
    torch.set_num_threads(1)
    with distributed.process_group(CPU):
        rank = distributed.current_world().rank
        model, history = _train(folder, 2, folder / "full.resume.pt")
        torch.save(
            {"state": model.state_dict(), "history": history, "steps": RecordingGradAlign.steps},
            folder / f"full-rank{rank}.pt",
        )
        original, calls = loop_module._augment_part, []

        def interrupt(*args):  # once per step on every rank, before the step's collective
            calls.append(1)
            if len(calls) == INTERRUPT_AT_STEP:
                raise _Interrupt
            return original(*args)

        loop_module._augment_part = interrupt
        with pytest.raises(_Interrupt):
            _train(folder, 2, folder / "cut.resume.pt")
        loop_module._augment_part = original
        epoch = torch.load(folder / "cut.resume.pt", weights_only=True)["epoch"]
        model, history = _train(folder, 2, folder / "cut.resume.pt")
        torch.save(
            {"state": model.state_dict(), "history": history, "cut_after": epoch},
            folder / f"resumed-rank{rank}.pt",
        )


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _assert_close_histories(got, expected):
    assert [h["epoch"] for h in got] == [h["epoch"] for h in expected]
    for a, b in zip(got, expected, strict=True):
        for key in ("train_loss", "train_ce", "train_reg", "train_acc", "lr"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=LOSS_RTOL), key


def _assert_close_states(got, expected):
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=WEIGHT_ATOL)


@pytest.fixture
def data(tmp_path):
    write_split(tmp_path / "train.h5", _split(TRAIN_SIZE, 0))
    write_split(tmp_path / "test.h5", _split(64, 1))
    return tmp_path


def test_two_processes_train_gradalign_like_one(data):
    """Double backprop, warmup, label smoothing, padded crops and flips, an empty part
    of the last batch; per-step losses, history and weights against one process; a
    run interrupted in epoch 2 and resumed on 2 processes ends with the same weights."""
    start = time.monotonic()
    proc = _torchrun(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + [__file__, str(data)],
        data,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"2-process runs: {time.monotonic() - start:.1f} s")
    RecordingGradAlign.steps = []
    reference, reference_history = _train(data, 1)
    single_steps = RecordingGradAlign.steps
    ranks = [torch.load(data / f"full-rank{r}.pt", weights_only=False) for r in (0, 1)]

    # every rank took its half of every global batch (the last batch: 1 image, rank 0)
    counts = [[n for _, n in rank["steps"]] for rank in ranks]
    assert counts[0] == [16] * 6 + [1] + [16] * 6 + [1]
    assert counts[1] == [16] * 6 + [16] * 6  # no forward on its empty part
    # the per-step loss of the global batch equals one process's
    single = [loss for loss, _ in single_steps]
    assert [n for _, n in single_steps] == [32] * 6 + [1] + [32] * 6 + [1]
    merged, r1 = [], iter(ranks[1]["steps"])
    for loss0, n0 in ranks[0]["steps"]:
        if n0 == 1:
            merged.append(loss0)
        else:
            loss1, n1 = next(r1)
            merged.append((loss0 * n0 + loss1 * n1) / (n0 + n1))
    assert merged == pytest.approx(single, rel=LOSS_RTOL)
    assert single[0] != pytest.approx(single[1], rel=1e-3)  # the curve is not flat

    # rank 0's history and both replicas' weights match the single-process run
    _assert_close_histories(ranks[0]["history"], reference_history)
    assert _without_seconds(ranks[1]["history"]) == _without_seconds(ranks[0]["history"])
    _assert_close_states(ranks[0]["state"], reference.state_dict())
    for key, value in ranks[0]["state"].items():
        assert torch.equal(ranks[1]["state"][key], value), key

    # interrupted after epoch 1, resumed: bit-identical to the uninterrupted 2-process run
    resumed = torch.load(data / "resumed-rank0.pt", weights_only=False)
    assert resumed["cut_after"] == 1
    for key, value in ranks[0]["state"].items():
        assert torch.equal(resumed["state"][key], value), key
    assert _without_seconds(resumed["history"]) == _without_seconds(ranks[0]["history"])


def _cli_args(folder: Path, name: str, gpus: int, threads: int) -> list[str]:
    model = {"kind": "castream", "base": "base", "epochs": 2, "batch_size": BATCH, "lr": 0.1}
    return [
        "train",
        "--train",
        str(folder / "train.h5"),
        "--test",
        str(folder / "test.h5"),
        "--model",
        json.dumps({**model, "gpus": gpus}),
        "--name",
        name,
        "--base",
        str(folder / "base.pt"),
        "--augment",
        json.dumps(AUGMENT),
        "--out-model",
        str(folder / f"{name}.pt"),
        "--out-history",
        str(folder / f"{name}.json"),
        "--device",
        "cpu",
        "--threads",
        str(threads),
        "--no-progress",
    ]


def test_cambench_train_with_gpus_2_launches_torchrun(data):
    """`cambench train` of a CA-Stream model with gpus: 2 (2 gloo processes of 1
    thread) writes the outputs once, like a one-process run."""
    torch.manual_seed(0)
    base_config = {"width": 4, "blocks": [1, 1, 1, 1]}
    base = build_model(base_config, CLASSES)
    save_checkpoint(data / "base.pt", base, base_config, CLASSES, list(CLASS_NAMES[:CLASSES]))

    start = time.monotonic()
    proc = _torchrun([sys.executable, "-m", "cambench", *_cli_args(data, "two", 2, 2)], data)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"cambench train, 2 processes: {time.monotonic() - start:.1f} s")
    assert "torch.distributed.run --standalone --nproc_per_node=2 -m cambench train" in proc.stdout
    assert "2 training processes on cpu, 1 thread(s) each" in proc.stdout
    assert proc.stdout.count("two: test accuracy") == 1  # rank 0 alone reports
    assert not (data / "two.pt.resume.pt").exists()
    assert main(_cli_args(data, "one", 1, 1)) == 0

    two = json.loads((data / "two.json").read_text())
    one = json.loads((data / "one.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    _assert_close_histories(two["epochs"], one["epochs"])
    a = torch.load(data / "two.pt", weights_only=True)["state_dict"]
    b = torch.load(data / "one.pt", weights_only=True)["state_dict"]
    _assert_close_states(a, b)
    frozen = base.state_dict()  # the backbone and classifier keep the base's names
    assert any(k.startswith("stream.") for k in a) and set(frozen) < set(a)
    for key, value in frozen.items():  # batch-norm statistics included
        assert torch.equal(a[key], value), key


# --------------------------------------------------------------------------- errors


def test_global_batch_must_split_evenly():
    with pytest.raises(TrainConfigError, match=r"multiple of gpus \(4\)") as err:
        TrainConfig(batch_size=30, gpus=4)
    assert err.value.key == "batch_size"
    with pytest.raises(ValueError, match=r"config key 'models\.m\.batch_size'.*gpus \(4\)"):
        check_model_entry("m", {"batch_size": 30, "gpus": 4})
    with pytest.raises(
        ValueError, match=r"config key 'models\.m\.gpus'.*less than the minimum of 1"
    ):
        check_model_entry("m", {"gpus": 0})
    TrainConfig(batch_size=32, gpus=4)  # fine


def test_cli_refuses_before_starting_processes(tmp_path, capsys):
    args = _cli_args(tmp_path, "m", 4, 1)
    args[args.index("--model") + 1] = json.dumps({"batch_size": 30, "gpus": 4})
    args[args.index("--base") + 1] = ""
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "config key 'models.m.batch_size': must be a multiple of gpus (4)" in err


def test_a_single_process_refuses_a_multi_gpu_config():
    with pytest.raises(ValueError, match=r"gpus: the training config asks for 2 process"):
        train_model(_net(), _split(8, 0), _split(8, 1), _config(2), CPU, False)


def test_gpu_checks():
    distributed.check_devices(CPU, 8)  # gloo processes on the CPU: no limit
    with pytest.raises(ValueError, match=r"'cuda:1' names one GPU.*--device cuda or auto"):
        distributed.check_devices(torch.device("cuda", 1), 2)
    if torch.cuda.device_count() < 64:
        with pytest.raises(ValueError, match=r"64 processes need 64 GPUs"):
            distributed.check_devices(torch.device("cuda"), 64)


def test_batch_parts_cover_the_batch_in_order():
    for size in (32, 7, 1):
        parts = [distributed.batch_part(size, distributed.World(r, 3)) for r in range(3)]
        assert [i for p in parts for i in range(size)[p]] == list(range(size))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_worker_command_line_repeats_the_arguments():
    """What each torchrun worker runs parses to the same arguments (but its threads)."""
    parser = build_parser()
    every_option = [*_cli_args(Path("/d"), "m", 2, 8), "--no-resume"]
    defaults = ["train", "--train=a", "--test=b", "--model={}", "--name=n", "--device=cpu"]
    defaults += ["--threads=1"]
    defaults += ["--out-model=m.pt", "--out-history=m.json"]
    for argv in (every_option, defaults):
        args = parser.parse_args(argv)
        again = parser.parse_args(_train_argv(args, 3))
        assert vars(again) == {**vars(args), "threads": 3}


if __name__ == "__main__":  # a torchrun worker of test_two_processes_train_gradalign_like_one
    _worker(Path(sys.argv[1]))

"""The saliency job never mixes set-ups, never lets a method change the model, and says
what went wrong on a full disk (issue: integrity, items 1, 5 and 7). Each fault is
reproduced on a tiny split and model, calling the job as the workflow's rule does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cambench.cache import read_saliency
from cambench.data.store import Split, write_split
from cambench.jobs import saliency
from cambench.models import build_model, register_arch, save_checkpoint
from cambench.models.small_resnet import SmallResNet
from cambench.saliency import register

CONFIG = {"kind": "baseline", "arch": "resnet_small", "width": 4, "blocks": [1, 1, 1, 1]}


def _split(path: Path, seed: int = 0, n: int = 16, size: int = 16) -> Path:
    rng = np.random.default_rng(seed)
    write_split(
        path,
        Split(
            images=torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)),
            labels=torch.from_numpy(rng.integers(0, 4, n)),
            masks=torch.from_numpy(rng.random((n, size, size)) > 0.5),
            class_names=["a", "b", "c", "d"],
            attrs={"dataset": "shapes", "split": "test"},
        ),
    )
    return path


def _checkpoint(path: Path, config: dict = CONFIG, model: nn.Module | None = None) -> Path:
    torch.manual_seed(0)
    model = model or SmallResNet(num_classes=4, width=4, blocks=(1, 1, 1, 1))
    save_checkpoint(path, model, config, 4, ["a", "b", "c", "d"])
    return path


def _run(tmp_path: Path, method: str, out: Path, **kw) -> None:
    args = {
        "model_path": tmp_path / "model.pt",
        "data_path": tmp_path / "test.h5",
        "out_path": out,
        "method": method,
        "params": {},
        "layer": None,
        "n_images": 16,
        "shards": 1,
        "shard": 0,
        "batch_size": 4,
        "target": "label",
        "device": torch.device("cpu"),
        "model_name": "baseline",
        "progress": False,
    }
    args.update(kw)
    saliency.run(**args)


@pytest.fixture
def setup(tmp_path):
    _split(tmp_path / "test.h5")
    _checkpoint(tmp_path / "model.pt")
    return tmp_path


class Interrupt(Exception):
    pass


def _interrupted_method(name: str, fail_at_call: int):
    calls = {"n": 0}

    @register(name)
    def method(model, images, targets, layer):
        calls["n"] += 1
        if calls["n"] == fail_at_call:
            raise Interrupt("killed")
        return images.mean(1)  # a map that depends on the images only

    return calls


def test_a_changed_target_mode_discards_the_temporary_file(setup, registry, capsys):
    _interrupted_method("halfway", fail_at_call=3)
    out = setup / "shard-0.h5"
    with pytest.raises(Interrupt):
        _run(setup, "halfway", out)  # two batches of four written, then killed
    tmp = out.with_name(".shard-0.h5.tmp")
    with h5py.File(tmp) as f:
        assert f.attrs["n_done"] == 8
    _run(setup, "halfway", out, target="predicted")
    assert "discarding" in capsys.readouterr().out
    cache = read_saliency(out)
    assert cache.attrs["target_mode"] == "predicted"
    # every stored target is the model's prediction, none the label from the first run
    from cambench.data.store import read_split
    from cambench.models import load_checkpoint

    net = load_checkpoint(setup / "model.pt")
    with read_split(setup / "test.h5") as split, torch.no_grad():
        predicted = net(split.float_images()).argmax(1)
    assert torch.equal(cache.target, predicted)


def test_changed_data_or_code_discards_the_temporary_file(setup, registry, capsys):
    calls = _interrupted_method("halfway", fail_at_call=3)
    out = setup / "shard-0.h5"
    with pytest.raises(Interrupt):
        _run(setup, "halfway", out)
    _split(setup / "test.h5", seed=1)  # the data changed between the kill and the rerun
    calls["n"] = -100
    _run(setup, "halfway", out)
    log = capsys.readouterr().out
    assert "discarding" in log and "data_sha256 differs" in log
    from cambench.data.store import read_split

    with read_split(setup / "test.h5") as split:
        expected = split.float_images().mean(1)
    maps = read_saliency(out).maps
    lo = expected.amin((1, 2), keepdim=True)
    hi = expected.amax((1, 2), keepdim=True)
    assert torch.allclose(maps, (expected - lo) / (hi - lo), atol=1e-3)  # all 16 new images
    # the code: a temporary file recording another code digest is not resumed
    calls["n"] = 2
    out.unlink()
    with pytest.raises(Interrupt):
        _run(setup, "halfway", out)
    with h5py.File(out.with_name(".shard-0.h5.tmp"), "a") as f:
        f.attrs["code_sha256"] = "0" * 64  # as if the method's code had been edited
    capsys.readouterr()
    _run(setup, "halfway", out)
    assert "discarding" in capsys.readouterr().out


PLUGIN = """
from cambench.saliency import register

CALLS = [0]


@register("edited")
def edited(model, images, targets, layer):
    CALLS[0] += 1
    if CALLS[0] == {fail_at}:
        raise RuntimeError("killed")
    return images.{reduce}(1)
"""


def test_a_plugin_method_edited_between_the_kill_and_the_rerun_is_not_resumed(
    setup, registry, capsys, monkeypatch
):
    """The reported mix-up: 6 of 16 maps came from the plug-in's old code."""
    from cambench import plugins
    from cambench.data.store import read_split
    from cambench.saliency import METHODS

    monkeypatch.setattr(plugins, "_LOADED", dict(plugins._LOADED))
    plugin = setup / "my_method.py"
    plugin.write_text(PLUGIN.format(fail_at=3, reduce="mean"))
    plugins.load_plugins([str(plugin)])
    out = setup / "shard-0.h5"
    with pytest.raises(RuntimeError, match="killed"):
        _run(setup, "edited", out)  # two batches of the old code on disk
    plugin.write_text(PLUGIN.format(fail_at=-1, reduce="amax"))  # edited, then rerun
    del METHODS["edited"]
    plugins._LOADED.pop(str(plugin.resolve()))
    plugins.load_plugins([str(plugin)])
    capsys.readouterr()
    _run(setup, "edited", out)
    log = capsys.readouterr().out
    assert re.search(
        r"discarding .*\.shard-0\.h5\.tmp: not resumable, its code_sha256 differs", log
    )
    with read_split(setup / "test.h5") as split:
        expected = split.float_images().amax(1)
    lo = expected.amin((1, 2), keepdim=True)
    hi = expected.amax((1, 2), keepdim=True)
    maps = read_saliency(out).maps
    assert torch.allclose(maps, (expected - lo) / (hi - lo), atol=1e-3)  # all 16 new code's


def test_an_unchanged_set_up_resumes(setup, registry, capsys):
    calls = _interrupted_method("halfway", fail_at_call=3)
    out = setup / "shard-0.h5"
    with pytest.raises(Interrupt):
        _run(setup, "halfway", out)
    calls["n"] = -100
    _run(setup, "halfway", out)
    assert "resuming" in capsys.readouterr().out
    assert calls["n"] == -98  # only the last two batches were computed


@pytest.mark.parametrize(
    ("kind", "phrase"),
    [("weights", "conv1.weight changed"), ("train_forward", "buffer"), ("hook", "hook")],
)
def test_a_method_that_changes_the_model_fails_naming_it(setup, registry, kind, phrase):
    @register("meddler")
    def meddler(model, images, targets, layer):
        if kind == "weights":
            weight = next(p for k, p in model.named_parameters() if k.endswith("conv1.weight"))
            weight.data.mul_(1.5)  # through .data: its version counter does not move
        elif kind == "train_forward":
            model.train()
            with torch.no_grad():
                model(images)
        else:
            model.register_forward_hook(lambda m, i, o: None)
        return images.mean(1)

    with pytest.raises(ValueError, match=r"saliency method 'meddler' .*changed the model") as err:
        _run(setup, "meddler", setup / "out.h5")
    assert phrase in str(err.value)
    assert not (setup / "out.h5").exists()


def test_a_model_with_active_dropout_is_refused_at_the_start(tmp_path, registry):
    class Noisy(nn.Module):
        def __init__(self, num_classes: int):
            super().__init__()
            self.body = SmallResNet(num_classes=num_classes, width=4, blocks=(1, 1, 1, 1))

        def forward(self, x):
            return F.dropout(self.body(x), p=0.5, training=True)  # always on

    register_arch("noisy_net")(lambda num_classes: Noisy(num_classes))
    _split(tmp_path / "test.h5")
    config = {"kind": "pretrained", "arch": "noisy_net", "normalize": "none"}
    _checkpoint(tmp_path / "model.pt", config, build_model(config, 4))
    with pytest.raises(ValueError, match="model baseline: two forwards of the same images give"):
        _run(tmp_path, "gradient", tmp_path / "out.h5")


def test_maps_that_are_not_finite_once_stored_are_an_error(setup, registry):
    @register("huge", relu=False)
    def huge(model, images, targets, layer):
        raw = images.mean(1).double()
        raw[0, 0, 0] = float("nan")
        return raw

    with pytest.raises(ValueError):
        _run(setup, "huge", setup / "out.h5")
    assert not (setup / "out.h5").exists()


CRASH = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
HANG = "import time; time.sleep(60)"


@pytest.mark.parametrize(
    ("script", "said"), [(CRASH, "crashed: signal 11"), (HANG, "hung for 2 s")]
)
def test_a_temporary_file_that_crashes_or_hangs_hdf5_is_discarded(
    setup, registry, capsys, monkeypatch, script, said
):
    """The read-back check runs in a child process: its segfault or hang (here
    simulated) discards the temporary file instead of killing or stalling the job."""
    from cambench import cache

    calls = _interrupted_method("halfway", fail_at_call=3)
    out = setup / "shard-0.h5"
    with pytest.raises(Interrupt):
        _run(setup, "halfway", out)
    monkeypatch.setattr(cache, "_READ_BACK", script)
    monkeypatch.setattr(cache, "READ_BACK_TIMEOUT_S", 2.0)
    calls["n"] = -100
    capsys.readouterr()
    _run(setup, "halfway", out)
    tmp = out.with_name(".shard-0.h5.tmp")
    assert f"discarding {tmp}: not resumable, it cannot be read (reading it {said})" in (
        capsys.readouterr().out
    )
    assert calls["n"] == -96  # all four batches computed again
    assert read_saliency(out).maps.shape == (16, 16, 16)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return proc.returncode == 0


def _saliency_cli(setup: Path, data: Path, out: Path) -> subprocess.CompletedProcess:
    """The saliency job as the rule runs it, in its own process: after a full disk,
    HDF5's library state is not to be trusted, and the job's process ends anyway."""

    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cambench",
            "saliency",
            "--model",
            str(setup / "model.pt"),
            "--model-name",
            "baseline",
            "--data",
            str(data),
            "--method",
            "gradcam",
            "--params",
            "{}",
            "--n-images",
            "64",
            "--shards",
            "1",
            "--shard",
            "0",
            "--batch-size",
            "8",
            "--target",
            "label",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_full_disk_is_named_and_its_temporary_file_is_not_resumed(setup):
    full = setup / "full"
    if not _mount_tmpfs(full, "1m"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        big = _split(setup / "big.h5", n=64, size=32)
        filler = full / "filler"
        filler.write_bytes(b"\0" * (1024 * 1024 - 40 * 1024))  # 40 kB left: a few maps
        out = full / "shard-0.h5"
        proc = _saliency_cli(setup, big, out)
        assert proc.returncode == 1 and "Segmentation" not in proc.stderr
        assert re.search(rf"{full}.*no space left on device", proc.stderr), proc.stderr[-2000:]
        assert not out.exists()
        filler.unlink()  # space freed: the rerun completes (resumed or started over)
        proc = _saliency_cli(setup, big, out)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert read_saliency(out).maps.shape == (64, 32, 32)
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


def test_a_checkpoint_on_a_full_disk_says_so_not_enforce_fail(tmp_path):
    full = tmp_path / "full"
    if not _mount_tmpfs(full, "64k"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        out = full / "model.pt"
        with pytest.raises(ValueError, match=rf"{out}: no space left on device"):
            _checkpoint(out)  # about 100 kB of weights
        assert not out.exists() and not list(full.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)

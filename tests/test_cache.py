"""The HDF5 saliency cache: round trip, provenance checks, atomicity and resume."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from cambench.cache import CacheError, SaliencyWriter, read_saliency

ATTRS = {
    "method": "gradcam",
    "params": {},
    "layer": "layer4",
    "model_sha256": "a" * 64,
    "dataset": "shapes",
    "split": "test",
}


def _write(path, maps, targets, batch=3, attrs=ATTRS, fail_after=None):
    index = np.arange(10, 10 + len(maps))
    with SaliencyWriter(path, index, index % 4, tuple(maps.shape[1:]), attrs) as writer:
        for start in range(writer.n_done, len(maps), batch):
            if fail_after is not None and start >= fail_after:
                raise KeyboardInterrupt
            writer.write(maps[start : start + batch], targets[start : start + batch], seconds=0.5)
    return index


def test_round_trip(tmp_path):
    maps = torch.rand(7, 5, 6)
    targets = torch.arange(7)
    index = _write(tmp_path / "s.h5", maps, targets)
    cache = read_saliency(tmp_path / "s.h5", model_sha256="a" * 64)
    torch.testing.assert_close(cache.maps, maps.half().float())
    assert torch.equal(cache.index, torch.from_numpy(index))
    assert torch.equal(cache.target, targets)
    assert torch.equal(cache.label, torch.from_numpy(index % 4))
    assert cache.attrs["method"] == "gradcam" and cache.attrs["complete"]
    assert cache.attrs["seconds"] == pytest.approx(1.5)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["saliency"].dtype == np.float16
        assert f["saliency"].chunks == (1, 5, 6)
        assert f["saliency"].compression == "gzip"
    assert not (tmp_path / ".s.h5.tmp").exists()


def test_rejects_another_checkpoint(tmp_path):
    _write(tmp_path / "s.h5", torch.rand(4, 3, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(CacheError, match=r"s\.h5: made from another checkpoint"):
        read_saliency(tmp_path / "s.h5", model_sha256="b" * 64)


def test_rejects_incomplete_and_corrupt_files(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _write(
            tmp_path / "s.h5", torch.rand(9, 3, 3), torch.zeros(9, dtype=torch.long), fail_after=3
        )
    assert not (tmp_path / "s.h5").exists()  # never a half-written output
    tmp = tmp_path / ".s.h5.tmp"
    with pytest.raises(CacheError, match="incomplete"):
        read_saliency(tmp)
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CacheError, match=r"bad\.h5: corrupt"):
        read_saliency(tmp_path / "bad.h5")
    with pytest.raises(CacheError, match="does not exist"):
        read_saliency(tmp_path / "missing.h5")


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    maps = torch.rand(9, 4, 4)
    targets = torch.arange(9)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "a.h5", maps, targets, fail_after=6)
    with h5py.File(tmp_path / ".a.h5.tmp") as f:
        assert f.attrs["n_done"] == 6
    calls = []
    index = np.arange(10, 19)
    with SaliencyWriter(tmp_path / "a.h5", index, index % 4, (4, 4), ATTRS) as writer:
        assert writer.n_done == 6
        for start in range(writer.n_done, 9, 3):
            calls.append(start)
            writer.write(maps[start : start + 3], targets[start : start + 3], seconds=0.5)
    assert calls == [6]
    _write(tmp_path / "b.h5", maps, targets)
    a, b = read_saliency(tmp_path / "a.h5"), read_saliency(tmp_path / "b.h5")
    assert torch.equal(a.maps, b.maps) and torch.equal(a.target, b.target)


def test_no_resume_across_different_provenance(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "a.h5", torch.rand(9, 4, 4), torch.arange(9), fail_after=6)
    index = np.arange(10, 19)
    other = {**ATTRS, "params": {"seed": 1}}
    with SaliencyWriter(tmp_path / "a.h5", index, index % 4, (4, 4), other) as writer:
        assert writer.n_done == 0
        writer.write(torch.rand(9, 4, 4), torch.arange(9), seconds=0.1)


def test_cache_inspect_cli(tmp_path):
    _write(tmp_path / "s.h5", torch.rand(4, 3, 3), torch.zeros(4, dtype=torch.long))
    out = subprocess.run(
        [sys.executable, "-m", "cambench", "cache", "inspect", str(tmp_path / "s.h5")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "saliency" in out and "(4, 3, 3)" in out and "@method" in out and "gradcam" in out

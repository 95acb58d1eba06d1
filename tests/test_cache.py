"""The HDF5 saliency cache: round trip, provenance checks, atomicity and resume."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from cambench.cache import CacheError, SaliencyWriter, describe, read_saliency
from cambench.checksum import seal

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


def test_describe_names_a_file_that_is_not_a_saliency_file(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x89HDF but not really" * 50)
    with pytest.raises(ValueError, match=r"garbage\.h5: corrupt or not an HDF5 file"):
        describe(garbage)
    with pytest.raises(ValueError, match=rf"{tmp_path.name}: is a directory"):
        describe(tmp_path)
    with pytest.raises(ValueError, match=r"nothing\.h5: saliency file does not exist"):
        describe(tmp_path / "nothing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["images"] = np.zeros((2, 3))
        f["index"] = np.arange(2)
        f.attrs["method"] = "gradcam"
    with pytest.raises(ValueError, match=r"other\.h5: corrupt or not an HDF5 file of cambench's"):
        describe(other)  # no checksum trailer: refused before HDF5 parses it
    seal(other)  # with one, the missing datasets are named
    expected = (
        r"other\.h5: not a cambench saliency file, missing datasets "
        r"\['saliency', 'target', 'label'\] and attributes \['params', 'layer', "
    )
    with pytest.raises(ValueError, match=expected):
        describe(other)
    with pytest.raises(CacheError, match=expected):
        read_saliency(other)
    # an interrupted job's temporary file is described (it is a saliency file)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "s.h5", torch.rand(9, 3, 3), torch.arange(9), fail_after=3)
    assert "@n_done           3" in describe(tmp_path / ".s.h5.tmp")


def test_cache_inspect_cli_prints_one_line_for_a_bad_file(tmp_path):
    (tmp_path / "garbage.h5").write_bytes(b"garbage")
    run = subprocess.run(
        [sys.executable, "-m", "cambench", "cache", "inspect", str(tmp_path / "garbage.h5")],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "garbage.h5: corrupt or not an HDF5 file" in lines[0]


def _saliency_command(tmp_path, out, method="opticam", params='{"iterations": 80}'):
    return [
        sys.executable,
        "-m",
        "cambench",
        "saliency",
        "--model",
        str(tmp_path / "model.pt"),
        "--model-name",
        "baseline",
        "--data",
        str(tmp_path / "test.h5"),
        "--method",
        method,
        "--params",
        params,
        "--n-images",
        "24",
        "--shards",
        "1",
        "--shard",
        "0",
        "--target",
        "label",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(out),
    ]


def _n_done(tmp_file) -> int:
    """``n_done`` of a temporary file another process is writing (0 if unreadable yet)."""
    try:
        with h5py.File(tmp_file, "r", locking=False) as f:
            return int(f.attrs["n_done"])
    except (OSError, KeyError):
        return 0


def test_killed_saliency_job_resumes_to_the_uninterrupted_maps(tmp_path):
    """SIGKILL a `cambench saliency` process after its first batches are written; the
    rerun computes only the remaining batches and its maps equal an uninterrupted run's."""
    import signal
    import time

    from cambench.data.shapes import CLASS_NAMES, generate_shapes
    from cambench.data.store import Split, write_split
    from cambench.models import build_model, save_checkpoint

    images, labels, masks = generate_shapes(24, 32, 4, seed=5)
    write_split(tmp_path / "test.h5", Split(images, labels, masks, list(CLASS_NAMES[:4])))
    torch.manual_seed(0)
    config = {"kind": "baseline", "width": 4, "blocks": [1, 1, 1, 1]}
    save_checkpoint(tmp_path / "model.pt", build_model(config, 4), config, 4, list(CLASS_NAMES[:4]))

    out = tmp_path / "killed.h5"
    tmp_file = tmp_path / ".killed.h5.tmp"
    process = subprocess.Popen(
        _saliency_command(tmp_path, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while _n_done(tmp_file) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = _n_done(tmp_file)
    assert 8 <= done < 24, f"the job was not killed mid-run (n_done = {done})"
    assert not out.exists()
    with pytest.raises(CacheError, match="killed.h5"):
        read_saliency(tmp_file)  # an incomplete file is refused, naming it

    rerun = subprocess.run(
        _saliency_command(tmp_path, out), capture_output=True, text=True, check=True
    )
    remaining = (24 - done) // 4
    assert f": {remaining}/{remaining} batches" in rerun.stdout  # only the missing batches ran
    subprocess.run(_saliency_command(tmp_path, tmp_path / "whole.h5"), check=True)
    resumed, whole = read_saliency(out), read_saliency(tmp_path / "whole.h5")
    assert torch.equal(resumed.maps, whole.maps)
    assert torch.equal(resumed.target, whole.target)
    assert not tmp_file.exists()

"""Corrupted files are detected (issue: integrity, items 2 and 6): saliency shards carry
a whole-file checksum verified before HDF5 parses them, checkpoints a content digest
checked at load, split files Fletcher-32 per chunk. Each fault as reproduced: single
byte flips, bit flips in the weights, a flipped label or image byte."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cambench import checksum
from cambench.cache import CacheError, SaliencyWriter, describe, read_saliency
from cambench.data.store import Split, read_split, write_split
from cambench.models import read_checkpoint, save_checkpoint
from cambench.models.small_resnet import SmallResNet


def _shard(path: Path, n: int = 4, size: int = 8) -> None:
    torch.manual_seed(0)
    attrs = {
        "method": "gradcam",
        "params": {},
        "layer": "layer4",
        "model_sha256": "0" * 64,
        "dataset": "shapes",
        "split": "test",
    }
    with SaliencyWriter(path, np.arange(n), np.arange(n) % 3, (size, size), attrs) as writer:
        writer.write(torch.rand(n, size, size), torch.tensor([2, 0, 1, 2]), 0.1)


def test_a_complete_shard_reads_and_every_flipped_byte_is_an_error_naming_it(tmp_path):
    path = tmp_path / "shard-0.h5"
    _shard(path)
    assert read_saliency(path).maps.shape == (4, 8, 8)
    data = path.read_bytes()
    # the stored target 2 -> 3: a flip in the data that HDF5 alone would not notice
    target = np.array([2, 0, 1, 2], dtype=np.int64).tobytes()
    at = data.find(target)
    assert at > 0
    flipped = bytearray(data)
    flipped[at] ^= 1  # 2 -> 3
    path.write_bytes(bytes(flipped))
    with pytest.raises(CacheError, match=rf"{path}: checksum mismatch.*delete it"):
        read_saliency(path)
    with pytest.raises(CacheError, match="checksum mismatch"):
        describe(path)


FUZZ = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from cambench.cache import describe, read_saliency
    from cambench.data.store import read_split
    path, out, every, stride = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    def read_all(path):
        with read_split(path) as split:
            split.images[:], split.masks[:]

    readers = (read_saliency, describe) if sys.argv[5] == "saliency" else (read_all,)
    clean = path.read_bytes()
    offsets = [*range(min(every, len(clean))), *range(every, len(clean), stride)]
    for offset in offsets:
        data = bytearray(clean)
        data[offset] ^= 0xFF
        out.write_bytes(bytes(data))
        for read in readers:
            try:
                read(out)
            except ValueError as err:
                if str(out) not in str(err) or "delete" not in str(err):
                    raise SystemExit(f"offset {offset}: {read.__name__}: {err}") from None
            else:
                raise SystemExit(f"offset {offset}: {read.__name__} accepted a corrupt file")
    print(len(offsets))
    """
)


@pytest.mark.parametrize("kind", ["saliency", "split"])
def test_fuzz_every_offset_gives_an_error_naming_the_file_never_a_crash_or_a_hang(tmp_path, kind):
    """Every byte of the first 4 kB (superblock, object headers, B-trees, chunk index,
    attributes: where the crashing offsets once found were) and every 16th byte after,
    flipped one at a time; the reads run in a subprocess with a timeout, so a segfault
    or a hang fails the test instead of killing pytest."""
    path = tmp_path / "file.h5"
    _shard(path) if kind == "saliency" else _split(path)
    size = path.stat().st_size
    assert size > 4096
    proc = subprocess.run(
        [sys.executable, "-c", FUZZ, str(path), str(tmp_path / "fuzz.h5"), "4096", "16", kind],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert int(proc.stdout) == 4096 + len(range(4096, size, 16))


def test_a_temporary_file_is_not_taken_for_a_complete_one(tmp_path):
    path = tmp_path / "shard-0.h5"
    _shard(path)
    # a complete file without its trailer (cut short, or an older cambench's)
    path.write_bytes(path.read_bytes()[:-82])
    with pytest.raises(CacheError, match="no checksum at its end"):
        read_saliency(path)


def _checkpoint(path: Path) -> SmallResNet:
    torch.manual_seed(0)
    model = SmallResNet(num_classes=4, width=8, blocks=(1, 1, 1, 1))
    config = {"kind": "baseline", "arch": "resnet_small", "width": 8, "blocks": [1, 1, 1, 1]}
    save_checkpoint(path, model, config, 4, ["a", "b", "c", "d"])
    return model


def test_three_flipped_bits_in_a_checkpoints_weights_are_an_error(tmp_path):
    path = tmp_path / "baseline.pt"
    model = _checkpoint(path)
    loaded = read_checkpoint(path).model
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    weight = model.state_dict()["layer4.0.conv1.weight"].contiguous().numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = bytes(data).find(weight[:64])
    assert at > 0
    for bit in (3, 77, 1001):  # three bit flips in the weights
        data[at + bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{path}: checksum mismatch, the checkpoint is corrupt"):
        read_checkpoint(path)


def _split(path: Path) -> Split:
    rng = np.random.default_rng(0)
    split = Split(
        images=torch.from_numpy(rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)),
        labels=torch.tensor([3, 1, 4, 1, 5, 9]),
        masks=torch.from_numpy(rng.random((6, 8, 8)) > 0.5),
        class_names=[str(k) for k in range(10)],
        attrs={"dataset": "test", "split": "test"},
    )
    write_split(path, split)
    return split


def test_a_flipped_label_or_image_byte_in_a_split_file_is_an_error(tmp_path):
    path = tmp_path / "test.h5"
    split = _split(path)
    with read_split(path) as back:
        assert torch.equal(back.labels, split.labels)
        assert torch.equal(back.images[:], split.images)
    clean = path.read_bytes()
    with h5py.File(path, "r") as f:
        labels_at = f["labels"].id.get_chunk_info(0).byte_offset
        image_at = f["images"].id.get_chunk_info(2)
    data = bytearray(clean)
    data[labels_at + 8] ^= 1  # the second label, 1 -> 0
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{path}: checksum mismatch.*delete it"):
        read_split(path)
    # an image chunk: left out of the file's checksum (opening a split reads no image),
    # HDF5's Fletcher-32 catches it when the chunk is read
    image = bytearray(clean)
    image[image_at.byte_offset + image_at.size // 2] ^= 0x10
    path.write_bytes(bytes(image))
    with read_split(path) as back:
        back.images[0:2]  # other chunks read fine
        with pytest.raises(ValueError, match=rf"{path}: corrupt images data.*delete the file"):
            back.images[2]


def test_opening_a_split_reads_its_metadata_not_its_images(tmp_path, monkeypatch):
    """The checksum of a split leaves the image and mask chunks out: verifying a large
    split reads a few kilobytes."""
    path = tmp_path / "test.h5"
    rng = np.random.default_rng(0)
    n = 200
    write_split(
        path,
        Split(
            images=torch.from_numpy(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)),
            labels=torch.from_numpy(rng.integers(0, 4, n)),
            masks=torch.from_numpy(rng.random((n, 32, 32)) > 0.5),
            class_names=["a", "b", "c", "d"],
        ),
    )
    hashed = []
    real = checksum._hash_outside

    def counting(f, end, ranges, digest):
        real(f, end, ranges, digest)
        hashed.append(end - int(ranges[:, 1].sum()))

    monkeypatch.setattr(checksum, "_hash_outside", counting)
    read_split(path).close()
    size = path.stat().st_size
    assert size > 600_000 and hashed and hashed[0] < size // 4, (hashed, size)


def test_a_split_file_without_its_trailer_is_refused(tmp_path):
    """A split written by an older cambench (no trailer) or cut short."""
    path = tmp_path / "test.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 3, 8, 8), np.uint8)
        f["labels"] = np.zeros(2, np.int64)
        f["masks"] = np.zeros((2, 8, 8), bool)
        f.attrs["class_names"] = '["a"]'
    with pytest.raises(ValueError, match=rf"{path}: .*no checksum at its end.*delete it"):
        read_split(path)
    _split(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{path}: .*no checksum at its end"):
        read_split(path)


class _Stop(Exception):
    pass


def test_a_damaged_training_resume_file_is_ignored_not_resumed(tmp_path, monkeypatch, capsys):
    """The per-epoch resume file (weights, optimizer, RNG, history) carries a content
    digest: three flipped bits in its weights make the rerun train anew (the same
    model as an uninterrupted run) instead of resuming from damaged weights."""
    from cambench.training import loop
    from cambench.training.loop import TrainConfig, train_model

    def split(seed: int) -> Split:
        rng = np.random.default_rng(seed)
        return Split(
            images=torch.from_numpy(rng.integers(0, 256, (16, 3, 16, 16), dtype=np.uint8)),
            labels=torch.from_numpy(rng.integers(0, 4, 16)),
            masks=torch.zeros(16, 16, 16, dtype=torch.bool),
            class_names=["a", "b", "c", "d"],
        )

    train, test = split(0), split(1)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.05)

    def run(resume: Path | None) -> SmallResNet:
        torch.manual_seed(0)
        model = SmallResNet(num_classes=4, width=4, blocks=(1, 1, 1, 1))
        train_model(model, train, test, config, torch.device("cpu"), False, resume_path=resume)
        return model

    reference = run(None)
    resume = tmp_path / "m.pt.resume.pt"
    original, calls = loop.gradient_cosine, []

    def stop_in_epoch_2(*args):
        calls.append(1)
        if len(calls) == 2:
            raise _Stop
        return original(*args)

    monkeypatch.setattr(loop, "gradient_cosine", stop_in_epoch_2)
    with pytest.raises(_Stop):
        run(resume)
    monkeypatch.setattr(loop, "gradient_cosine", original)
    state = torch.load(resume, weights_only=True)
    assert state["epoch"] == 1 and len(state["content_sha256"]) == 64
    weight = state["model"]["layer4.0.conv1.weight"].contiguous().numpy().tobytes()
    data = bytearray(resume.read_bytes())
    at = bytes(data).find(weight[:64])
    assert at > 0
    for bit in (3, 77, 501):
        data[at + bit // 8] ^= 1 << (bit % 8)
    resume.write_bytes(bytes(data))
    capsys.readouterr()
    model = run(resume)
    assert f"ignoring damaged resume file {resume} (checksum missing or wrong)" in (
        capsys.readouterr().out
    )
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

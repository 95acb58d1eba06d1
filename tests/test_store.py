"""The split file format read lazily: rows read on demand equal numpy's indexing of the
same array, a batch reads about its own bytes (not the images dataset), old files
(64 images a chunk) still read, and training from a file with the prefetch thread
ends with the same weights as training from the same data held in memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from cambench.checksum import seal
from cambench.data.store import Split, SplitWriter, read_split, write_split
from cambench.training.loop import Prefetch, TrainConfig, train_model


def _arrays(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    labels = rng.integers(0, 3, n).astype(np.int64)
    masks = rng.random((n, size, size)) < 0.3
    return images, labels, masks


def _write(path: Path, n: int, size: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    images, labels, masks = _arrays(n, size, seed)
    split = Split(
        torch.from_numpy(images),
        torch.from_numpy(labels),
        torch.from_numpy(masks),
        ["a", "b", "c"],
        {"dataset": "test", "n": n, "extra": [1, 2]},
    )
    write_split(path, split)
    return images, labels, masks


def test_layout_one_chunk_per_image_and_attributes(tmp_path):
    _write(tmp_path / "s.h5", 70, 8)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["images"].chunks == (1, 3, 8, 8) and f["images"].compression == "gzip"
        assert f["masks"].chunks == (1, 8, 8) and f["labels"].dtype == np.int64
        assert f["images"].shape == (70, 3, 8, 8)
    split = read_split(tmp_path / "s.h5")
    assert split.attrs["dataset"] == "test" and int(split.attrs["n"]) == 70
    assert split.attrs["extra"] == "[1, 2]" and split.class_names == ["a", "b", "c"]
    assert split.image_size == (8, 8) and len(split) == 70
    split.close()


KEYS = [
    5,
    -1,
    slice(None),
    slice(3, 17),
    slice(60, 200),
    slice(2, 50, 7),
    slice(None, None, -3),
    [4, 2, 2, 69, 0, 1, 3],
    np.array([10, 11, 12, 40, 41, 5]),
    torch.tensor([68, 67, 66]),
    torch.tensor([], dtype=torch.int64),
    torch.tensor(9),
    np.arange(70) % 3 == 0,
    (slice(None), 0, 0, 0),
    (7, 1),
    ([3, 1], 2),
]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k)[:30] for k in KEYS])
def test_lazy_rows_equal_numpy_indexing(tmp_path, key):
    images, labels, masks = _write(tmp_path / "s.h5", 70, 8)
    with read_split(tmp_path / "s.h5") as split:
        np_key = key.numpy() if isinstance(key, torch.Tensor) else key
        got = split.images[key]
        assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8
        np.testing.assert_array_equal(got.numpy(), images[np_key])
        if not isinstance(key, tuple) or len(key) <= 3:
            got_masks = split.masks[key]
            assert got_masks.dtype == torch.bool
            np.testing.assert_array_equal(got_masks.numpy(), masks[np_key])
        np.testing.assert_array_equal(split.labels.numpy(), labels)


def test_float_images_of_an_index_in_its_order(tmp_path):
    images, *_ = _write(tmp_path / "s.h5", 70, 8)
    idx = torch.tensor([33, 2, 65, 2])
    with read_split(tmp_path / "s.h5") as split:
        expected = torch.from_numpy(images[[33, 2, 65, 2]]).float() / 255
        assert torch.equal(split.float_images(idx), expected)
        assert torch.equal(split.float_images(), torch.from_numpy(images).float() / 255)


def test_out_of_range_and_bad_keys_raise(tmp_path):
    _write(tmp_path / "s.h5", 10, 4)
    with read_split(tmp_path / "s.h5") as split:
        for key in (10, -11, [0, 10], torch.tensor([-11])):
            with pytest.raises(IndexError):
                split.images[key]
        with pytest.raises(IndexError):
            split.images[np.array([0.5])]


def test_old_layout_with_64_image_chunks_reads_the_same(tmp_path):
    """Files written before one-image chunks (64 a chunk, gzip) stay readable."""
    images, labels, masks = _arrays(150, 8)
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.create_dataset("images", data=images, chunks=(64, 3, 8, 8), compression="gzip")
        f.create_dataset("labels", data=labels)
        f.create_dataset("masks", data=masks, chunks=(64, 8, 8), compression="gzip")
        f.attrs["class_names"] = '["a", "b", "c"]'
    seal(tmp_path / "old.h5")  # the checksum trailer every complete split file ends with
    idx = torch.tensor([149, 0, 64, 63, 100])
    with read_split(tmp_path / "old.h5") as split:
        assert torch.equal(split.images[idx], torch.from_numpy(images[idx.numpy()]))
        assert torch.equal(split.masks[idx], torch.from_numpy(masks[idx.numpy()]))
        assert torch.equal(split.labels, torch.from_numpy(labels))


def test_split_writer_appends_blocks_and_shrinks_to_what_was_written(tmp_path):
    images, labels, masks = _arrays(25, 6)
    path = tmp_path / "w.h5"
    with SplitWriter(path, (6, 6), ["x"], {"k": "v"}, expected=40) as writer:
        for start in range(0, 25, 10):
            sl = slice(start, start + 10)
            writer.append(
                torch.from_numpy(images[sl]),
                torch.from_numpy(labels[sl]),
                torch.from_numpy(masks[sl]),
            )
        writer.attrs["late"] = 3
    with read_split(path) as split:
        assert len(split) == 25 and split.images.shape == (25, 3, 6, 6)
        assert torch.equal(split.images[:], torch.from_numpy(images))
        assert torch.equal(split.masks[:], torch.from_numpy(masks))
        assert split.attrs["k"] == "v" and int(split.attrs["late"]) == 3


def test_split_writer_leaves_no_file_when_the_block_fails(tmp_path):
    path = tmp_path / "w.h5"
    with pytest.raises(RuntimeError), SplitWriter(path, (4, 4), ["x"]) as writer:
        writer.append(
            torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
            torch.zeros(2, dtype=torch.int64),
            torch.zeros(2, 4, 4, dtype=torch.bool),
        )
        raise RuntimeError("interrupted")
    assert not path.exists()
    with (
        pytest.raises(ValueError, match="images must be uint8"),
        SplitWriter(path, (4, 4), ["x"]) as writer,
    ):
        writer.append(
            torch.zeros(2, 3, 5, 5, dtype=torch.uint8),
            torch.zeros(2, dtype=torch.int64),
            torch.zeros(2, 5, 5, dtype=torch.bool),
        )


def _bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_a_batch_reads_its_images_not_the_images_dataset(tmp_path):
    """2000 incompressible 64 px images (24.6 MB): a batch of 16 at random places reads
    (bytes from the file, by the kernel's count) and allocates (tracemalloc, numpy's
    buffers) about the batch, not the dataset; reading the whole split is the control
    that the counters see the reads."""
    n, size, batch = 2000, 64, 16
    images, *_ = _write(tmp_path / "big.h5", n, size)
    dataset_bytes = images.nbytes
    batch_bytes = batch * 3 * size * size
    idx = torch.from_numpy(np.random.default_rng(1).choice(n, batch, replace=False))
    before = _bytes_read()
    split = read_split(tmp_path / "big.h5")
    tracemalloc.start()
    got = split.float_images(idx)
    got_masks = split.masks[idx]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    read = _bytes_read() - before
    assert torch.equal(got, torch.from_numpy(images[idx.numpy()]).float() / 255)
    assert got_masks.shape == (batch, size, size)
    # the labels (16 kB), the metadata and 16 compressed images and masks
    assert read < 4 * batch_bytes + 100_000, (read, batch_bytes, dataset_bytes)
    # the float batch (4 bytes a pixel), its uint8 read and the masks
    assert peak < 8 * batch_bytes, (peak, batch_bytes)
    before = _bytes_read()
    whole = split.images[:]
    assert _bytes_read() - before > 0.9 * dataset_bytes  # gzip barely shrinks random bytes
    assert whole.shape == (n, 3, size, size)
    split.close()


def test_prefetch_yields_in_order_raises_in_place_and_stops_early():
    calls = []

    def load(k):
        calls.append(k)
        if k == 7:
            raise KeyError(k)
        return k * k

    with Prefetch(load, range(5), depth=2) as values:
        assert list(values) == [0, 1, 4, 9, 16]
    with Prefetch(load, range(10), depth=3) as values, pytest.raises(KeyError):
        assert [next(values) for _ in range(7)] == [k * k for k in range(7)]
        next(values)
    calls.clear()
    with Prefetch(load, range(100), depth=2) as values:
        next(values)
    assert len(calls) <= 4  # read ahead by at most depth (+ one running)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def test_training_from_the_file_equals_training_from_memory(tmp_path):
    """Same batches, same augmentation draws: the lazily read file with prefetching
    and the in-memory tensors give identical weights (a last batch of 10 images)."""
    images, labels, masks = _write(tmp_path / "train.h5", 90, 12, seed=3)
    _write(tmp_path / "test.h5", 20, 12, seed=4)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, seed=5)
    augment = {"hflip": True, "crop_padding": 2}
    torch.set_num_threads(1)

    memory_train = Split(
        torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(masks), ["a", "b", "c"]
    )
    with read_split(tmp_path / "test.h5") as test:
        test_memory = Split(test.images[:], test.labels, test.masks[:], test.class_names)
    reference = _net()
    train_model(
        reference, memory_train, test_memory, config, torch.device("cpu"), False, augment=augment
    )
    lazy = _net()
    with read_split(tmp_path / "train.h5") as train, read_split(tmp_path / "test.h5") as test:
        history = train_model(
            lazy, train, test, config, torch.device("cpu"), False, augment=augment
        )
    assert len(history) == 2
    reference_state, lazy_state = reference.state_dict(), lazy.state_dict()
    assert reference_state.keys() == lazy_state.keys()
    for key, value in reference_state.items():
        assert torch.equal(value, lazy_state[key]), key

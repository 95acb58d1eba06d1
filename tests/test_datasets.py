"""Tests for the imported datasets: CIFAR-10/100 and image folders with VOC boxes.

Every test writes its own tiny dataset in the format the real one has on disk.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cambench.data import preparation_config, prepare_dataset, read_split
from cambench.data.imagefolder import box_mask, find_box_file, read_voc_boxes
from cambench.data.sampling import balanced_order, crop_geometry, resize_center_crop

CIFAR10_NAMES = [f"c10_{k}" for k in range(10)]
CIFAR100_NAMES = [f"c100_{k}" for k in range(100)]


# --------------------------------------------------------------------------- CIFAR


def _cifar_images(first: int, n: int, labels: list[int]) -> np.ndarray:
    """Rows of 3072 bytes (CHW): channel 0 = the image's global index, channel 1 = 10 ×
    its label, channel 2 = 4 × row + column // 8 (checks the orientation)."""
    data = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    data[:, 0] = np.arange(first, first + n, dtype=np.uint8)[:, None, None]
    data[:, 1] = (10 * np.asarray(labels) % 256).astype(np.uint8)[:, None, None]
    rows, cols = np.mgrid[0:32, 0:32]
    data[:, 2] = (4 * rows + cols // 8).astype(np.uint8)
    return data.reshape(n, 3072)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 20) -> Path:
    """``root/cifar-10-batches-py/`` as in the official archive, with tiny batches."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    first = 0
    for b in range(1, 6):
        labels = [(first + k) % 10 for k in range(per_batch)]
        _pickle(
            folder / f"data_batch_{b}",
            {
                "batch_label": f"training batch {b} of 5",
                "labels": labels,
                "data": _cifar_images(first, per_batch, labels),
                "filenames": [f"img_{first + k}.png" for k in range(per_batch)],
            },
        )
        first += per_batch
    labels = [(3 * k) % 10 for k in range(n_test)]
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": labels,
            "data": _cifar_images(100, n_test, labels),
            "filenames": [f"test_{k}.png" for k in range(n_test)],
        },
    )
    _pickle(
        folder / "batches.meta",
        {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072},
    )
    return folder


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, first in (("train", n_train, 0), ("test", n_test, 200)):
        fine = [k % 100 for k in range(n)]
        _pickle(
            folder / name,
            {
                "filenames": [f"{name}_{k}.png" for k in range(n)],
                "batch_label": name,
                "fine_labels": fine,
                "coarse_labels": [k // 5 for k in fine],
                "data": _cifar_images(first % 256, n, fine),
            },
        )
    _pickle(
        folder / "meta",
        {"fine_label_names": CIFAR100_NAMES, "coarse_label_names": [str(k) for k in range(20)]},
    )
    return folder


@pytest.fixture
def skip_md5(monkeypatch):
    """The tiny files are not the official archive: torchvision's MD5 check is replaced by
    an existence check (only here; the real loader keeps it)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def _outs(tmp_path: Path) -> dict[str, Path]:
    return {"train": tmp_path / "out" / "train.h5", "test": tmp_path / "out" / "test.h5"}


def _prepare(tmp_path: Path, **config):
    outs = _outs(tmp_path)
    prepare_dataset(config, outs)
    return read_split(outs["train"]), read_split(outs["test"])


def test_cifar10_loads_with_labels_and_class_names(tmp_path, skip_md5):
    write_cifar10(tmp_path / "cifar")
    train, test = _prepare(tmp_path, name="cifar10", root=str(tmp_path / "cifar"))
    assert len(train) == 30 and len(test) == 20
    for split, name, first, n in ((train, "train", 0, 30), (test, "test", 100, 20)):
        assert split.class_names == CIFAR10_NAMES
        assert split.images.shape == (n, 3, 32, 32) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64
        assert split.masks.shape == (n, 32, 32) and not split.masks[:].any()
        assert split.attrs["dataset"] == "cifar10" and split.attrs["split"] == name
        assert not bool(split.attrs["has_masks"])
        # every source image exactly once, with its own label and its pixels upright
        index = split.images[:, 0, 0, 0].long()
        assert sorted(index.tolist()) == list(range(first, first + n))
        assert torch.equal(split.images[:, 1, 0, 0].long(), 10 * split.labels)
        assert (split.images[:, 0] == index.view(-1, 1, 1).to(torch.uint8)).all()
        rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
        assert (split.images[:, 2] == (4 * rows + cols // 8).to(torch.uint8)).all()
    source = train.images[:, 0, 0, 0].long()
    assert torch.equal(train.labels, source % 10)
    source = test.images[:, 0, 0, 0].long() - 100
    assert torch.equal(test.labels, (3 * source) % 10)


def test_cifar_stored_order_is_balanced_and_seeded(tmp_path, skip_md5):
    write_cifar10(tmp_path / "cifar")
    train, _ = _prepare(tmp_path, name="cifar10", root=str(tmp_path / "cifar"))
    # round-robin: each block of 10 holds every class once
    for start in range(0, 30, 10):
        assert sorted(train.labels[start : start + 10].tolist()) == list(range(10))
    again, _ = _prepare(tmp_path, name="cifar10", root=str(tmp_path / "cifar"))
    assert torch.equal(train.images[:], again.images[:])
    other, _ = _prepare(tmp_path, name="cifar10", root=str(tmp_path / "cifar"), seed=3)
    assert not torch.equal(train.images[:], other.images[:])


def test_cifar_subsample(tmp_path, skip_md5):
    write_cifar10(tmp_path / "cifar")
    train, test = _prepare(
        tmp_path, name="cifar10", root=str(tmp_path / "cifar"), max_train=20, max_test=7
    )
    assert len(train) == 20 and len(test) == 7
    assert torch.bincount(train.labels, minlength=10).tolist() == [2] * 10
    assert int(train.attrs["source_size"]) == 30
    assert len(set(test.images[:, 0, 0, 0].tolist())) == 7  # distinct images
    assert torch.equal(test.images[:, 1, 0, 0].long(), 10 * test.labels)


def test_cifar_resized(tmp_path, skip_md5):
    write_cifar10(tmp_path / "cifar")
    train, test = _prepare(tmp_path, name="cifar10", root=str(tmp_path / "cifar"), image_size=16)
    assert train.images.shape == (30, 3, 16, 16) and test.masks.shape == (20, 16, 16)
    # a constant channel stays constant through the resize
    assert torch.equal(train.images[:, 1], (10 * train.labels).view(-1, 1, 1).expand(-1, 16, 16))


def test_cifar100(tmp_path, skip_md5):
    write_cifar100(tmp_path / "c100")
    train, test = _prepare(
        tmp_path, name="cifar100", root=str(tmp_path / "c100"), max_train=150, max_test=100
    )
    assert train.class_names == CIFAR100_NAMES and train.attrs["dataset"] == "cifar100"
    assert len(train) == 150 and len(test) == 100
    assert torch.bincount(train.labels, minlength=100).max() == 2
    assert torch.equal(train.labels, train.images[:, 0, 0, 0].long() % 100)


def test_cifar_missing_names_the_path(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        _prepare(tmp_path, name="cifar10", root=str(root))
    message = str(info.value)
    assert str((root / "cifar-10-batches-py").resolve()) in message
    assert "download: true" in message and "cifar-10-python.tar.gz" in message


def test_cifar_partial_copy_lists_missing_files(tmp_path, skip_md5):
    folder = write_cifar10(tmp_path / "cifar")
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        _prepare(tmp_path, name="cifar10", root=str(tmp_path / "cifar"))


def test_cifar_corrupted_names_the_path(tmp_path):
    folder = write_cifar10(tmp_path / "cifar")  # not the official files: MD5 mismatch
    with pytest.raises(RuntimeError) as info:
        _prepare(tmp_path, name="cifar10", root=str(tmp_path / "cifar"))
    assert str(folder.resolve()) in str(info.value)


def test_boxes_rejected_for_cifar(tmp_path):
    with pytest.raises(ValueError, match="boxes"):
        _prepare(tmp_path, name="cifar10", root=str(tmp_path), boxes=str(tmp_path))


# --------------------------------------------------------------------------- image folders

COLOURS = {"bird": (200, 30, 30), "cat": (30, 200, 30), "dog": (30, 30, 200)}


def _png(path: Path, h: int, w: int, colour, box=None) -> None:
    """A solid image; with ``box`` (VOC xmin, ymin, xmax, ymax) drawn in white."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.empty((h, w, 3), dtype=np.uint8)
    array[:] = colour
    if box is not None:
        xmin, ymin, xmax, ymax = box
        array[ymin - 1 : ymax, xmin - 1 : xmax] = 255
    Image.fromarray(array).save(path)


def _voc(path: Path, h: int, w: int, objects) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        f"<annotation><filename>{path.stem}</filename>",
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
    ]
    for name, (xmin, ymin, xmax, ymax) in objects:
        parts.append(
            f"<object><name>{name}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    path.write_text("".join(parts) + "</annotation>")


@pytest.fixture
def folder(tmp_path) -> Path:
    """train/: 4 images per class of varied sizes; val/: 2 per class (one in a nested
    folder), a 40 × 60 one with a box; boxes/ in ImageNet-like places."""
    root = tmp_path / "folder"
    sizes = [(40, 60), (64, 48), (50, 50), (33, 70)]
    for name, colour in COLOURS.items():
        for k, (h, w) in enumerate(sizes):
            _png(root / "train" / name / f"{name}_train_{k}.png", h, w, colour)
        _png(root / "val" / name / f"{name}_val_0.png", 40, 60, colour, box=(13, 5, 36, 24))
        _png(root / "val" / name / "sub" / f"{name}_val_1.JPEG", 64, 48, colour)
    (root / "train" / "readme.txt").write_text("not a class")
    boxes = tmp_path / "boxes"
    # the box of the image's class, plus another class's box that must be ignored
    for name in COLOURS:
        _voc(
            boxes / "val" / f"{name}_val_0.xml",
            40,
            60,
            [(name, (13, 5, 36, 24)), ("other", (1, 30, 10, 40))],
        )
    # a training image annotated in a class subfolder, with a generic object name
    _voc(boxes / "cat" / "cat_train_2.xml", 50, 50, [("animal", (11, 11, 40, 40))])
    return root


def _prepare_folder(tmp_path, folder, **extra):
    config = {
        "name": "imagefolder",
        "root": str(folder),
        "image_size": 16,
        "resize": 20,
        "boxes": str(tmp_path / "boxes"),
    }
    return _prepare(tmp_path, **{**config, **extra})


def test_imagefolder_labels_and_class_names(tmp_path, folder):
    train, test = _prepare_folder(tmp_path, folder)
    assert train.class_names == test.class_names == ["bird", "cat", "dog"]
    assert len(train) == 12 and len(test) == 6
    assert train.images.shape == (12, 3, 16, 16) and test.masks.shape == (6, 16, 16)
    for split in (train, test):
        assert split.attrs["dataset"] == "imagefolder" and bool(split.attrs["has_masks"])
        for image, label in zip(split.images, split.labels, strict=True):
            colour = torch.tensor(COLOURS[split.class_names[int(label)]])
            # the bottom-right pixel is never inside the test images' white box (a few
            # levels off in the JPEG images)
            assert (image[:, -1, -1].long() - colour).abs().max() <= 4
    assert torch.bincount(train.labels).tolist() == [4, 4, 4]
    assert sorted(test.labels[:3].tolist()) == [0, 1, 2]  # balanced prefix


def test_imagefolder_mask_is_the_box_after_resize_and_crop(tmp_path, folder):
    _, test = _prepare_folder(tmp_path, folder)
    # 40 × 60 image, resize 20 -> 20 × 30 (scale 1/2), centre crop 16: top 2, left 7.
    # Box xmin 13, ymin 5, xmax 36, ymax 24 covers x in [12, 36], y in [4, 24]; halved
    # and shifted: x in [-1, 11], y in [0, 10]; pixel centres inside: columns 0..10,
    # rows 0..9.
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[0:10, 0:11] = True
    boxed = [k for k in range(len(test)) if test.masks[k].any()]
    assert len(boxed) == 3  # the *_val_0 images; *_val_1 have no box file
    assert int(test.attrs["n_with_mask"]) == 3
    for k in boxed:
        assert torch.equal(test.masks[k], expected)
        # and the white box drawn in the image lands on the mask
        white = test.images[k].float().mean(0) > 180
        assert (white == expected).float().mean() > 0.9


def test_imagefolder_images_match_torchvision_resize_and_crop(tmp_path, folder):
    from torchvision.transforms.v2 import functional as TF

    from cambench.data.imagefolder import load_image

    path = folder / "val" / "cat" / "cat_val_0.png"
    image = load_image(path)
    ours = resize_center_crop(image.unsqueeze(0), 20, 16)[0]
    theirs = TF.center_crop(TF.resize(image.float(), [20], antialias=True), [16, 16])
    assert (ours.float() - theirs.round()).abs().max() <= 1


def test_imagefolder_train_box_in_class_folder_with_generic_name(tmp_path, folder):
    train, _ = _prepare_folder(tmp_path, folder)
    boxed = [k for k in range(len(train)) if train.masks[k].any()]
    assert len(boxed) == 1 and train.class_names[int(train.labels[boxed[0]])] == "cat"
    assert int(train.attrs["n_with_mask"]) == 1
    # 50 × 50 -> 20 × 20, crop 16 at (2, 2); box [10, 40]^2 -> [4, 16] - 2 = [2, 14]:
    # pixel centres 2.5 .. 13.5 -> indices 2..13
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[2:14, 2:14] = True
    assert torch.equal(train.masks[boxed[0]], expected)


def test_imagefolder_without_boxes(tmp_path, folder):
    train, test = _prepare_folder(tmp_path, folder, boxes=None)
    assert not bool(test.attrs["has_masks"]) and not test.masks[:].any()


def test_imagefolder_subsample_is_balanced_and_seeded(tmp_path, folder):
    train, test = _prepare_folder(tmp_path, folder, max_train=6, max_test=3)
    assert torch.bincount(train.labels).tolist() == [2, 2, 2]
    assert sorted(test.labels.tolist()) == [0, 1, 2]
    again, _ = _prepare_folder(tmp_path, folder, max_train=6, max_test=3)
    assert torch.equal(train.images[:], again.images[:]) and torch.equal(train.labels, again.labels)


def test_imagefolder_default_resize(tmp_path, folder):
    train, _ = _prepare(tmp_path, name="imagefolder", root=str(folder), image_size=28)
    assert train.images.shape[-2:] == (28, 28)
    assert int(train.attrs["resize"]) == 32  # round(28 * 8 / 7)


def test_imagefolder_test_folder_fallback(tmp_path, folder):
    (folder / "val").rename(folder / "test")
    _, test = _prepare_folder(tmp_path, folder)
    assert len(test) == 6 and test.attrs["folder"] == "test"


def test_imagefolder_missing_root_names_the_path(tmp_path):
    root = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match=str(root.resolve())):
        _prepare(tmp_path, name="imagefolder", root=str(root))


def test_imagefolder_missing_val(tmp_path, folder):
    import shutil

    shutil.rmtree(folder / "val")
    with pytest.raises(FileNotFoundError, match="val"):
        _prepare_folder(tmp_path, folder)


def test_imagefolder_unknown_val_class(tmp_path, folder):
    _png(folder / "val" / "zebra" / "z.png", 20, 20, (0, 0, 0))
    with pytest.raises(ValueError, match="zebra"):
        _prepare_folder(tmp_path, folder)


def test_imagefolder_box_size_mismatch(tmp_path, folder):
    _voc(tmp_path / "boxes" / "val" / "dog_val_0.xml", 41, 60, [("dog", (1, 1, 5, 5))])
    with pytest.raises(ValueError, match="dog_val_0.xml"):
        _prepare_folder(tmp_path, folder)


def _truncated_jpeg(path: Path) -> None:
    """A real JPEG cut in the middle of its entropy-coded data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncated_jpeg, "truncated"),
        (lambda path: path.write_bytes(b"\x00garbage, not an image" * 10), "cannot identify"),
    ],
)
def test_damaged_image_is_named_with_its_reason(tmp_path, folder, damage, reason):
    from cambench.data.imagefolder import DamagedImageError, load_image

    bad = folder / "val" / "dog" / "sub" / "dog_val_1.JPEG"
    damage(bad)
    with pytest.raises(DamagedImageError) as info:
        load_image(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: damaged image file (") and reason in message
    assert "\n" not in message and message.count(str(bad)) == 1
    with pytest.raises(ValueError, match=rf"dog_val_1\.JPEG: damaged image file \(.*{reason}"):
        _prepare_folder(tmp_path, folder)


def test_skip_damaged_leaves_the_image_out_with_a_warning(tmp_path, folder, capsys):
    bad = folder / "val" / "dog" / "sub" / "dog_val_1.JPEG"
    _truncated_jpeg(bad)
    (folder / "val" / "cat" / "cat_val_2.png").write_bytes(b"garbage")  # a seventh image
    train, test = _prepare_folder(tmp_path, folder, skip_damaged=True)
    assert len(test) == 5 and int(test.attrs["n_damaged"]) == 2
    assert len(train) == 12 and int(train.attrs["n_damaged"]) == 0
    assert torch.bincount(test.labels).tolist() == [2, 2, 1]  # bird, cat, dog
    err = capsys.readouterr().err
    assert "skipped 2 damaged image(s)" in err and "dog_val_1.JPEG" in err
    assert "cat_val_2.png" in err


@pytest.mark.parametrize(
    ("box", "problem"),
    [
        ((30, 5, 10, 24), "xmin > xmax"),  # xmin > xmax
        ((13, 24, 36, 5), "xmin > xmax or ymin > ymax"),  # ymin > ymax
        ((13, 5, 61, 24), "outside the 60x40"),  # xmax beyond the width (60)
        ((13, -3, 36, 24), "outside the 60x40"),  # negative ymin
    ],
)
def test_bad_voc_box_names_the_file_and_the_box(tmp_path, folder, box, problem):
    xml = tmp_path / "boxes" / "val" / "bird_val_0.xml"
    _voc(xml, 40, 60, [("bird", box)])
    xmin, ymin, xmax, ymax = box
    shown = f"box 'bird' (xmin {xmin}, ymin {ymin}, xmax {xmax}, ymax {ymax})"
    with pytest.raises(ValueError) as info:
        _prepare_folder(tmp_path, folder)
    assert str(info.value).startswith(f"{xml}: {shown}") and problem in str(info.value)
    # the check does not depend on the recorded size alone: the image's size is used
    with pytest.raises(ValueError, match="bird_val_0.xml"):
        read_voc_boxes(xml, "bird", image_size=(40, 60))


def test_voc_box_at_the_image_border_and_zero_based_is_accepted(tmp_path):
    xml = tmp_path / "a.xml"
    _voc(xml, 40, 60, [("cat", (0, 0, 60, 40)), ("cat", (1, 1, 1, 1))])
    boxes, _ = read_voc_boxes(xml, "cat", image_size=(40, 60))
    assert boxes == [(-1, -1, 60, 40), (0, 0, 1, 1)]


def test_box_file_lookup_order(tmp_path):
    boxes = tmp_path / "b"
    candidates = [
        boxes / "val" / "cat" / "x.xml",
        boxes / "val" / "x.xml",
        boxes / "cat" / "x.xml",
        boxes / "x.xml",
    ]
    assert find_box_file(boxes, "val", "cat", "x") is None
    for path in reversed(candidates):
        _voc(path, 10, 10, [])
        assert find_box_file(boxes, "val", "cat", "x") == path


def test_read_voc_boxes_selects_the_class(tmp_path):
    path = tmp_path / "a.xml"
    _voc(path, 30, 40, [("cat", (1, 2, 3, 4)), ("dog", (5, 6, 7, 8)), ("cat", (2, 2, 9, 9))])
    boxes, size = read_voc_boxes(path, "cat")
    assert boxes == [(0, 1, 3, 4), (1, 1, 9, 9)] and size == (30, 40)
    assert len(read_voc_boxes(path, "bird")[0]) == 3  # no box of the class: all of them


def test_box_mask_identity_geometry():
    # no resize, no crop: the box [2, 5] x [1, 3] covers pixel centres 2.5..4.5, 1.5..2.5
    mask = box_mask([(2.0, 1.0, 5.0, 3.0)], 8, 8, 8, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1:3, 2:5] = True
    assert torch.equal(mask, expected)


def test_crop_geometry_matches_torchvision_rule():
    assert crop_geometry(40, 60, 20, 16) == (20, 30, 2, 7, 16)
    assert crop_geometry(375, 500, 256, 224) == (256, 341, 16, 58, 224)
    assert crop_geometry(500, 375, 256, 224) == (341, 256, 58, 16, 224)
    with pytest.raises(ValueError, match="resize"):
        crop_geometry(40, 40, 16, 32)


# --------------------------------------------------------------------------- shared


@pytest.mark.parametrize("n, classes", [(30, 10), (103, 7), (12, 3)])
def test_balanced_order(n, classes):
    labels = torch.arange(n) % classes
    order = balanced_order(labels, seed=5)
    assert sorted(order.tolist()) == list(range(n))
    for prefix in range(1, n + 1):
        counts = torch.bincount(labels[order[:prefix]], minlength=classes)
        assert counts.max() - counts.min() <= 1
    assert torch.equal(order, balanced_order(labels, seed=5))
    assert not torch.equal(order, balanced_order(labels, seed=6))
    assert torch.equal(balanced_order(labels, seed=5, limit=4), order[:4])


def test_balanced_order_with_unequal_classes():
    labels = torch.tensor([0] * 10 + [1] * 2 + [2] * 3)
    order = balanced_order(labels, seed=0, limit=9)
    assert torch.bincount(labels[order], minlength=3).tolist() == [4, 2, 3]


def test_shapes_records_has_masks(tmp_path):
    train, test = _prepare(tmp_path, name="shapes", train_size=8, test_size=4, num_classes=3)
    assert bool(train.attrs["has_masks"]) and bool(test.attrs["has_masks"])


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="imagefolder"):
        _prepare(tmp_path, name="mnist")


def test_preparation_config_leaves_out_augment():
    config = {"name": "cifar10", "root": "x", "augment": {"hflip": False}}
    assert preparation_config(config) == {"name": "cifar10", "root": "x"}

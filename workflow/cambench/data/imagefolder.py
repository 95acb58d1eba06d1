"""Image-folder datasets (ImageNet, Imagenette, CUB, …), with optional bounding boxes.

Layout (torchvision's ``ImageFolder``): ``<root>/train/<class>/…`` and
``<root>/val/<class>/…`` (``<root>/test/`` when there is no ``val/``); images are found
recursively below each class folder, in sorted path order, with torchvision's image
extensions. The class index is the position of the folder name in the sorted list of
``train/``'s class folders, and the class names are the folder names; ``val/`` may lack
some classes but may not add any.

Every image, of either split, gets the same deterministic transform: the short side is
resized to ``resize`` (bilinear, antialiased; default ``round(image_size * 8 / 7)``,
i.e. 256 for 224) and the centre ``image_size`` × ``image_size`` crop is kept
(torchvision's ``Resize`` + ``CenterCrop``, see :mod:`.sampling`). Random training
augmentation happens on the device at training time (:mod:`cambench.data.augment`),
inside this stored crop.

Bounding boxes (``dataset.boxes``): a folder of Pascal-VOC XML files, one per image,
named after the image's stem. For the image ``<root>/<split>/<class>/…/<stem>.<ext>``
the first existing file of

1. ``<boxes>/<split>/<class>/<stem>.xml``
2. ``<boxes>/<split>/<stem>.xml``
3. ``<boxes>/<class>/<stem>.xml`` (ImageNet's train annotations: ``Annotation/<wnid>/``)
4. ``<boxes>/<stem>.xml`` (ImageNet's val annotations, all in one folder)

is used, where ``<split>`` is the split's folder name (``train``, ``val`` or ``test``).
The mask is the union of the boxes whose ``<name>`` is the image's class folder name;
when no box has that name (datasets with one generic object name, e.g. ``bird``), the
union of all the file's boxes. Box coordinates follow VOC: 1-based inclusive pixel
indices, so a box covers ``[xmin - 1, xmax] × [ymin - 1, ymax]`` in continuous pixel
coordinates of the original image (clipped to it). A mask pixel of the stored image is
True when its centre, mapped back through the resize and crop, lies inside a box
(:func:`box_mask`): the mask is transformed exactly like the image. An image without a
box file gets an all-False mask; the split's attributes count the images with one
(``n_with_mask``), and ``has_masks`` is true when ``boxes`` is configured. A box with
``xmin > xmax`` or ``ymin > ymax``, or outside the image (``0 <= xmin``,
``xmax <= width`` and the same for y, with 0 tolerated for 0-based annotations), is an
error naming the XML file and the box.

Damaged files: an image that cannot be decoded (truncated, garbled, not an image) is
an error naming the file and the reason, unless the dataset config sets
``skip_damaged: true``; then it is left out with a warning, and the split records the
count (``n_damaged``).

Subsampling: ``max_train``/``max_test`` keep a seeded class-balanced subset, chosen
before any image is decoded; the stored order is round-robin over classes (see
:func:`cambench.data.sampling.balanced_order`), so the first ``eval.n_images`` test
images are balanced.

Memory: preparation streams. Images are decoded, resized and cropped (in threads)
:data:`BLOCK` at a time and each block is appended to the split's HDF5 file
(:class:`~cambench.data.store.SplitWriter`, one compressed chunk per image) before the
next is decoded, so a split of any size (all of ImageNet) is prepared in the memory
of one block, and read back lazily by the jobs (:func:`~cambench.data.store.read_split`).
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cambench.data.sampling import balanced_order, crop_geometry, resize_center_crop
from cambench.data.store import SplitWriter

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TEST_FOLDERS = ("val", "test")  # the test split's folder: the first that exists
MAX_WORKERS = 8
BLOCK = 256  # images decoded before they are written (preparation's memory)


def default_resize(image_size: int) -> int:
    """The usual eval resize for a crop: 256 for 224 (ratio 8/7)."""
    return int(round(image_size * 8 / 7))


def find_classes(folder: str | os.PathLike) -> list[str]:
    """Sorted names of the class folders in ``folder`` (torchvision's rule)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"imagefolder: no folder {folder.resolve()}")
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"imagefolder: no class folders in {folder.resolve()}")
    return classes


def list_images(
    folder: str | os.PathLike, classes: list[str], require_all: bool
) -> tuple[list[Path], torch.Tensor]:
    """Image paths below ``folder/<class>/`` in class then sorted-path order, and labels.

    With ``require_all`` every class folder must exist and hold an image; otherwise
    missing classes are allowed. A class folder not in ``classes`` is an error.
    """
    folder = Path(folder)
    index = {name: k for k, name in enumerate(classes)}
    extra = sorted(set(find_classes(folder)) - set(classes))
    if extra:
        raise ValueError(
            f"imagefolder: {folder.resolve()} has class folders that train/ lacks: {extra[:10]}"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for name in classes:
        class_dir = folder / name
        found = []
        if class_dir.is_dir():
            for dirpath, _, filenames in sorted(os.walk(class_dir, followlinks=True)):
                found += [
                    Path(dirpath, f)
                    for f in sorted(filenames)
                    if f.lower().endswith(IMG_EXTENSIONS)
                ]
        if not found and require_all:
            raise FileNotFoundError(
                f"imagefolder: no images ({', '.join(IMG_EXTENSIONS)}) in {class_dir.resolve()}"
            )
        paths += found
        labels += [index[name]] * len(found)
    if not paths:
        raise FileNotFoundError(f"imagefolder: no images in {folder.resolve()}")
    return paths, torch.tensor(labels, dtype=torch.int64)


def count_test_images(root: str | os.PathLike) -> int | None:
    """Image files below ``<root>/<val or test>/<class>/`` (what :func:`list_images`
    would find there), counted without opening them; ``None`` without such a folder."""
    root = Path(root)
    test_dir = next((root / d for d in TEST_FOLDERS if (root / d).is_dir()), None)
    if test_dir is None:
        return None
    count = 0
    for entry in os.scandir(test_dir):
        if entry.is_dir():
            for _, _, filenames in os.walk(entry.path, followlinks=True):
                count += sum(f.lower().endswith(IMG_EXTENSIONS) for f in filenames)
    return count


def find_box_file(boxes: Path, split_dir: str, class_name: str, stem: str) -> Path | None:
    """The annotation of one image: the first existing candidate (module docstring)."""
    for candidate in (
        boxes / split_dir / class_name / f"{stem}.xml",
        boxes / split_dir / f"{stem}.xml",
        boxes / class_name / f"{stem}.xml",
        boxes / f"{stem}.xml",
    ):
        if candidate.is_file():
            return candidate
    return None


class DamagedImageError(ValueError):
    """An image file that cannot be decoded; the message names the file and the reason."""


def read_voc_boxes(
    path: str | os.PathLike,
    class_name: str | None = None,
    image_size: tuple[int, int] | None = None,
) -> tuple[list[tuple[float, float, float, float]], tuple[int, int] | None]:
    """Boxes of a Pascal-VOC XML file as continuous ``(x0, y0, x1, y1)``, and the
    ``(height, width)`` it records (``None`` when absent).

    The boxes named ``class_name`` when there are any (or ``class_name`` is ``None``:
    all), otherwise all boxes. Every box of the file is checked, so that a broken
    annotation is found rather than turned into a wrong mask: ``xmin <= xmax``,
    ``ymin <= ymax``, and inside the ``(height, width)`` ``image_size`` (default: the
    recorded size, when there is one); a violation is a ``ValueError`` naming the file
    and the box.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: not a valid VOC XML file ({err})") from err
    size = None
    width, height = root.findtext("size/width"), root.findtext("size/height")
    if width and height and int(float(width)) > 0 and int(float(height)) > 0:
        size = (int(float(height)), int(float(width)))
    boxes: list[tuple[str, tuple[float, float, float, float]]] = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        try:
            xmin, ymin, xmax, ymax = (
                float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: a bndbox lacks a numeric xmin/ymin/xmax/ymax") from err
        name = (obj.findtext("name") or "").strip()
        _check_box(path, name, (xmin, ymin, xmax, ymax), image_size or size)
        boxes.append((name, (xmin - 1, ymin - 1, xmax, ymax)))
    named = [b for n, b in boxes if n == class_name]
    return (named if named else [b for _, b in boxes]), size


def _check_box(
    path: str | os.PathLike,
    name: str,
    box: tuple[float, float, float, float],
    image_size: tuple[int, int] | None,
) -> None:
    """Raise naming ``path`` and the box when the VOC ``box`` is inverted or outside
    the ``(height, width)`` image (0 is allowed as a minimum: 0-based annotations)."""
    xmin, ymin, xmax, ymax = box
    shown = f"box {name!r} (xmin {xmin:g}, ymin {ymin:g}, xmax {xmax:g}, ymax {ymax:g})"
    if xmin > xmax or ymin > ymax:
        raise ValueError(f"{path}: {shown} has xmin > xmax or ymin > ymax")
    if image_size is not None:
        h, w = image_size
        if xmin < 0 or ymin < 0 or xmax > w or ymax > h:
            raise ValueError(f"{path}: {shown} lies outside the {w}x{h} (width x height) image")


def box_mask(
    boxes: list[tuple[float, float, float, float]], h: int, w: int, resize: int, size: int
) -> torch.Tensor:
    """bool (size, size): the union of ``boxes`` (continuous coordinates of an ``(h, w)``
    image) after :func:`~cambench.data.sampling.resize_center_crop` — a pixel is True
    when its centre, mapped back to the original image, lies inside a box."""
    g = crop_geometry(h, w, resize, size)
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    # centre of stored pixel -> resized image -> original image (align_corners=False)
    x = (centres + g.left) * (w / g.resized_w)
    y = (centres + g.top) * (h / g.resized_h)
    mask = torch.zeros(size, size, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        x0, x1 = max(x0, 0.0), min(x1, float(w))
        y0, y1 = max(y0, 0.0), min(y1, float(h))
        inside_x = (x >= x0) & (x <= x1)
        inside_y = (y >= y0) & (y <= y1)
        mask |= inside_y[:, None] & inside_x[None, :]
    return mask


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """uint8 (3, H, W) RGB (greyscale, palette and alpha images converted).

    Raises :class:`DamagedImageError` (one line naming the file and the reason) for a
    truncated, garbled or non-image file, instead of PIL's error without the path.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        message = str(err).replace(f"'{path}'", "").replace(str(path), "")
        reason = " ".join(message.split()) or type(err).__name__
        raise DamagedImageError(f"{path}: damaged image file ({reason})") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _load_one(
    path: Path,
    class_name: str,
    split_dir: str,
    boxes: Path | None,
    resize: int,
    size: int,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    image = load_image(path)
    h, w = image.shape[-2:]
    if min(h, w) < 1:
        raise ValueError(f"{path}: empty image")
    stored = resize_center_crop(image.unsqueeze(0), resize, size)[0]
    mask = torch.zeros(size, size, dtype=torch.bool)
    found = False
    if boxes is not None:
        xml = find_box_file(boxes, split_dir, class_name, path.stem)
        if xml is not None:
            found = True
            box_list, recorded = read_voc_boxes(xml, class_name, image_size=(h, w))
            if recorded is not None and recorded != (h, w):
                raise ValueError(
                    f"{xml}: records image size {recorded[1]}x{recorded[0]} (width x height) "
                    f"but {path} is {w}x{h}"
                )
            mask = box_mask(box_list, h, w, resize, size)
    return stored, mask, found


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def write_imagefolder_split(
    path: str | os.PathLike,
    root: str | os.PathLike,
    split_dir: str,
    classes: list[str],
    image_size: int,
    resize: int,
    boxes: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    require_all: bool = False,
    skip_damaged: bool = False,
    attrs: dict[str, Any] | None = None,
) -> tuple[int, int, dict[str, Any]]:
    """Decode one split in balanced order and write it to ``path`` block by block
    (:data:`BLOCK` images in memory at a time); return the images written, the
    split's full size and the attributes written (``attrs`` updated with
    ``has_masks``, ``n_with_mask``, ``source_size`` (the full size) and, with
    ``skip_damaged``, ``n_damaged``).

    A damaged image fails the split (:func:`load_image`), or with ``skip_damaged`` is
    left out, with a warning naming the files and ``n_damaged`` in the attributes.
    """
    paths, labels = list_images(Path(root) / split_dir, classes, require_all)
    order = balanced_order(labels, seed, limit)
    chosen = [paths[i] for i in order.tolist()]
    labels = labels[order]
    box_dir = Path(boxes) if boxes else None
    if box_dir is not None and not box_dir.is_dir():
        raise FileNotFoundError(f"imagefolder: boxes folder {box_dir.resolve()} does not exist")
    n = len(chosen)

    def load(k: int) -> tuple[torch.Tensor, torch.Tensor, bool] | DamagedImageError:
        try:
            return _load_one(
                chosen[k], classes[int(labels[k])], split_dir, box_dir, resize, image_size
            )
        except DamagedImageError as err:
            if not skip_damaged:
                raise
            return err

    damaged: list[str] = []
    with_mask = 0
    out_attrs = dict(attrs or {})
    size = (image_size, image_size)
    # decoding and resizing release the GIL; map() keeps the order, so results are
    # deterministic whatever the number of threads
    with (
        ThreadPoolExecutor(_workers()) as pool,
        SplitWriter(path, size, classes, out_attrs, expected=n) as writer,
    ):
        for start in range(0, n, BLOCK):
            block = range(start, min(start + BLOCK, n))
            images, masks, kept = [], [], []
            for k, result in zip(block, pool.map(load, block), strict=True):
                if isinstance(result, DamagedImageError):
                    damaged.append(str(result))
                    continue
                image, mask, found = result
                images.append(image)
                masks.append(mask)
                kept.append(k)
                with_mask += found
            if kept:
                writer.append(torch.stack(images), labels[kept], torch.stack(masks))
        writer.attrs.update(
            has_masks=box_dir is not None, n_with_mask=with_mask, source_size=len(paths)
        )
        if skip_damaged:
            writer.attrs["n_damaged"] = len(damaged)
        written = writer.n
        out_attrs = dict(writer.attrs)
    if damaged:
        print(
            f"warning: imagefolder {split_dir}: skipped {len(damaged)} damaged image(s) "
            f"(skip_damaged: true):\n  " + "\n  ".join(damaged),
            file=sys.stderr,
        )
    return written, len(paths), out_attrs


def prepare_imagefolder(
    dataset_config: dict[str, Any], out_paths: dict[str, str | os.PathLike]
) -> dict[str, Path]:
    """Write the ``train`` and ``test`` splits of an image-folder dataset (module docstring)."""
    root = dataset_config.get("root")
    if not root:
        raise ValueError("dataset.root is required for imagefolder: the folder with train/, val/")
    if dataset_config.get("download"):
        raise ValueError("dataset.download is only for cifar10/cifar100, not imagefolder")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"imagefolder: dataset not found at {root.resolve()}; dataset.root must be a "
            f"folder with train/<class>/ and val/<class>/ image folders"
        )
    size = int(dataset_config.get("image_size") or 224)
    resize = int(dataset_config.get("resize") or default_resize(size))
    seed = int(dataset_config.get("seed", 0))
    boxes = dataset_config.get("boxes") or None
    test_dir = next((d for d in TEST_FOLDERS if (root / d).is_dir()), None)
    if test_dir is None:
        raise FileNotFoundError(
            f"imagefolder: no val/ (or test/) folder in {root.resolve()} for the test split"
        )
    classes = find_classes(root / "train")
    out = {}
    for split_name, split_dir, limit, split_seed in (
        ("train", "train", dataset_config.get("max_train"), 2 * seed),
        ("test", test_dir, dataset_config.get("max_test"), 2 * seed + 1),
    ):
        attrs: dict[str, Any] = {
            "dataset": "imagefolder",
            "split": split_name,
            "seed": seed,
            "image_size": size,
            "resize": resize,
            "root": str(dataset_config["root"]),
            "folder": split_dir,
        }
        if boxes:
            attrs["boxes"] = str(boxes)
        path = Path(out_paths[split_name])
        n, total, attrs = write_imagefolder_split(
            path,
            root,
            split_dir,
            classes,
            size,
            resize,
            boxes=boxes,
            limit=limit,
            seed=split_seed,
            require_all=split_name == "train",
            skip_damaged=bool(dataset_config.get("skip_damaged", False)),
            attrs=attrs,
        )
        if boxes and attrs["n_with_mask"] < n:
            print(
                f"warning: imagefolder {split_name}: {n - attrs['n_with_mask']} "
                f"of {n} images have no box file under {boxes}; their masks are empty",
                file=sys.stderr,
            )
        print(
            f"imagefolder {split_name}: {n} of {total} images from {root / split_dir}, "
            f"{len(classes)} classes, {size}x{size} -> {path}"
        )
        out[split_name] = path
    return out

"""mask_oracle: the object mask as a map — equal to the dataset's masks, blurred like
scipy's Gaussian filter, a sanity baseline in the summary, refused without masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import ndimage

from cambench.best import rankable
from cambench.data.shapes import generate_shapes
from cambench.data.store import Split
from cambench.saliency import METHODS, explain
from cambench.saliency.core import example_inputs
from cambench.specs import apply_experiment, check_schema, parse_config
from cambench.summary.render import summary_markdown, summary_table

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes():
    images, labels, masks = generate_shapes(4, image_size=32, num_classes=4, seed=3)
    return images.float() / 255, labels, masks


def test_maps_equal_the_datasets_masks(shapes):
    images, labels, masks = shapes
    model, _, _ = example_inputs()
    maps = explain("mask_oracle", model, images, labels, object_masks=masks)
    assert masks.any((1, 2)).all()  # every shapes image has an object
    assert torch.equal(maps, masks.float())


@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_blurred_variant_is_a_gaussian_filter_of_the_mask(shapes, sigma):
    images, labels, masks = shapes
    model, _, _ = example_inputs()
    maps = explain("mask_oracle", model, images, labels, object_masks=masks, blur_sigma=sigma)
    for i in range(len(masks)):  # reference: scipy, then min-max as every map
        ref = ndimage.gaussian_filter(
            masks[i].numpy().astype(np.float64), sigma, mode="mirror", truncate=4.0
        )
        ref = (ref - ref.min()) / (ref.max() - ref.min())
        np.testing.assert_allclose(maps[i].numpy(), ref, atol=1e-5)


def test_hand_computed_blur_of_one_pixel():
    """A single pixel blurred with σ = 1: the normalized map is exp(-d²/2) (d the
    distance to the pixel, far from the border)."""
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, 16, 16] = True
    model, images, targets = example_inputs(batch=1)
    maps = explain("mask_oracle", model, images, targets, object_masks=masks, blur_sigma=1.0)
    for dy, dx in [(0, 0), (0, 1), (1, 1), (2, 0), (3, 2)]:
        expected = np.exp(-(dy**2 + dx**2) / 2)
        assert maps[0, 16 + dy, 16 + dx].item() == pytest.approx(expected, abs=1e-6)
    assert maps[0, 16 + 5, 16].item() == 0.0  # cut at 4 σ


def test_without_masks_it_is_a_clear_error():
    model, images, targets = example_inputs()
    with pytest.raises(ValueError, match="'mask_oracle' reads the images' object masks"):
        explain("mask_oracle", model, images, targets)
    with pytest.raises(ValueError, match=r"object_masks must be \(2, 32, 32\)"):
        explain("mask_oracle", model, images, targets, object_masks=torch.ones(2, 16, 16))
    assert METHODS["mask_oracle"].needs_masks and not METHODS["gradcam"].needs_masks


def _summary(methods):
    n = len(methods)
    return pd.DataFrame(
        {
            "model": ["m"] * n,
            "method": methods,
            "n_images": [10] * n,
            "PG": [50.0 + 10 * i for i in range(n)],  # the last is the best
            "AD": [30.0 - i for i in range(n)],
        }
    )


def test_never_bold_and_marked_a_sanity_baseline_in_the_summary():
    summary = _summary(["gradcam", "layercam", "mask_oracle"])  # mask_oracle best in both
    assert rankable(summary).tolist() == [True, True, False]
    table = summary_table(summary)
    oracle_row = table.rows[2]
    assert not any(cell.bold for cell in oracle_row)
    assert any(cell.bold for cell in table.rows[1])  # layercam is the best that counts
    empty = pd.DataFrame()
    text = summary_markdown(summary, empty, empty, "x", [], 0.95, 100, None)
    assert "never the sanity baselines fakecam, random, mask_oracle" in text
    assert "mask_oracle is the object mask itself" in text
    assert "**" not in text.split("| mask_oracle")[1].splitlines()[0]


def test_summary_text_without_the_oracle_is_as_before():
    empty = pd.DataFrame()
    text = summary_markdown(
        _summary(["gradcam", "fakecam"]), empty, empty, "x", [], 0.95, 100, None
    )
    assert "never the sanity baselines fakecam, random, nor" in text
    assert "mask_oracle" not in text


def _config(dataset, methods):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    apply_experiment(config, {"methods": methods, "sanity": {}})
    config["dataset"] = dataset
    return config


@pytest.mark.parametrize(
    "dataset",
    [
        {"name": "cifar10", "root": "."},
        {"name": "imagefolder", "root": "."},  # an image folder without boxes
    ],
)
def test_refused_at_config_time_on_a_dataset_without_masks(dataset):
    from snakemake.utils import validate

    config = _config({**dataset, "image_size": 32}, {"gradcam": {}, "mask_oracle": {}})
    check_schema(config)
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    with pytest.raises(ValueError, match="config key 'methods.mask_oracle'.*has none"):
        parse_config(config)


def test_saliency_job_refuses_a_split_without_masks(tmp_path):
    from cambench.data.store import write_split
    from cambench.jobs import saliency
    from cambench.models import save_checkpoint

    model, images, _ = example_inputs()
    split = Split(
        (images * 255).to(torch.uint8),
        torch.tensor([0, 1]),
        torch.zeros(2, 32, 32, dtype=torch.bool),
        [str(i) for i in range(10)],
        {"dataset": "imagefolder", "split": "test", "has_masks": False},
    )
    write_split(tmp_path / "test.h5", split)
    save_checkpoint(
        tmp_path / "m.pt",
        model,
        {"kind": "baseline", "arch": "resnet_small", "width": 8, "blocks": [1, 1, 1, 1]},
        10,
        split.class_names,
    )
    with pytest.raises(ValueError, match="'mask_oracle' reads object masks.*methods.mask_oracle"):
        saliency.run(
            tmp_path / "m.pt",
            tmp_path / "test.h5",
            tmp_path / "out.h5",
            "mask_oracle",
            {},
            None,
            2,
            1,
            0,
            2,
            "label",
            torch.device("cpu"),
            "m",
            False,
        )
    assert not (tmp_path / "out.h5").exists()

"""The data randomization sanity check: SSIM against scikit-image, the correlations
against scipy, the flag (Fake-CAM flagged, Grad-CAM not), permuted-label training,
config errors before any job, and the whole check through the workflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats
from skimage.metrics import structural_similarity

from cambench.data.store import Split
from cambench.jobs.train import permuted_labels
from cambench.metrics.similarity import data_randomization_test, ssim
from cambench.models.small_resnet import SmallResNet
from cambench.specs import apply_experiment, check_schema, parse_config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _pair(seed_a=0, seed_b=1):
    torch.manual_seed(seed_a)
    a = SmallResNet(num_classes=4, width=8, blocks=(1, 1, 1, 1)).eval()
    torch.manual_seed(seed_b)
    b = SmallResNet(num_classes=4, width=8, blocks=(1, 1, 1, 1)).eval()
    return a, b


@pytest.mark.parametrize("size", [(11, 11), (32, 32), (24, 40)])
def test_ssim_matches_scikit_image(size):
    g = torch.Generator().manual_seed(sum(size))
    a = torch.rand(3, *size, generator=g)
    b = (a + 0.3 * torch.rand(3, *size, generator=g)).clamp(0, 1)
    b[2] = torch.rand(*size, generator=g)  # unrelated
    ours = ssim(a, b)
    for i in range(3):
        ref = structural_similarity(
            a[i].double().numpy(),
            b[i].double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert ours[i].item() == pytest.approx(ref, abs=1e-10)


def test_ssim_properties_and_errors():
    a = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ssim(a, a), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(ssim(a, a.flip(0)), ssim(a.flip(0), a))  # symmetric
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8))


def test_fakecam_is_flagged_and_gradcam_is_not():
    a, b = _pair()
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    fake = data_randomization_test(a, b, images, targets, "fakecam")
    assert fake.data_independent(0.99)
    assert torch.equal(fake.spearman, torch.ones(6, dtype=torch.float64))
    assert torch.equal(fake.ssim, torch.ones(6, dtype=torch.float64))
    grad = data_randomization_test(a, b, images, targets, "gradcam", batch_size=4)
    assert not grad.data_independent(0.99)
    assert grad.spearman.mean() < 0.9


def test_mask_oracle_is_flagged():
    a, b = _pair()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 3:20, 5:9] = True
    masks[1, 10:30, 10:30] = True
    out = data_randomization_test(
        a, b, images, torch.tensor([0, 1]), "mask_oracle", object_masks=masks
    )
    assert out.data_independent(0.99)


def test_correlations_with_and_without_absolute_values_match_scipy():
    """A plain method with signed scores that depend on the model: Spearman of the
    signed and absolute raw scores, upsampled, against scipy.stats.spearmanr."""
    a, b = _pair()
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([0, 1, 2])

    def signed(model, images, targets, layer):  # (B, 4, 4) signed, model-dependent
        w = model.fc.weight[targets, :3]  # (B, 3)
        x = torch.nn.functional.avg_pool2d(images, 4) - 0.5
        return torch.einsum("bc,bchw->bhw", w, x)

    out = data_randomization_test(a, b, images, targets, signed)
    for net_maps in (out.maps, out.randomized_maps):
        assert net_maps.shape == (3, 16, 16)

    def upsampled(model):
        raw = signed(model, images, targets, None).detach()
        return torch.nn.functional.interpolate(
            raw[:, None], size=(16, 16), mode="bilinear", align_corners=False
        )[:, 0]

    ra, rb = upsampled(a), upsampled(b)
    for i in range(3):
        ref_signed = stats.spearmanr(ra[i].flatten(), rb[i].flatten()).statistic
        ref_abs = stats.spearmanr(ra[i].abs().flatten(), rb[i].abs().flatten()).statistic
        assert out.spearman_signed[i].item() == pytest.approx(ref_signed, abs=1e-6)
        assert out.spearman_abs[i].item() == pytest.approx(ref_abs, abs=1e-6)
        ref_maps = stats.spearmanr(out.maps[i].flatten(), out.randomized_maps[i].flatten())
        assert out.spearman[i].item() == pytest.approx(ref_maps.statistic, abs=1e-6)


def test_permuted_labels_are_a_seeded_permutation():
    labels = torch.arange(40) % 4
    split = Split(torch.zeros(40, 3, 4, 4, dtype=torch.uint8), labels, torch.zeros(40, 4, 4), [])
    one, again, other = (permuted_labels(split, s) for s in (0, 0, 1))
    assert torch.equal(one.labels, again.labels) and not torch.equal(one.labels, other.labels)
    assert torch.equal(one.labels.sort().values, labels.sort().values)
    assert (one.labels != labels).float().mean() > 0.5
    assert one.images is split.images and torch.equal(split.labels, labels)  # not in place


def _config(sanity, methods=None):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    over = {"sanity": sanity}
    if methods is not None:
        over["methods"] = methods
    apply_experiment(config, over)
    return config


def _parse(sanity, methods=None):
    from snakemake.utils import validate

    config = _config(sanity, methods)
    check_schema(config)
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return parse_config(config)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"model": "resnet"}, "'sanity.data_randomization.model': 'resnet' is not a configured"),
        (
            {"model": "baseline", "methods": ["gradcam", "scorcam"]},
            "'sanity.data_randomization.methods': 'scorcam' is not a configured method",
        ),
        ({"model": "castream"}, "'sanity.data_randomization.model': 'castream' is a castream"),
    ],
)
def test_bad_blocks_are_refused_naming_the_key(block, message):
    with pytest.raises(ValueError, match=message):
        _parse({"randomization": False, "data_randomization": block})


def test_zero_images_is_refused_naming_the_key():
    config = _config({"data_randomization": {"model": "baseline", "n_images": 0}})
    with pytest.raises(ValueError, match="'sanity.data_randomization.n_images': 0 is less than"):
        check_schema(config)


def test_the_block_is_parsed_and_off_by_default():
    default = _parse({"randomization": False})
    assert default.sanity.data_randomization is None and default.data_randomization_pairs() == []
    exp = _parse(
        {
            "randomization": False,
            "data_randomization": {"model": "baseline", "methods": ["gradcam"]},
        }
    )
    spec = exp.sanity.data_randomization
    assert (spec.model, spec.methods, spec.n_images, spec.epochs, spec.seed) == (
        "baseline",
        ("gradcam",),
        32,
        None,
        0,
    )
    assert exp.data_randomization_pairs() == [("baseline", "gradcam")]


# ------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_workflow_runs_the_check_and_reruns_identically(tmp_path, tiny_run_template):
    from conftest import copy_of_run, planned_jobs, snakemake

    # on the finished tiny run: only mask_oracle's maps and the check's jobs are new
    workdir = copy_of_run(tiny_run_template, tmp_path / "run")
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["methods"]["mask_oracle"] = {}
    config["sanity"] = {
        "randomization": False,
        "data_randomization": {
            "model": "baseline",
            "methods": ["gradcam", "fakecam", "mask_oracle"],
            "n_images": 8,
            "epochs": 4,
            "seed": 3,
        },
    }
    (workdir / "dr.yaml").write_text(yaml.safe_dump(config))
    plan = planned_jobs(snakemake(workdir, "-n", "--configfile", "dr.yaml").stdout)
    assert plan["train_datarand"] == 1 and plan["data_randomization"] == 3
    assert "train" not in plan and plan["saliency"] == 2  # mask_oracle's two shards only
    snakemake(workdir, "--cores", "2", "--configfile", "dr.yaml")
    results = workdir / "results" / "tiny"
    folder = results / "sanity" / "data-randomization" / "baseline"
    rows = pd.concat(
        [pd.read_csv(folder / f"{m}.csv") for m in ("gradcam", "fakecam", "mask_oracle")]
    )
    rows = rows.set_index("method")
    print(
        rows[
            [
                "spearman",
                "spearman_abs",
                "spearman_signed",
                "ssim",
                "randomized_train_acc",
                "randomized_test_acc",
                "epochs",
            ]
        ].to_string()
    )
    assert rows.loc["fakecam", "data_independent"] and rows.loc["mask_oracle", "data_independent"]
    assert not rows.loc["gradcam", "data_independent"]
    assert (rows["permutation_seed"] == 3).all() and (rows["epochs"] == 4).all()
    summary = pd.read_csv(results / "summary.csv").set_index("method")
    checked = summary.loc[["gradcam", "fakecam", "mask_oracle"], "data_independent"]
    assert checked.tolist() == [False, True, True]
    assert pd.isna(summary.loc["random", "data_independent"])  # not in the check
    text = (results / "summary.md").read_text()
    assert "## Sanity check: data randomization" in text and "seed 3" in text
    assert "gradcam†" not in text and "fakecam†" in text
    assert (results / "plots" / "data_randomization.png").stat().st_size > 10_000
    before = {
        p: p.read_bytes()
        for p in [*folder.iterdir(), results / "summary.md", results / "summary.csv"]
    }
    snakemake(
        workdir,
        "--cores",
        "2",
        "--configfile",
        "dr.yaml",
        "--forcerun",
        "data_randomization",
        "summarize",
    )
    for path, data in before.items():
        assert path.read_bytes() == data, path


def test_example_file_is_byte_identical_and_drawn(tmp_path):
    from cambench.jobs.datarand import write_npz
    from cambench.plots.datarand import plot_data_randomization

    g = np.random.default_rng(0)
    arrays = {
        "images": g.integers(0, 255, (2, 3, 16, 16), dtype=np.uint8),
        "maps": g.random((2, 16, 16)).astype(np.float16),
        "randomized_maps": g.random((2, 16, 16)).astype(np.float16),
        "spearman": g.random(2),
        "method": np.array("gradcam"),
        "model": np.array("baseline"),
    }
    write_npz(tmp_path / "a.npz", arrays)
    write_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as npz:
        assert str(npz["method"]) == "gradcam" and np.array_equal(npz["maps"], arrays["maps"])
    plot_data_randomization([tmp_path / "a.npz"], tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 5_000 and (tmp_path / "fig.pdf").exists()

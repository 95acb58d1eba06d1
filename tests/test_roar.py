"""ROAR and KAR (cambench.jobs.roar, rules/roar.smk): a dataset whose answer is known by
construction, the lazy reader of a split's maps, the aggregates against hand
computations, config errors before any job, and what a changed setting reruns."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import copy_of_run, planned_jobs, snakemake
from test_config import ROOT, check_config

from cambench.cache import read_saliency
from cambench.data.store import Split, read_split, write_split
from cambench.jobs import roar
from cambench.jobs import saliency as saliency_job
from cambench.models import build_model, save_checkpoint
from cambench.saliency import register

SIZE, PATCH = 16, 4  # the class is the colour of the top-left 4×4 patch: 16 of 256 pixels
FRACTION = PATCH * PATCH / (SIZE * SIZE)
MODEL = {
    "kind": "baseline",
    "arch": "resnet_small",
    "width": 8,
    "blocks": [1, 1, 1, 1],
    "epochs": 3,
    "batch_size": 32,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "seed": 0,
}


def patch_split(n: int, seed: int) -> Split:
    """Grey noise images (equal channels: no colour anywhere) whose top-left patch is
    red (class 0) or green (class 1): the evidence lies in the patch alone."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    grey = torch.randint(60, 196, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    images = grey.repeat(1, 3, 1, 1)
    colour = torch.where(
        labels[:, None] == 0, torch.tensor([220, 30, 30]), torch.tensor([30, 220, 30])
    )
    images[:, :, :PATCH, :PATCH] = colour.to(torch.uint8)[:, :, None, None]
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    masks[:, :PATCH, :PATCH] = True
    return Split(images, labels, masks, ["red", "green"], {"dataset": "patch", "split": ""})


def oracle(model, images, targets, layer, **params):
    """The known evidence: 1 on the patch, 0 elsewhere."""
    maps = torch.zeros(images.shape[0], *images.shape[2:], device=images.device)
    maps[:, :PATCH, :PATCH] = 1.0
    return maps


@pytest.fixture(scope="module")
def patch_data(tmp_path_factory):
    """Splits, a checkpoint, and each split's maps by the oracle and ``random``
    (through the saliency job on the whole split, in two shards for train)."""
    from cambench.saliency import METHODS

    if "patch_oracle" not in METHODS:
        register("patch_oracle", uses_layer=False)(oracle)
    root = tmp_path_factory.mktemp("roar")
    for name, n, seed in (("train", 400, 0), ("test", 120, 1)):
        split = patch_split(n, seed)
        split.attrs["split"] = name
        write_split(root / f"{name}.h5", split)
    torch.manual_seed(0)
    save_checkpoint(root / "model.pt", build_model(MODEL, 2), MODEL, 2, ["red", "green"])
    maps = {}
    for method, params in (("patch_oracle", {}), ("random", {"seed": 3})):
        for split, shards in (("train", 2), ("test", 1)):
            paths = [root / f"{method}-{split}-{k}.h5" for k in range(shards)]
            for k, path in enumerate(paths):
                saliency_job.run(
                    root / "model.pt",
                    root / f"{split}.h5",
                    path,
                    method=method,
                    params=params,
                    layer=None,
                    n_images=None,
                    shards=shards,
                    shard=k,
                    batch_size=64,
                    target="label",
                    device=torch.device("cpu"),
                    model_name="m",
                    progress=False,
                )
            maps[method, split] = paths
    yield root, maps
    METHODS.pop("patch_oracle", None)


def _retrain(root, maps, method, mode, imputation="mean"):
    job = roar.RetrainJob(
        name="m",
        model_config=MODEL,
        train_path=root / "train.h5",
        test_path=root / "test.h5",
        model_path=root / "model.pt",
        train_maps=maps[method, "train"],
        test_maps=maps[method, "test"],
        method=method,
        mode=mode,
        fraction=FRACTION,
        seed=0,
        imputation=imputation,
        noise=0.01,
        augment={"hflip": False},
        out=root / f"{method}-{mode}-{imputation}.json",
    )
    return roar.retrain(job, torch.device("cpu"))


def test_the_saliency_job_covers_the_whole_train_split_in_shards(patch_data):
    root, maps = patch_data
    caches = [read_saliency(p) for p in maps["patch_oracle", "train"]]
    assert torch.cat([c.index for c in caches]).tolist() == list(range(400))
    assert {c.attrs["split"] for c in caches} == {"train"}
    assert all(c.attrs["n_images"] == 400 for c in caches)


def test_shard_maps_read_any_rows_as_the_verified_cache_holds_them(patch_data):
    root, maps = patch_data
    from cambench.models import file_sha256

    paths = maps["random", "train"]
    rows = roar.ShardMaps(paths, file_sha256(root / "model.pt"), 400)
    whole = torch.cat([read_saliency(p).maps for p in paths])
    positions = torch.tensor([399, 3, 250, 3, 0, 199, 200])  # unordered, repeated, both shards
    assert torch.equal(rows[positions], whole[positions])
    assert torch.equal(rows[10:300:7], whole[10:300:7])
    with pytest.raises(ValueError, match="another checkpoint"):
        roar.ShardMaps(paths, "0" * 64, 400)
    with pytest.raises(ValueError, match="hold 400 maps, the split 401"):
        roar.ShardMaps(paths, file_sha256(root / "model.pt"), 401)
    with pytest.raises(ValueError, match="positions 0..199"):
        roar.ShardMaps(paths[::-1], file_sha256(root / "model.pt"), 400)
    rows.close()


def test_roar_on_the_evidence_drops_to_chance_and_random_does_not(patch_data):
    root, maps = patch_data
    oracle_roar = _retrain(root, maps, "patch_oracle", "roar")["test_acc"]
    random_roar = _retrain(root, maps, "random", "roar")["test_acc"]
    assert oracle_roar <= 0.6, oracle_roar  # chance is 0.5: no evidence left
    assert random_roar >= 0.9, random_roar  # ~1 of the 16 patch pixels removed


def test_kar_is_the_mirror(patch_data):
    root, maps = patch_data
    oracle_kar = _retrain(root, maps, "patch_oracle", "kar")["test_acc"]
    random_kar = _retrain(root, maps, "random", "kar")["test_acc"]
    assert oracle_kar >= 0.9, oracle_kar  # the patch alone is kept
    assert random_kar <= oracle_kar - 0.15, (oracle_kar, random_kar)


def test_noisy_linear_imputation_removes_the_evidence_too(patch_data):
    root, maps = patch_data
    record = _retrain(root, maps, "patch_oracle", "roar", imputation="noisy_linear")
    assert record["test_acc"] <= 0.6, record["test_acc"]


def test_degraded_images_are_the_imputation_of_the_ranked_pixels(patch_data):
    """The noisy linear hook against the ROAD metric's imputation on [0, 1] images,
    quantized back, with the same hashed noise draws per split position."""
    from cambench.data.degrade import replaced_pixels
    from cambench.metrics.draws import hash_normal
    from cambench.metrics.road import noisy_linear_imputation

    root, _ = patch_data
    split = read_split(root / "test.h5")
    maps = torch.rand(len(split), SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([100.0, 110.0, 120.0])
    out = roar.degraded(split, maps, 0.3, "roar", mean, 5, roar.noisy_linear(0.02, 5))
    positions = torch.tensor([7, 2, 90])
    got = out.images[positions]
    images = split.images[positions]
    replaced = replaced_pixels(maps[positions], positions, 0.3, keep=False, seed=5)
    z = hash_normal(positions, 3 * SIZE * SIZE, 5, 0).reshape(3, 3, SIZE, SIZE)
    want = noisy_linear_imputation(images.double() / 255, replaced, 0.02 * z)
    want = (want * 255).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(got, want)
    assert torch.equal(
        got[~replaced[:, None].expand_as(got)], images[~replaced[:, None].expand_as(images)]
    )
    split.close()


# --------------------------------------------------------------------------- aggregates


def _rows(accuracy):
    return pd.DataFrame(
        [
            {
                "model": "m",
                "mode": "roar",
                "method": method,
                "fraction": f,
                "seed": s,
                "retrain_seed": s + 1,
                "imputation": "mean",
                "epochs": 1,
                "test_acc": accuracy(method, f, s),
                "unmodified_acc": 0.95,
            }
            for method, f, s in itertools.product(("gradcam", "random"), (0.1, 0.5, 0.9), range(3))
        ]
    )


def test_areas_and_paired_comparison_by_hand():
    acc = {"gradcam": [0.8, 0.4, 0.2], "random": [0.9, 0.8, 0.6]}
    rows = _rows(lambda m, f, s: acc[m][[0.1, 0.5, 0.9].index(f)] + 0.01 * s)
    areas = roar.area_table(rows).set_index("method")
    # trapezoid over [0.1, 0.9]: ((0.8 + 0.4)/2·0.4 + (0.4 + 0.2)/2·0.4) / 0.8 = 0.45
    assert areas.loc["gradcam", "auc"] == pytest.approx(0.45 + 0.01)
    assert areas.loc["random", "auc"] == pytest.approx((0.85 * 0.4 + 0.7 * 0.4) / 0.8 + 0.01)
    assert areas.loc["gradcam", "auc_minus_random"] == pytest.approx(0.45 - 0.775)
    # three seeds, all differences negative: 2 of the 8 sign patterns are as extreme
    assert areas.loc["gradcam", "p_vs_random"] == pytest.approx(0.25)
    assert np.isnan(areas.loc["random", "p_vs_random"])


def test_aggregate_writes_every_setting_and_is_reproducible(tmp_path):
    rows = _rows(lambda m, f, s: 1 - f * (0.9 if m == "gradcam" else 0.3))
    records = []
    for r in rows.to_dict("records"):
        path = tmp_path / f"{r['method']}-{r['fraction']}-{r['seed']}.json"
        path.write_text(json.dumps({k: v for k, v in r.items() if k != "unmodified_acc"}))
        records.append(path)
    (tmp_path / "m.json").write_text(json.dumps({"model": "m", "test_acc": 0.95}))
    outs = [tmp_path / n for n in ("roar.csv", "auc.csv", "roar.md", "roar.png")]
    roar.aggregate(records[::-1], [tmp_path / "m.json"], *outs)
    first = [p.read_bytes() for p in outs]
    table = pd.read_csv(outs[0])
    assert len(table) == 18 and set(table["seed"]) == {0, 1, 2}
    assert table["unmodified_acc"].eq(0.95).all()
    assert "| m | roar | gradcam | 3 |" in outs[2].read_text()
    roar.aggregate(records, [tmp_path / "m.json"], *outs)
    assert [p.read_bytes() for p in outs] == first


# --------------------------------------------------------------------------- config

BLOCK = {"models": ["baseline"], "methods": ["gradcam", "random"], "fractions": [0.1, 0.5]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fractions": [0.5, 1.0]}, "protocols.roar.fractions.1"),
        ({"fractions": [0.0]}, "protocols.roar.fractions.0"),
        ({"methods": ["gradcam", "rise"]}, "protocols.roar.methods': 'rise' is not a configured"),
        ({"models": ["nope"]}, "protocols.roar.models': 'nope' is not a configured"),
        ({"models": ["castream"]}, "retrains from scratch"),
        ({"seeds": 0}, "protocols.roar.seeds"),
    ],
)
def test_bad_protocol_names_the_key(change, message):
    from cambench.specs import check_schema

    config = {"protocols": {"roar": {**BLOCK, **change}}}
    full = {**yaml.safe_load((ROOT / "config.yaml").read_text()), **config}
    with pytest.raises(ValueError, match=message):
        check_schema(full)  # the workflow's first check: one line naming the key
        check_config(config)


def test_protocol_spec_lists_every_retrain():
    exp = check_config({"protocols": {"roar": {**BLOCK, "modes": ["roar", "kar"], "seeds": 2}}})
    assert len(exp.roar.retrains()) == 1 * 2 * 2 * 2 * 2
    assert check_config({}).roar is None


# --------------------------------------------------------------------------- workflow

ROAR_BLOCK = {
    "models": ["baseline"],
    "methods": ["gradcam", "random"],
    "fractions": [0.2, 0.6],
    "modes": ["roar", "kar"],
    "seeds": 1,
    "shards": 2,
}


def _config(workdir, name, **block):
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["protocols"] = {"roar": {**ROAR_BLOCK, **block}}
    (workdir / name).write_text(yaml.safe_dump(config))
    return name


@pytest.fixture(scope="module")
def roar_run(tmp_path_factory, tiny_run_template):
    """The tiny experiment with a ROAR/KAR block, run once: 8 retrains, 8 map shards (on
    a copy of the finished tiny run, whose data, model and test maps are reused)."""
    workdir = copy_of_run(tiny_run_template, tmp_path_factory.mktemp("roar-workflow") / "run")
    plan = snakemake(workdir, "-n", "--configfile", _config(workdir, "roar.yaml"))
    jobs = planned_jobs(plan.stdout)
    snakemake(workdir, "--cores", "2", "--configfile", "roar.yaml")
    return workdir, jobs


@pytest.mark.slow
def test_the_workflow_runs_every_retrain_and_records_every_setting(roar_run):
    workdir, jobs = roar_run
    assert jobs["roar_retrain"] == 1 * 2 * 2 * 2 * 1  # models × modes × methods × fractions × seeds
    assert jobs["roar_saliency"] == 2 * 2 * 2  # splits × methods × shards
    assert "train" not in jobs and "prepare_data" not in jobs  # the copied run's
    results = workdir / "results" / "tiny"
    table = pd.read_csv(results / "roar.csv")
    settings = set(
        zip(table["mode"], table["method"], table["fraction"], table["seed"], strict=True)
    )
    assert settings == set(
        itertools.product(("kar", "roar"), ("gradcam", "random"), (0.2, 0.6), [0])
    )
    assert table["imputation"].eq("mean").all() and table["retrain_seed"].eq(1).all()
    assert (results / "plots" / "roar.png").stat().st_size > 10_000
    assert "## ROAR and KAR" in (results / "summary.md").read_text()
    assert (
        "nothing to be done" in snakemake(workdir, "-n", "--configfile", "roar.yaml").stdout.lower()
    )


@pytest.mark.slow
def test_a_rerun_gives_identical_files(roar_run):
    workdir, _ = roar_run
    results = workdir / "results" / "tiny"
    outputs = [results / "roar.csv", results / "roar_auc.csv", results / "plots" / "roar.png"]
    before = [p.read_bytes() for p in outputs]
    record = results / "roar" / "baseline" / "roar" / "gradcam" / "f0.6" / "seed-0.json"
    history = json.loads(record.read_text())["history"]
    snakemake(
        workdir,
        "--cores",
        "2",
        "--configfile",
        "roar.yaml",
        "--forcerun",
        str(record.relative_to(workdir)),
    )
    assert [p.read_bytes() for p in outputs] == before
    rerun = json.loads(record.read_text())["history"]
    assert [(e["train_loss"], e["test_acc"]) for e in rerun] == [
        (e["train_loss"], e["test_acc"]) for e in history
    ]


@pytest.mark.slow
def test_changing_a_fraction_reruns_only_that_fraction_and_the_aggregates(roar_run):
    workdir, _ = roar_run
    name = _config(workdir, "roar-f.yaml", fractions=[0.2, 0.7])
    jobs = planned_jobs(snakemake(workdir, "-n", "--configfile", name).stdout)
    # the summary takes the new ROAR section; its three figures are redrawn after it
    assert jobs == {
        "roar_retrain": 4,
        "roar_aggregate": 1,
        "summarize": 1,
        "plot_experiment": 3,
        "all": 1,
    }


@pytest.mark.slow
def test_a_bad_protocol_fails_before_any_job(roar_run):
    workdir, _ = roar_run
    for block, key in (
        ({"fractions": [0.5, 1.5]}, "protocols.roar.fractions.1"),
        ({"seeds": 0}, "protocols.roar.seeds"),
    ):
        out = snakemake(
            workdir, "-n", "--configfile", _config(workdir, "bad.yaml", **block), check=False
        )
        assert out.returncode != 0 and key in out.stdout + out.stderr

"""Configuration: schema validation before any job runs, and experiment files."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import copy_workflow, planned_jobs, snakemake

from cambench.specs import ModelSpec, apply_experiment, parse_config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def check_config(overrides):
    """Validate (schema defaults filled) and parse the default config with the
    ``models``/``methods``/other keys of ``overrides`` in place."""
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.update(overrides)
    config.setdefault("sanity", {})
    if "methods" in overrides and "sanity" not in overrides:
        config["sanity"] = {"randomization": False}
    if not config["methods"]:
        config["methods"] = {"gradcam": {}}
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return parse_config(config)


def _spec(kind="baseline", arch="resnet_small"):
    return ModelSpec("m", kind, {"kind": kind}, arch, None, "", 1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("config"))


def _write(workdir, name, **changes):
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    (workdir / name).write_text(yaml.safe_dump(config))
    return name


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("eval.n_imagez", 3, "n_imagez"),
        ("dataset.image_size", "big", "big"),
        ("methods.gradcm", {}, "methods.gradcm"),
        ("methods.random", {"sead": 1}, "methods.random"),
        ("models.baseline.epochz", 1, "epochz"),
        ("methods.random", {"seed": "seven"}, "'methods.random.seed': expected int"),
        ("eval.shards", 99, "'eval.shards': 99 shards of 16 images"),
        (
            "eval.n_images",
            41,
            "'eval.n_images': 41 images, but the test split of dataset "
            "'shapes' holds 40 (dataset.test_size)",
        ),
        ("experiment", "..", "experiment"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(workdir, key, value, message):
    name = _write(workdir, "bad.yaml", **{key: value})
    proc = snakemake(workdir, "-n", "--configfile", name, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_fails_before_any_job(workdir):
    """Checked when jobs would run here (onstart), not in a dry run: the config may be
    meant for a cluster's GPU nodes."""
    name = _write(workdir, "cuda.yaml", device="cuda")
    assert snakemake(workdir, "-n", "--configfile", name).returncode == 0
    proc = snakemake(workdir, "--cores", "1", "--configfile", name, check=False)
    assert proc.returncode != 0
    assert (
        "config key 'device': device 'cuda' requested but CUDA is not available on this "
        "machine" in proc.stdout + proc.stderr
    )
    assert not (workdir / "results").exists()


def test_a_missing_dataset_root_fails_before_any_job(workdir):
    name = _write(
        workdir, "noroot.yaml", **{"dataset.name": "imagefolder", "dataset.root": "no/such"}
    )
    proc = snakemake(workdir, "-n", "--configfile", name, check=False)
    assert proc.returncode != 0
    assert "config key 'dataset.root': 'no/such' is not a folder" in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


def test_experiment_file_replaces_models_and_methods(workdir):
    proc = snakemake(workdir, "-n", "--configfile", "tiny.yaml")
    jobs = planned_jobs(proc.stdout)
    # tiny: one model, three methods, two shards (the default has seven methods).
    assert jobs["train"] == 1
    assert jobs["saliency"] == 3 * 2 and jobs["metrics"] == 3 * 2
    assert "results/tiny/saliency/baseline/gradcampp" not in proc.stdout


def test_default_config_plans_every_applicable_method(workdir):
    default = yaml.safe_load((workdir / "config.yaml").read_text())
    jobs = planned_jobs(snakemake(workdir, "-n").stdout)
    pairs = check_config({}).pairs()
    n = len(pairs) * default["eval"]["shards"]
    assert jobs["saliency"] == n and jobs["metrics"] == n
    assert ("castream", "castream_attention") in pairs and (
        "baseline",
        "castream_attention",
    ) not in pairs
    assert ("castream", "cam") not in pairs and ("baseline", "cam") in pairs


def test_apply_experiment_replaces_only_mappings_that_must_not_merge():
    merged = {
        "models": {"a": {}, "b": {}},
        "methods": {"x": {}, "y": {}},
        "eval": {"n_images": 5, "shards": 2},
    }
    overrides = {"models": {"b": {}}, "methods": {"y": {"seed": 1}}, "eval": {"n_images": 5}}
    config = apply_experiment(merged, overrides)
    assert config["models"] == {"b": {}}
    assert config["methods"] == {"y": {"seed": 1}}
    assert config["eval"] == {"n_images": 5, "shards": 2}


def test_check_config_names_the_key():
    with pytest.raises(ValueError, match="'methods.foo'"):
        check_config({"methods": {"foo": {}}})
    with pytest.raises(ValueError, match="'methods.gradcam'"):
        check_config({"methods": {"gradcam": {"seed": 1}}})


def test_method_parameter_types_are_checked_naming_the_key():
    with pytest.raises(
        ValueError, match=r"'methods.random.seed': expected int like the default 0, got 'seven'"
    ):
        check_config({"methods": {"random": {"seed": "seven"}}})
    check_config({"methods": {"opticam": {"lr": 1}}})  # an int where a float is expected


def test_more_shards_than_images_is_refused():
    with pytest.raises(ValueError, match="'eval.shards': 8 shards of 4 images"):
        check_config({"eval": {"n_images": 4, "shards": 8, "batch_size": 4, "target": "label"}})


def test_more_images_than_the_test_split_holds_are_refused(tmp_path):
    with pytest.raises(ValueError, match="'eval.n_images': 1001 images, but the test split"):
        check_config({"eval": {"n_images": 1001, "shards": 1, "batch_size": 4, "target": "label"}})
    with pytest.raises(ValueError, match="'sanity.n_images': 1001 images, but the test split"):
        check_config({"sanity": {"randomization": True, "n_images": 1001}})
    cifar = {"name": "cifar10", "root": str(tmp_path), "image_size": 32, "max_test": 30}
    with pytest.raises(ValueError, match="'eval.n_images': 200 images.*'cifar10' holds 30$"):
        check_config({"dataset": cifar})
    check_config({"dataset": {**cifar, "max_test": None}})  # 10 000 test images
    # an image folder: its val/ files are counted (class folders only), not decoded
    for k, cls in enumerate(("cat", "dog")):
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(60 + 40 * k):
            (tmp_path / "val" / cls / f"{i}.JPEG").write_bytes(b"")
        (tmp_path / "val" / cls / "notes.txt").write_text("not an image")
    (tmp_path / "val" / "stray.jpg").write_bytes(b"")  # outside a class folder
    folder = {"name": "imagefolder", "root": str(tmp_path), "image_size": 32}
    with pytest.raises(ValueError, match="'imagefolder' holds 160$"):
        check_config({"dataset": folder, "eval": {"n_images": 161}})
    check_config({"dataset": folder, "eval": {"n_images": 160}})


def test_schema_defaults_are_filled():
    exp = check_config({"models": {"b": {}}, "methods": {"gradcam": {}}})
    assert exp.models["b"].kind == "baseline" and exp.models["b"].arch == "resnet_small"
    assert exp.models["b"].gpus == 1
    assert exp.sanity.threshold == 0.99 and exp.metrics.statistics.resamples == 1000


def test_method_applies_by_model_kind():
    assert _spec("castream").applies("castream_attention")
    assert not _spec("baseline").applies("castream_attention")
    assert not _spec("castream").applies("cam")
    assert _spec().applies("cam") and _spec("gradalign").applies("gradcam")
    assert _spec(arch="mobilenet_v2").applies("cam")
    assert not _spec(arch="convnext_tiny").applies("cam")


def test_castream_base_must_be_a_plain_model():
    models = {
        "a": {"kind": "baseline"},
        "b": {"kind": "castream", "base": "a"},
        "c": {"kind": "castream", "base": "b"},
    }
    with pytest.raises(ValueError, match="'models.c.base'"):
        check_config({"methods": {}, "models": models})
    with pytest.raises(ValueError, match="'models.d.base': no model named 'zz'"):
        check_config({"methods": {}, "models": {"d": {"kind": "castream", "base": "zz"}}})


def test_castream_base_arch_must_be_supported():
    models = {"m": {"arch": "mobilenet_v2"}, "v": {"arch": "vgg16_bn"}}
    # 64 px: MobileNet-V2's features are 2×2 (at 32 px 1×1, refused as degenerate)
    dataset = {"name": "shapes", "image_size": 64, "num_classes": 10}
    ca = {"kind": "castream", "base": "m"}
    check_config({"methods": {}, "dataset": dataset, "models": {**models, "ca": ca}})
    with pytest.raises(ValueError, match=r"'models.ca.base': CA-Stream supports.*'vgg16_bn'"):
        check_config(
            {"methods": {}, "dataset": dataset, "models": {**models, "ca": {**ca, "base": "v"}}}
        )


def test_a_layer_too_small_or_misspelt_fails_at_config_time_naming_the_key():
    small = {"m": {"arch": "mobilenet_v2"}}
    with pytest.raises(ValueError, match=r"'models.m.layer'.*at dataset.image_size 32.*1×1"):
        check_config({"methods": {}, "models": small})
    check_config({"methods": {"gradient": {}}, "models": small})  # no layer used: fine
    typo = {"b": {"arch": "resnet_small", "width": 8, "blocks": [1, 1, 1, 1], "layer": "layr4"}}
    with pytest.raises(ValueError, match=r"'models.b.layer': layer 'layr4' not found.*layer4"):
        check_config({"methods": {}, "models": typo})


def _declared_mem_mb(output: str) -> dict[tuple[str, str], int]:
    """{(rule, method): mem_mb} of a dry run's saliency and metrics jobs."""
    import re

    found = {}
    for block in re.split(r"\n(?=\s*(?:local)?rule )", output):
        rule = re.match(r"\s*(?:local)?rule (\w+):", block)
        method = re.search(r"wildcards: .*method=(\w+)", block)
        mem = re.search(r"resources: .*?\bmem_mb=(\d+)", block)
        if rule and method and mem and rule[1] in ("saliency", "metrics"):
            found[(rule[1], method[1])] = int(mem[1])
    return found


def test_eval_jobs_declare_memory_for_their_largest_forward_batch(workdir):
    """About 1 GB plus 250 bytes per image pixel of the largest batch a job forwards
    (rules/common.smk): the 32 px tiny experiment keeps the 2 GB floor, 224 px images
    get what benchmarks/memory.py measured (Score-CAM 256 images per forward: 3.8 GB)."""
    methods = {"gradcam": {}, "scorecam": {}}
    small = _write(workdir, "small.yaml", methods=methods)
    big = _write(workdir, "big.yaml", methods=methods, **{"dataset.image_size": 224})
    runs = [snakemake(workdir, "-n", "--configfile", name) for name in (small, big)]
    small_mem, mem = (_declared_mem_mb(run.stdout + run.stderr) for run in runs)
    assert len(small_mem) == 4 and set(small_mem.values()) == {2000}
    forward = yaml.safe_load((workdir / "big.yaml").read_text())["metrics"]["forward_batch_size"]
    batch = 256  # Score-CAM's default masked images per forward
    assert mem[("saliency", "scorecam")] == 500 * -(-(1000 + 250 * batch * 224**2 / 1e6) // 500)
    assert mem[("saliency", "scorecam")] >= 3800  # the measured peak
    assert mem[("metrics", "gradcam")] == 500 * -(-(1000 + 250 * forward * 224**2 / 1e6) // 500)
    assert 2000 <= mem[("saliency", "gradcam")] < mem[("saliency", "scorecam")]

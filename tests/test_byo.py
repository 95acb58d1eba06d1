"""End to end: the "bring your own" example (examples/my-method.yaml) scaled tiny —
a plug-in method, a plug-in architecture, evaluation-only torchvision and ViT models
from state dicts the test saves — through Snakemake, then plug-in edits (dry runs)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml
from conftest import REPO, copy_workflow, planned_jobs, snakemake

from cambench.cache import read_saliency
from cambench.data import read_split
from cambench.models import ARCH_FACTORIES, load_checkpoint
from cambench.plugins import load_plugins
from cambench.saliency import METHODS, resolve_layer
from cambench.saliency.core import frozen_eval

pytestmark = pytest.mark.slow

VIT_KWARGS = {"image_size": 32, "patch_size": 8, "hidden_dim": 16, "mlp_dim": 32}
MODELS = ("baseline", "resnet18_pre", "my_vit")


def _tiny_experiment() -> dict:
    """examples/my-method.yaml with tiny data, one short training, saved weights."""
    config = yaml.safe_load((REPO / "examples" / "my-method.yaml").read_text())
    tiny = yaml.safe_load((REPO / "tests" / "config.tiny.yaml").read_text())
    config["experiment"] = "byo"
    config["device"] = "cpu"
    config["dataset"] = {**tiny["dataset"], "train_size": 200, "test_size": 16}
    config["models"]["baseline"] = {**tiny["models"]["baseline"], "epochs": 1}
    # the example's commented ImageNet variant, from a state dict the test saves
    config["models"]["resnet18_pre"] = {
        "kind": "pretrained",
        "arch": "torchvision:resnet18",
        "weights": "r18.pt",
        "num_classes": 1000,
        "layer": "layer3",
    }
    config["models"]["my_vit"].update(arch_kwargs=VIT_KWARGS, weights="vit.pt", num_classes=4)
    config["methods"]["opticam"] = {"iterations": 2}
    config["eval"] = {"n_images": 8, "shards": 1, "batch_size": 8, "target": "predicted"}
    config["metrics"] = {"steps": 4, "forward_batch_size": 64}
    config["plots"] = {"grid_images": 2}
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("byo"))
    shutil.copytree(REPO / "examples", workdir / "examples")
    # weights as users bring them: a wrapped DataParallel torchvision state dict, and a
    # plug-in architecture's state dict under "model"
    torch.manual_seed(0)
    r18 = torchvision.models.resnet18(num_classes=1000).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in r18.items()}}, workdir / "r18.pt")
    load_plugins([str(REPO / "examples" / "my_arch.py")])
    torch.manual_seed(1)
    vit = ARCH_FACTORIES["tiny_vit"](4, **VIT_KWARGS)
    torch.save({"model": vit.state_dict()}, workdir / "vit.pt")
    (workdir / "byo.yaml").write_text(yaml.safe_dump(_tiny_experiment()))
    snakemake(workdir, "--cores", "2", "--configfile", "byo.yaml")
    return workdir


def test_pretrained_models_are_converted_not_trained(run):
    logs = run / "logs" / "byo"
    assert sorted(p.stem for p in (logs / "train").glob("*.log")) == ["baseline"]
    assert sorted(p.stem for p in (logs / "convert").glob("*.log")) == ["my_vit", "resnet18_pre"]
    history = json.loads((run / "results" / "byo" / "models" / "my_vit.json").read_text())
    assert history["kind"] == "pretrained" and history["epochs"] == []
    assert 0 <= history["test_acc"] <= 1  # 4 classes, like the data
    r18 = json.loads((run / "results" / "byo" / "models" / "resnet18_pre.json").read_text())
    assert r18["num_classes"] == 1000 and r18["provenance"]["weights_sha256"]
    summary = (run / "results" / "byo" / "summary.md").read_text()
    assert "my_method" in summary and "resnet18_pre" in summary and "my_vit" in summary


def test_the_plugin_methods_maps_are_its_function_normalized(run, registry):
    """The HDF5 maps equal ``n(up(ReLU(S)))`` of the plug-in function, by hand."""
    results = run / "results" / "byo"
    test = read_split(results / "data" / "test.h5")
    load_plugins([str(REPO / "examples" / "my_method.py")])
    for model_name in MODELS:
        model = load_checkpoint(results / "models" / f"{model_name}.pt")
        cache = read_saliency(results / "saliency" / model_name / "my_method" / "shard-0.h5")
        _, layer = resolve_layer(model, cache.attrs["layer"])
        images = test.float_images(cache.index)
        with frozen_eval(model):
            raw = METHODS["my_method"].fn(model, images, cache.target, layer, sigma=0.3)
        up = F.interpolate(raw.clamp_min(0).unsqueeze(1), size=(32, 32), mode="bilinear")
        up = up.squeeze(1).flatten(1)
        low, high = up.min(1, keepdim=True).values, up.max(1, keepdim=True).values
        span = high - low
        expected = torch.where(span > 0, (up - low) / span.clamp_min(1e-30), 0).view(-1, 32, 32)
        assert (cache.maps - expected).abs().max() < 2e-3, model_name  # float16 storage
    assert cache.attrs["layer"] == "net.encoder.layers.encoder_layer_1.ln_1"


def _edit_and_plan(run, plugin: str) -> dict[str, int]:
    path = run / "examples" / plugin
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        return planned_jobs(snakemake(run, "-n", "--configfile", "byo.yaml").stdout)
    finally:
        path.write_text(original)


def test_editing_the_method_plugin_reruns_only_that_methods_jobs(run):
    # my_method on 3 models (1 shard); the figures of every model; the tables
    assert _edit_and_plan(run, "my_method.py") == {
        "saliency": 3,
        "metrics": 3,
        "summarize": 1,
        "plot_experiment": 3,
        "plot_model": 9,
        "all": 1,
    }


def test_editing_the_arch_plugin_reconverts_only_its_model(run):
    assert _edit_and_plan(run, "my_arch.py") == {
        "convert": 1,
        "saliency": 3,
        "metrics": 3,
        "summarize": 1,
        "plot_experiment": 3,
        "plot_model": 3,
        "all": 1,
    }
    assert "Nothing to be done" in snakemake(run, "-n", "--configfile", "byo.yaml").stdout

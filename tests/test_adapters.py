"""Peer libraries' methods by name (captum:<Class>, pytorch_grad_cam:<Class>): their maps
equal calling the library directly and applying the documented contract, written here
from the contract (reduce over colours / squeeze, ReLU for layer attributions, bilinear
upsampling, per-image min-max); bad names and parameters fail naming the key."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import copy_of_run, snakemake
from test_config import check_config

from cambench.saliency import explain, get_method
from cambench.saliency.adapters import adapter_method
from cambench.saliency.core import example_inputs

captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")


def minmax(s: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1]; a constant map becomes zeros (the map contract)."""
    flat = s.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = (high - low).clamp_min(1e-30)
    out = (flat - low[:, None]) / span[:, None]
    return torch.where((high > low)[:, None], out, torch.zeros_like(out)).view_as(s)


def pixel_contract(a: torch.Tensor, reduce: str = "abs_max") -> torch.Tensor:
    """A (B, 3, H, W) attribution as a map: reduce over colours, no ReLU, min-max."""
    reduced = {
        "abs_max": lambda: a.abs().max(1).values,
        "sum": lambda: a.sum(1),
        "abs_sum": lambda: a.abs().sum(1),
        "l2": lambda: a.pow(2).sum(1).sqrt(),
    }[reduce]()
    return minmax(reduced)


def layer_contract(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (B, 1, h, w) layer attribution as a map: squeeze, ReLU, upsample, min-max."""
    up = F.interpolate(a.clamp_min(0), size=size, mode="bilinear", align_corners=False)
    return minmax(up[:, 0])


@pytest.fixture
def inputs():
    model, images, targets = example_inputs(3)
    return model, images, torch.tensor([3, 7, 1])


@pytest.mark.parametrize(
    ("cls", "params", "reduce"),
    [
        ("IntegratedGradients", {"n_steps": 8}, "abs_max"),
        ("Saliency", {}, "abs_max"),
        ("InputXGradient", {"reduce": "sum"}, "sum"),
        ("DeepLift", {"reduce": "l2"}, "l2"),
    ],
)
def test_captum_pixel_attributions_equal_the_library_with_the_contract(inputs, cls, params, reduce):
    model, images, targets = inputs
    maps = explain(f"captum:{cls}", model, images, targets, **params)
    library = {k: v for k, v in params.items() if k != "reduce"}
    direct = getattr(captum_attr, cls)(model).attribute(
        images.clone().requires_grad_(True), target=targets, **library
    )
    torch.testing.assert_close(maps, pixel_contract(direct.detach(), reduce), atol=1e-5, rtol=0)


def test_captum_layer_gradcam_equals_the_library_with_the_contract(inputs):
    model, images, targets = inputs
    maps = explain("captum:LayerGradCam", model, images, targets, layer="layer4")
    direct = captum_attr.LayerGradCam(model, model.layer4).attribute(images, target=targets)
    assert direct.shape[1] == 1  # a layer attribution (B, 1, h, w)
    torch.testing.assert_close(maps, layer_contract(direct.detach(), (32, 32)), atol=1e-5, rtol=0)
    # and it is Grad-CAM: cambench's own gives the same maps
    torch.testing.assert_close(maps, explain("gradcam", model, images, targets), atol=1e-5, rtol=0)


def test_captum_occlusion_takes_its_required_window_as_a_yaml_list(inputs):
    model, images, targets = inputs
    maps = explain(
        "captum:Occlusion",
        model,
        images,
        targets,
        sliding_window_shapes=[3, 8, 8],
        strides=[3, 4, 4],
    )
    direct = captum_attr.Occlusion(model).attribute(
        images, target=targets, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4)
    )
    torch.testing.assert_close(maps, pixel_contract(direct), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", ["GradCAM", "GradCAMPlusPlus", "LayerCAM"])
def test_pytorch_grad_cam_equals_the_library_with_the_contract(inputs, cls):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, images, targets = inputs
    maps = explain(f"pytorch_grad_cam:{cls}", model, images, targets, layer="layer4")
    with getattr(pytorch_grad_cam, cls)(model=model, target_layers=[model.layer4]) as cam:
        direct = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    expected = minmax(torch.from_numpy(direct).float().clamp_min(0))
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)


def test_the_model_is_left_as_found(inputs):
    model, images, targets = inputs
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    for name in ("captum:LayerGradCam", "pytorch_grad_cam:GradCAM", "captum:Saliency"):
        explain(name, model, images, targets)
        assert model.training and [p.requires_grad for p in model.parameters()] == flags
        assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
        assert not any(m._forward_pre_hooks for m in model.modules())


def test_one_method_object_per_name_and_provenance_names_the_library():
    import captum

    spec = get_method("captum:IntegratedGradients")
    assert spec is adapter_method("captum:IntegratedGradients")  # digests cached per name
    assert spec.provenance() == {"library": "captum", "library_version": captum.__version__}
    assert not spec.uses_layer and not spec.relu
    gradcam = get_method("pytorch_grad_cam:GradCAM")
    assert gradcam.uses_layer and gradcam.provenance()["library"] == "grad-cam"
    assert gradcam.provenance()["library_version"] == "1.5.7"


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("captum:Nope", {}, r"captum has no such class; valid: .*captum:IntegratedGradients"),
        ("pytorch_grad_cam:Nope", {}, r"valid: .*pytorch_grad_cam:GradCAM"),
        ("shap:Kernel", {}, r"unknown saliency method 'shap:Kernel'"),
        ("captum:Saliency", {"steps": 3}, r"parameter 'steps'.*valid parameters: abs"),
        ("captum:IntegratedGradients", {"reduce": "mean"}, r"reduce.*abs_max, abs_sum"),
        ("captum:Occlusion", {}, r"'sliding_window_shapes'.*needs it"),
        ("pytorch_grad_cam:ScoreCAM", {"batch": 4}, r"parameter 'batch'"),
        ("captum:NeuronGradient", {}, r"no such class"),  # needs a neuron, not a class
    ],
)
def test_bad_names_and_parameters_are_clear_errors(inputs, name, params, message):
    model, images, targets = inputs
    with pytest.raises(ValueError, match=message):
        explain(name, model, images, targets, **params)


def test_a_missing_library_names_the_extra(monkeypatch):
    from cambench.saliency import adapters

    adapter_method.cache_clear()
    missing = ("captum_is_not_installed", "captum", "captum")
    monkeypatch.setitem(adapters.LIBRARIES, "captum", missing)
    with pytest.raises(
        ValueError, match=r"needs the optional library captum.*pip install -e '\.\[captum\]'"
    ):
        adapter_method("captum:Saliency")
    monkeypatch.undo()
    adapter_method.cache_clear()


@pytest.mark.parametrize(
    ("methods", "key", "message"),
    [
        ({"x": {"method": "captum:Nope"}}, "methods.x.method", "no such class"),
        ({"x": {"method": "pytorch_grad_cam:Nope"}}, "methods.x.method", "no such class"),
        ({"x": {"method": "captum:Saliency", "n_steps": 3}}, "methods.x.n_steps", "valid"),
        ({"x": {"method": "pytorch_grad_cam:GradCAM", "k": 2}}, "methods.x.k", "valid"),
        ({"x": {"method": "captum:Occlusion"}}, "methods.x.sliding_window_shapes", "needs"),
        ({"x": {"method": "captum:Saliency", "reduce": "max"}}, "methods.x.reduce", "abs_max"),
    ],
)
def test_config_errors_name_the_key(methods, key, message):
    with pytest.raises(ValueError, match=rf"config key '{key}'.*{message}"):
        check_config({"methods": methods})


def test_adapter_entries_apply_to_every_model_and_keep_their_parameters():
    exp = check_config(
        {
            "methods": {
                "ig": {"method": "captum:IntegratedGradients", "n_steps": 4},
                "pgc": {"method": "pytorch_grad_cam:GradCAM"},
            }
        }
    )
    assert exp.methods == {"ig": {"n_steps": 4}, "pgc": {}}
    assert exp.method_of("ig") == "captum:IntegratedGradients"
    assert {m for _, m in exp.pairs()} == {"ig", "pgc"}
    assert len(exp.pairs()) == 2 * len(exp.models)


# --- end to end: both adapters through snakemake on the tiny experiment -------------


@pytest.mark.slow
def test_adapters_run_through_the_workflow_and_equal_the_library(tmp_path, tiny_run_template):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cambench.cache import read_saliency
    from cambench.data.store import read_split
    from cambench.models import load_checkpoint

    workdir = copy_of_run(tiny_run_template, tmp_path / "run")  # its data and model reused
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["methods"] = {
        "ig": {"method": "captum:IntegratedGradients", "n_steps": 8},
        "gradcam_pgc": {"method": "pytorch_grad_cam:GradCAM"},
    }
    config["eval"] = {**config["eval"], "n_images": 6, "shards": 1, "batch_size": 4}
    (workdir / "adapters.yaml").write_text(yaml.safe_dump(config))
    results = workdir / "results" / "tiny"
    targets = [f"results/tiny/metrics/baseline/{m}/shard-0.csv" for m in config["methods"]]
    snakemake(workdir, *targets, "--cores", "2", "--configfile", "adapters.yaml")

    model = load_checkpoint(results / "models" / "baseline.pt", map_location="cpu")
    with read_split(results / "data" / "test.h5") as split:
        images = split.float_images(slice(0, 6))
        labels = split.labels[:6]
    ig = read_saliency(results / "saliency" / "baseline" / "ig" / "shard-0.h5")
    direct = torch.cat(
        [
            captum_attr.IntegratedGradients(model).attribute(
                images[i : i + 4], target=labels[i : i + 4], n_steps=8
            )
            for i in (0, 4)
        ]
    )
    np.testing.assert_allclose(ig.maps, pixel_contract(direct).half().float(), atol=1e-3)
    pgc = read_saliency(results / "saliency" / "baseline" / "gradcam_pgc" / "shard-0.h5")
    layer = dict(model.named_modules())[pgc.attrs["layer"]]
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[layer]) as cam:
        grad = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in labels])
    np.testing.assert_allclose(pgc.maps, minmax(torch.from_numpy(grad)).half().float(), atol=1e-3)
    import captum

    for cache, method, library, version in (
        (ig, "captum:IntegratedGradients", "captum", captum.__version__),
        (pgc, "pytorch_grad_cam:GradCAM", "grad-cam", "1.5.7"),
    ):
        assert cache.attrs["registered_method"] == method
        assert (cache.attrs["library"], cache.attrs["library_version"]) == (library, version)
    with h5py.File(results / "saliency" / "baseline" / "ig" / "shard-0.h5") as f:
        assert f.attrs["method"] == "ig"
    for label in config["methods"]:
        csv = (results / "metrics" / "baseline" / label / "shard-0.csv").read_text()
        assert csv.count(f",{label},") == 6  # one row per image, under the label

"""Input attributions (saliency/attribution.py) against their references: Captum for
Input × Gradient, Integrated Gradients, SmoothGrad, VarGrad and Occlusion (same model,
images, targets, settings and noise), and for RISE a short implementation written
here from the paper. A CNN (cambench's SmallResNet) and a ViT (torchvision's
VisionTransformer, 2 layers), 32 px, 3 images; tolerance 1e-4 on the min-max
normalized maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
import yaml

from cambench.models.small_resnet import SmallResNet
from cambench.saliency import METHODS, explain
from cambench.saliency.perturb import GaussianNoise, image_keys, rise_draws, uniform_like

captum_attr = pytest.importorskip("captum.attr")

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TOL = 1e-4


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallResNet(num_classes=10, width=8, blocks=(1, 1, 1, 1)).eval()


def _vit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10,
    ).eval()  # fmt: skip
    torch.nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zeroes the head
    return model


MODELS = {"cnn": _cnn, "vit": _vit}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    model = MODELS[request.param]()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, images, torch.tensor([1, 4, 7])


def normalized(s: torch.Tensor) -> torch.Tensor:
    flat = s.detach().double().flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low)).view_as(s)


def reduced(a: torch.Tensor, reduce: str) -> torch.Tensor:
    """The channel reductions, written out."""
    return {
        "abs_max": lambda: a.abs().max(1).values,
        "abs_sum": lambda: a.abs().sum(1),
        "sum": lambda: a.sum(1),
        "l2": lambda: a.pow(2).sum(1).sqrt(),
    }[reduce]()


def assert_maps_equal(ours: torch.Tensor, reference: torch.Tensor, tol: float = TOL) -> None:
    diff = (ours.double() - normalized(reference)).abs().max().item()
    assert diff < tol, f"max difference {diff:.3g}"


@pytest.mark.parametrize("reduce", ["abs_max", "abs_sum", "sum", "l2"])
def test_input_x_gradient_equals_captum(case, reduce):
    model, images, targets = case
    ref = captum_attr.InputXGradient(model).attribute(images.clone(), target=targets)
    ours = explain("input_x_gradient", model, images, targets, reduce=reduce)
    assert_maps_equal(ours, reduced(ref, reduce))


@pytest.mark.parametrize(
    "rule",
    ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"],
)
def test_integrated_gradients_equals_captum_for_every_rule(case, rule):
    model, images, targets = case
    ref = captum_attr.IntegratedGradients(model).attribute(
        images, baselines=0.0, target=targets, n_steps=9, method=rule
    )
    # batch_size 6: two copies of the 3 images per pass, the last pass one copy
    ours = explain("integrated_gradients", model, images, targets, steps=9, rule=rule, batch_size=6)
    assert_maps_equal(ours, ref.abs().sum(1))


def _blur_reference(images: torch.Tensor, sigma: float) -> torch.Tensor:
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(
        images.double().numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=3.0
    )
    return torch.from_numpy(out).to(images.dtype)


@pytest.mark.parametrize("baseline", [0.3, "blur", "uniform"])
def test_integrated_gradients_baselines_equal_captum(case, baseline):
    model, images, targets = case
    if baseline == "blur":  # σ = 0.1 × 32 px; scipy's 'mirror' is torch's 'reflect'
        start = _blur_reference(images, 3.2)
    elif baseline == "uniform":  # the draws; their properties are tested below
        start = uniform_like(images, image_keys(images, 5))
    else:
        start = torch.full_like(images, baseline)
    ref = captum_attr.IntegratedGradients(model).attribute(
        images, baselines=start, target=targets, n_steps=8
    )
    ours = explain(
        "integrated_gradients", model, images, targets, steps=8, baseline=baseline, seed=5,
        reduce="sum",
    )  # fmt: skip
    assert_maps_equal(ours, ref.sum(1))


def test_uniform_baseline_is_uniform_and_the_same_in_any_batch():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    u = uniform_like(images, image_keys(images, 0))
    assert u.min() > 0 and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
    assert abs(u.var().item() - 1 / 12) < 0.003
    assert u[2:].equal(uniform_like(images[2:], image_keys(images[2:], 0)))
    assert not u[0].equal(uniform_like(images, image_keys(images, 1))[0])


def _noise_tunnel(model, images, targets, nt_type, samples, noise, seed, monkeypatch):
    """Captum's NoiseTunnel(Saliency) fed cambench's draws: its ``torch.normal`` returns
    σ_b·ε with ε the same standard normals, in Captum's image-major row order."""
    eps = GaussianNoise(images, samples, seed).draws(0, samples)
    flat = images.flatten(1)
    sigma = noise * (flat.max(1).values - flat.min(1).values)
    draws = (sigma.view(1, -1, 1, 1, 1) * eps).transpose(0, 1).reshape(-1, *images.shape[1:])
    calls = []

    def normal(mean, std, *args, **kwargs):
        assert tuple(std.shape) == tuple(draws.shape)
        calls.append(1)
        return draws.clone()

    monkeypatch.setattr(torch, "normal", normal)
    ref = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
        images, nt_type=nt_type, nt_samples=samples, stdevs=noise, target=targets, abs=False
    )
    monkeypatch.undo()
    assert calls == [1]
    return ref


def test_smoothgrad_equals_captum_with_the_same_noise(case, monkeypatch):
    model, images, targets = case
    ref = _noise_tunnel(model, images, targets, "smoothgrad", 10, 0.2, 3, monkeypatch)
    ours = explain(
        "smoothgrad", model, images, targets, samples=10, noise=0.2, seed=3, batch_size=12
    )
    assert_maps_equal(ours, ref.abs().sum(1))


def test_vargrad_equals_captum_with_the_same_noise(case, monkeypatch):
    # float32 both (Captum's E[a²] − E[a]² in float32, cambench's sums in float64)
    model, images, targets = case
    ref = _noise_tunnel(model, images, targets, "vargrad", 10, 0.2, 3, monkeypatch)
    ours = explain("vargrad", model, images, targets, samples=10, noise=0.2, seed=3)
    assert_maps_equal(ours, ref.sum(1))


def test_gaussian_noise_is_standard_normal_and_independent_of_the_batch():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    eps = GaussianNoise(images, 50, 7).draws(0, 50)
    assert eps.shape == (50, 4, 3, 32, 32)
    assert abs(eps.mean().item()) < 0.01 and abs(eps.std().item() - 1) < 0.01
    from scipy.stats import kstest

    assert kstest(eps[:, 0].flatten()[:20000].numpy(), "norm").pvalue > 1e-3
    # an image's samples are distinct draws, and the same in another batch
    assert not torch.equal(eps[0, 0], eps[1, 0])
    assert eps[:, 2:].equal(GaussianNoise(images[2:], 50, 7).draws(0, 50))
    assert eps[10:20].equal(GaussianNoise(images, 50, 7).draws(10, 20))
    assert not eps.equal(GaussianNoise(images, 50, 8).draws(0, 50))


@pytest.mark.parametrize(("window", "stride"), [(8, 4), (8, 5), (6, 3)])
@pytest.mark.parametrize("score", ["probability", "logit"])
def test_occlusion_equals_captum(case, window, stride, score):
    model, images, targets = case

    def forward(x):
        return model(x).softmax(1) if score == "probability" else model(x)

    ref = captum_attr.Occlusion(forward).attribute(
        images, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
        baselines=0.5, target=targets,
    )  # fmt: skip
    assert torch.equal(ref[:, 0], ref[:, 2])  # the window covers all colours
    ours = explain(
        "occlusion", model, images, targets, window=window, stride=stride, fill=0.5,
        score=score, batch_size=20,
    )  # fmt: skip
    assert_maps_equal(ours, ref[:, 0])


def _bilinear_1d(values: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resampling along axis 0 with half-pixel centres (the source coordinate
    of output pixel o is (o + ½)·n/size − ½, clamped to the edges)."""
    n = values.shape[0]
    src = np.maximum((np.arange(size) + 0.5) * n / size - 0.5, 0)
    low = np.minimum(np.floor(src).astype(int), n - 1)
    high = np.minimum(low + 1, n - 1)
    frac = (src - low)[:, None]
    return values[low] * (1 - frac) + values[high] * frac


def rise_reference(model, images, targets, n_masks, cell, p, seed):
    """RISE from the paper (Petsiuk et al. 2018, section 3.2), one mask and one image at
    a time: mask = crop at (dy, dx) of the bilinear upsampling of a binary s×s grid
    to (s+1)·C; S = 1/(N·p) Σ_i P(c | I ⊙ M_i) M_i."""
    h, w = images.shape[-2:]
    grids, shifts = rise_draws(0, n_masks, (h, w), cell, p, seed)
    saliency = torch.zeros(len(images), h, w, dtype=torch.float64)
    for i in range(n_masks):
        grid = grids[i].double().numpy()
        up = _bilinear_1d(grid, (grid.shape[0] + 1) * cell)
        up = _bilinear_1d(up.T, (grid.shape[1] + 1) * cell).T
        dy, dx = (int(v) for v in shifts[i])
        mask = torch.from_numpy(up[dy : dy + h, dx : dx + w].copy())
        for b in range(len(images)):
            with torch.no_grad():
                prob = model((images[b] * mask.float())[None]).softmax(1)[0, targets[b]]
            saliency[b] += prob.double() * mask
    return saliency / (n_masks * p)


def test_rise_draws_follow_p(case):
    grids, shifts = rise_draws(0, 400, (32, 32), 8, 0.3, 0)
    assert grids.shape == (400, 4, 4) and set(grids.unique().tolist()) <= {0.0, 1.0}
    assert abs(grids.mean().item() - 0.3) < 0.03
    assert shifts.min() >= 0 and shifts.max() <= 7 and len(shifts.unique()) == 8


def test_rise_equals_the_paper(case):
    model, images, targets = case
    ref = rise_reference(model, images, targets, 40, 8, 0.5, 1)
    ours = explain(
        "rise", model, images, targets, masks=40, cell_size=8, p=0.5, seed=1, batch_size=50
    )
    assert_maps_equal(ours, ref)


def test_rise_with_an_image_size_not_a_multiple_of_the_cell():
    model = _cnn()
    images = torch.rand(2, 3, 30, 30, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([0, 5])
    ref = rise_reference(model, images, targets, 12, 7, 0.4, 2)
    ours = explain("rise", model, images, targets, masks=12, cell_size=7, p=0.4, seed=2)
    assert_maps_equal(ours, ref)


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "occlusion", "rise"])
def test_chunking_does_not_change_the_map(method):
    model = _cnn()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([2, 3, 9])
    small = {
        "integrated_gradients": {"steps": 6},
        "smoothgrad": {"samples": 5},
        "rise": {"masks": 30},
    }
    params = small.get(method, {})
    one = explain(method, model, images, targets, batch_size=1, **params)
    many = explain(method, model, images, targets, batch_size=1000, **params)
    assert (one - many).abs().max() < 1e-5
    alone = explain(method, model, images[1:2], targets[1:2], **params)  # image 1 alone
    assert (alone[0] - many[1]).abs().max() < 1e-5


# --- bad input ------------------------------------------------------------------------


def check_config(methods):
    from snakemake.utils import validate

    from cambench.specs import parse_config

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["methods"] = methods
    config["sanity"] = {"randomization": False}
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return parse_config(config)


@pytest.mark.parametrize(
    ("methods", "key"),
    [
        ({"rise": {"masks": 0}}, "'methods.rise.masks': must be an integer >= 1, got 0"),
        ({"rise": {"p": 0}}, "'methods.rise.p'"),
        ({"integrated_gradients": {"baseline": "grey"}}, "'methods.integrated_gradients.baseline'"),
        ({"integrated_gradients": {"baseline": [1]}}, "'methods.integrated_gradients.baseline'"),
        ({"integrated_gradients": {"rule": "simpson"}}, "'methods.integrated_gradients.rule'"),
        ({"smoothgrad": {"reduce": "max"}}, "'methods.smoothgrad.reduce': must be one of"),
        ({"vargrad": {"samples": 2.5}}, "'methods.vargrad.samples'"),
        ({"input_x_gradient": {"reduce": "mean"}}, "'methods.input_x_gradient.reduce'"),
        ({"occlusion": {"stride": 9}}, "'methods.occlusion.stride'"),
        ({"occlusion": {"fill": 2}}, "'methods.occlusion.fill'"),
        ({"occlusion": {"window": True}}, "'methods.occlusion.window'"),
    ],
)
def test_bad_parameters_fail_at_config_time_naming_the_key(methods, key):
    with pytest.raises(ValueError, match=key.replace("(", r"\(").replace(")", r"\)")):
        check_config(methods)


def test_good_parameters_pass_config_time():
    experiment = check_config(
        {"integrated_gradients": {"baseline": 0.5}, "rise": {"masks": 10}, "occlusion": {}}
    )
    assert experiment.methods["integrated_gradients"]["baseline"] == 0.5
    assert experiment.methods["rise"]["masks"] == 10


def test_bad_parameters_fail_in_explain_naming_method_and_parameter():
    model = _cnn()
    images, targets = torch.rand(1, 3, 32, 32), torch.tensor([0])
    with pytest.raises(ValueError, match="method 'rise' parameter 'masks'"):
        explain("rise", model, images, targets, masks=0)
    with pytest.raises(ValueError, match="methods.occlusion.window"):
        explain("occlusion", model, images, targets, window=40, stride=4)


def test_a_plugin_method_can_use_the_check_hook():
    from cambench.saliency.registry import Method, ParamError

    def check(params):
        if params["k"] < 0:
            raise ParamError("k", "must be >= 0")

    method = Method("toy", lambda *a, **p: None, {"k": 1}, check=check)
    assert method.resolve_params({"k": 2}) == {"k": 2}
    with pytest.raises(ParamError, match="method 'toy' parameter 'k': must be >= 0") as err:
        method.resolve_params({"k": -1})
    assert err.value.param == "k"


# --- the rest of the pipeline -----------------------------------------------------------


def test_every_new_method_is_registered_without_layer_or_relu():
    for name in (
        "input_x_gradient",
        "integrated_gradients",
        "smoothgrad",
        "vargrad",
        "occlusion",
        "rise",
    ):
        assert not METHODS[name].uses_layer and not METHODS[name].relu
        assert METHODS[name].check is not None


SMALL = {
    "input_x_gradient": {},
    "integrated_gradients": {"steps": 4},
    "smoothgrad": {"samples": 3},
    "vargrad": {"samples": 3},
    "occlusion": {"window": 8, "stride": 8},
    "rise": {"masks": 16},
}


@pytest.mark.parametrize("method", sorted(SMALL))
def test_maps_go_through_the_metrics_and_the_randomization_check(method):
    """The metrics and the sanity check take the new methods as any other (no change)."""
    from cambench.metrics import confidence_change, insertion_deletion, localization
    from cambench.metrics.randomization import randomization_test

    model = _cnn()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([1, 2])
    maps = explain(method, model, images, targets, **SMALL[method])
    assert maps.shape == (2, 32, 32) and maps.min() == 0 and maps.max() == 1
    assert torch.isfinite(torch.as_tensor(confidence_change(model, images, targets, maps).p)).all()
    curves = insertion_deletion(model, images, targets, maps, steps=4)
    assert curves is not None
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    assert localization(maps, masks) is not None
    result = randomization_test(
        model, images, targets, method, SMALL[method], blocks=["fc", "layer4"]
    )
    assert result.blocks == ["none", "fc", "layer4"]

"""Bad parameters of the native attribution and CAM methods: a clear ValueError naming
the key, from the config check the Snakefile runs (before any job) and from the API."""

from __future__ import annotations

import re

import pytest
import torch
from test_config import check_config
from torch import nn

from cambench.saliency import explain
from cambench.saliency.core import example_inputs

# (methods mapping, config key named, fragment of the API's message)
BAD = [
    ({"rise": {"masks": 0}}, "methods.rise.masks", "integer >= 1, got 0"),
    ({"rise": {"masks": -5}}, "methods.rise.masks", "integer >= 1, got -5"),
    ({"rise": {"masks": 64.0}}, "methods.rise.masks", "integer >= 1, got 64.0"),
    ({"integrated_gradients": {"steps": 0}}, "methods.integrated_gradients.steps", "got 0"),
    (
        {"integrated_gradients": {"steps": 1, "rule": "riemann_trapezoid"}},
        "methods.integrated_gradients.steps",
        "integer >= 2, got 1",
    ),
    ({"occlusion": {"window": 0}}, "methods.occlusion.window", "integer >= 1, got 0"),
    ({"occlusion": {"stride": 0}}, "methods.occlusion.stride", "integer >= 1, got 0"),
    ({"occlusion": {"window": 8, "stride": 33}}, "methods.occlusion.stride", "exceeds the window"),
    ({"smoothgrad": {"noise": -1}}, "methods.smoothgrad.noise", "got -1"),
    ({"vargrad": {"samples": 0}}, "methods.vargrad.samples", "got 0"),
    ({"input_x_gradient": {"reduce": "median"}}, "methods.input_x_gradient.reduce", "median"),
    ({"integrated_gradients": {"reduce": "mean"}}, "methods.integrated_gradients.reduce", "mean"),
    ({"smoothgrad": {"reduce": "max"}}, "methods.smoothgrad.reduce", "abs_max, abs_sum, sum"),
    ({"vargrad": {"reduce": None}}, "methods.vargrad.reduce", "None"),
    ({"sscam": {"samples": 0}}, "methods.sscam.samples", "got 0"),
    ({"smoothgradcampp": {"std": -0.1}}, "methods.smoothgradcampp.std", "got -0.1"),
]


@pytest.mark.parametrize(("methods", "key", "problem"), BAD)
def test_config_check_names_the_key(methods, key, problem):
    with pytest.raises(ValueError, match=f"config key '{re.escape(key)}': .*{re.escape(problem)}"):
        check_config({"methods": methods})


@pytest.mark.parametrize(("methods", "key", "problem"), BAD)
def test_explain_names_method_and_parameter(methods, key, problem):
    ((method, params),) = methods.items()
    param = key.rsplit(".", 1)[1]
    with pytest.raises(
        ValueError, match=f"method '{method}' parameter '{param}'.*{re.escape(problem)}"
    ):
        explain(method, *example_inputs(1), **params)


def test_an_occlusion_window_larger_than_the_images_fails_at_config_time():
    # a stride larger than the image implies a larger window (stride <= window)
    for params in ({"window": 33, "stride": 4}, {"window": 40, "stride": 40}):
        with pytest.raises(
            ValueError,
            match=r"'methods\.occlusion\.window': \d+ exceeds the 32x32 images \(dataset\.image_size\)",
        ):
            check_config({"methods": {"occlusion": params}})
    assert (
        check_config({"methods": {"occlusion": {"window": 32, "stride": 32}}}).methods["occlusion"][
            "window"
        ]
        == 32
    )
    model = example_inputs(1)[0]
    with pytest.raises(ValueError, match=r"methods\.occlusion\.window.*20 exceeds the 16x16"):
        explain("occlusion", model, torch.rand(1, 3, 16, 16), torch.tensor([0]), window=20)


def test_attention_methods_on_cnns_only_are_refused_naming_the_key():
    for method in ("attention", "attention_rollout", "attention_gradient"):
        with pytest.raises(ValueError, match=rf"config key 'methods\.{method}': attention methods"):
            check_config({"methods": {"gradcam": {}, method: {}}})
        with pytest.raises(ValueError, match=f"'{method}' needs a ViT-style model"):
            explain(method, *example_inputs(1))


def _no_bias_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    ).eval()


def test_fullgrad_without_readable_biases(monkeypatch):
    import cambench.saliency.fullgrad as fullgrad_module

    images, targets = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="'fullgrad' needs the model's bias terms.*Sequential"):
        explain("fullgrad", _no_bias_net(), images, targets)
    # the default models have them
    experiment = check_config({"methods": {"fullgrad": {}}})
    assert ("baseline", "fullgrad") in experiment.pairs()
    # every configured model without a readable bias: refused before any job
    monkeypatch.setattr(fullgrad_module, "build_on_meta", lambda config, *a, **k: _no_bias_net())
    fullgrad_module._config_has_bias_layers.cache_clear()
    try:
        with pytest.raises(
            ValueError, match=r"config key 'methods\.fullgrad': fullgrad needs bias terms.*baseline"
        ):
            check_config({"methods": {"gradcam": {}, "fullgrad": {}}})
    finally:
        fullgrad_module._config_has_bias_layers.cache_clear()


def test_good_values_pass():
    experiment = check_config(
        {
            "methods": {
                "rise": {"masks": 1},
                "integrated_gradients": {"steps": 1},
                "occlusion": {"window": 1, "stride": 1},
                "smoothgrad": {"noise": 0},
                "input_x_gradient": {"reduce": "l2"},
            }
        }
    )
    assert experiment.methods["rise"]["masks"] == 1
    assert experiment.methods["smoothgrad"]["noise"] == 0

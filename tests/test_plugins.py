"""Plug-ins: methods and architectures registered from files, modules and entry points."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from snakemake.utils import validate

from cambench import plugins
from cambench.models import ARCH_FACTORIES, build_model
from cambench.plugins import load_plugins, source_digest
from cambench.provenance import stage_digest
from cambench.saliency import METHODS, explain
from cambench.specs import parse_config

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, name: str, code: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return str(path)


METHOD = """
    import torch
    from cambench.saliency import register

    @register("{name}", defaults={{"sigma": 0.5}})
    def method(model, images, targets, layer, sigma):
        return images[:, 0, :{rows}] * sigma
"""


def _config(**changes) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(changes)
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def test_a_plugin_method_validates_and_runs_like_a_builtin(tmp_path, registry, small_resnet):
    path = _write(tmp_path, "mine.py", METHOD.format(name="plug_a", rows=""))
    exp = parse_config(
        _config(plugins=[path], methods={"plug_a": {"sigma": 0.3}}, sanity={"methods": []})
    )
    assert exp.methods == {"plug_a": {"sigma": 0.3}} and exp.plugins == (path,)
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = explain("plug_a", small_resnet, images, torch.tensor([0, 1]), sigma=0.3)
    # n(ReLU(0.3 * red channel)) at the image's own size: min-max of the red channel
    red = images[:, 0]
    low, high = red.amin((1, 2), keepdim=True), red.amax((1, 2), keepdim=True)
    assert torch.allclose(maps, (red - low) / (high - low), atol=1e-6)
    with pytest.raises(ValueError, match=r"config key 'methods.plug_a.sigma': expected float"):
        parse_config(_config(plugins=[path], methods={"plug_a": {"sigma": "x"}}))


def test_a_plugin_that_fails_to_import_is_named(tmp_path):
    path = _write(tmp_path, "broken.py", "def oops(:\n")
    with pytest.raises(ValueError, match=rf"^plug-in {path} failed to import: SyntaxError"):
        load_plugins([path])
    with pytest.raises(ValueError, match=r"config key 'plugins': plug-in file nope.py does not"):
        load_plugins(["nope.py"])


def test_a_duplicate_name_names_the_plugin_and_the_method(tmp_path, registry):
    path = _write(tmp_path, "dup.py", METHOD.format(name="gradcam", rows=""))
    with pytest.raises(
        ValueError, match=rf"^plug-in {path}: saliency method 'gradcam' registered twice"
    ):
        load_plugins([path])
    arch = _write(
        tmp_path,
        "arch.py",
        "from cambench.models import register_arch\nregister_arch('resnet18')(len)\n",
    )
    with pytest.raises(
        ValueError, match=rf"^plug-in {arch}: architecture 'resnet18' registered twice"
    ):
        load_plugins([arch])


def test_a_wrong_shape_names_the_plugin_file_and_the_method(tmp_path, registry, small_resnet):
    path = _write(
        tmp_path, "shape.py", METHOD.format(name="plug_shape", rows="-1].unsqueeze(0)[:, 0")
    )
    load_plugins([path])
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(
        ValueError, match=rf"saliency method 'plug_shape' returned .*\(plug-in {path}\)"
    ):
        explain("plug_shape", small_resnet, images, torch.tensor([0, 1]))


ARCH = """
    import torch
    from torch import nn
    from cambench.models import register_arch

    class Net(nn.Module):
        def __init__(self, num_classes, width):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            return {{"logits": self.fc(self.features(x).mean((2, 3))), "aux": x}}

    @register_arch("{name}")
    def net(num_classes, width=4):
        return Net(num_classes, width)
"""


def test_a_plugin_arch_builds_with_its_kwargs_and_dict_outputs_become_logits(tmp_path, registry):
    path = _write(tmp_path, "arch_ok.py", ARCH.format(name="plug_net"))
    load_plugins([path])
    torch.manual_seed(0)
    model = build_model({"arch": "plug_net", "arch_kwargs": {"width": 5}}, 3).eval()
    x = torch.rand(2, 3, 8, 8)
    net = model.net  # no normalization by default for a plug-in arch
    expected = net.fc(net.features(x).mean((2, 3)))
    assert torch.equal(model(x), expected) and net.fc.in_features == 5
    assert model.default_target_layer == "net.features"
    digest = source_digest(ARCH_FACTORIES["plug_net"])
    Path(path).write_text(Path(path).read_text() + "# edited\n")
    assert source_digest(ARCH_FACTORIES["plug_net"]) != digest


def test_entry_point_plugins_are_loaded(tmp_path, registry, monkeypatch):
    (tmp_path / "ep_plugin_mod.py").write_text(
        textwrap.dedent(METHOD.format(name="plug_ep", rows=""))
    )
    info = tmp_path / "ep_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cambench.plugins]\nmine = ep_plugin_mod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_LOADED", False)
    load_plugins([])
    assert "plug_ep" in METHODS and METHODS["plug_ep"].source == str(tmp_path / "ep_plugin_mod.py")
    sys.modules.pop("ep_plugin_mod", None)


def test_a_plugin_methods_digest_follows_its_file(tmp_path, registry):
    path = _write(tmp_path, "dig.py", METHOD.format(name="plug_dig", rows=""))
    load_plugins([path])
    before = stage_digest("saliency", "plug_dig")
    stage_digest.cache_clear()
    Path(path).write_text(Path(path).read_text() + "# edited\n")
    after = stage_digest("saliency", "plug_dig")
    assert before != after
    assert before.split("+")[0] == after.split("+")[0]  # cambench's own code unchanged


def test_the_cli_loads_plugins_before_the_job(tmp_path, registry, monkeypatch, capsys):
    from cambench.cli import main

    path = _write(tmp_path, "cli_plug.py", "raise RuntimeError('loaded')\n")
    monkeypatch.setenv("CAMBENCH_PLUGINS", f'["{path}"]')
    assert main(["cache", "inspect", "none.h5"]) == 1
    assert f"plug-in {path} failed to import: RuntimeError: loaded" in capsys.readouterr().err

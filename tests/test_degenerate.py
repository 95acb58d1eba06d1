"""Nothing meaningless is scored (issue: items 1-3 and 7): degenerate maps flagged per
image and kept out of bold and ranks, target layers below 2×2 refused before any map,
a HuggingFace ViT's probed layer reaching the logits through its patch tokens, and the
evaluation layer a parameter of the evaluation jobs only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import copy_workflow, snakemake
from test_integrity_jobs import _checkpoint, _run, _split
from torch import nn

from cambench.best import rankable
from cambench.cache import read_saliency
from cambench.jobs import summarize
from cambench.metric_table import COLUMNS
from cambench.models.layer_check import check_target_layer
from cambench.models.layers import probe_layer
from cambench.plots import summary_heatmap
from cambench.plots.bars import metric_bars_figure
from cambench.plots.summary_heatmap import SUMMARY_COLUMNS
from cambench.saliency import explain_with_flags, register, resolve_layer
from cambench.saliency.degenerate import ALL_ZERO, CONSTANT, OK, classify
from cambench.summary import aggregate
from cambench.summary.ranks import rank_table


def test_classify_by_hand():
    raw = torch.zeros(4, 3, 3)
    raw[0] = torch.arange(9.0).view(3, 3)  # a map
    raw[1] = 7.0  # constant
    raw[2] = -1.0  # all zero after ReLU
    raw[3] = 1.0 + 1e-7 * torch.randn(3, 3)  # float rounding speckle on a constant
    assert classify(raw, relu=True).tolist() == [OK, CONSTANT, ALL_ZERO, CONSTANT]
    assert classify(raw, relu=False)[2] == CONSTANT  # -1 everywhere, no ReLU


class HFLogits(nn.Module):
    """A HuggingFace classifier as a plug-in arch wraps it: logits from ``.logits``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(pixel_values=x).logits


@pytest.fixture(scope="module")
def hf_vit():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=4,
    )
    return HFLogits(transformers.ViTForImageClassification(config)).eval()


def test_the_probe_never_picks_a_layer_that_reaches_the_logits_only_through_the_class_token(
    hf_vit,
):
    images, targets = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    layer = probe_layer(hf_vit, images)
    names = dict(hf_vit.named_modules())
    last = max(int(n.split(".")[3]) for n in names if re.match(r"net\.vit\.\w+\.\d+$", n))
    assert layer.endswith(f".{last}.layernorm_before"), layer
    assert resolve_layer(hf_vit, None, images)[0] == layer  # the saliency job's default
    maps, flags = explain_with_flags("gradcam", hf_vit, images, targets, layer=layer)
    # a random ViT's Grad-CAM may find nothing positive on some images; most are maps
    assert (flags == OK).sum() >= 5 and (maps[flags == OK].amax((1, 2)) == 1).all()
    # the final norm, which the old shape-only probe picked: all-zero maps, flagged
    final = next(n for n in names if n.endswith("vit.layernorm"))
    _, flags = explain_with_flags("gradcam", hf_vit, images, targets, layer=final)
    assert flags.tolist() == [ALL_ZERO] * 8


class _Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.pre, self.mix = nn.LayerNorm(dim), nn.MultiheadAttention(dim, 2, batch_first=True)
        self.post, self.ff = nn.LayerNorm(dim), nn.Linear(dim, dim)

    def forward(self, x):
        y = self.pre(x)
        x = x + self.mix(y, y, y, need_weights=False)[0]
        return x + self.ff(self.post(x))


class OddlyNamedViT(nn.Module):
    """A class-token ViT whose names match no known family: the probe's choice can only
    come from the gradient test."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.cut = nn.Conv2d(3, dim, 8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.stack = nn.Sequential(_Block(dim), _Block(dim))
        self.tail, self.out = nn.LayerNorm(dim), nn.Linear(dim, 3)

    def forward(self, x):
        t = self.cut(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        return self.out(self.tail(self.stack(t))[:, 0])


def test_the_probe_s_choice_comes_from_gradients_not_names():
    torch.manual_seed(0)
    model = OddlyNamedViT().eval()
    images = torch.rand(4, 3, 32, 32)
    # stack.1.post and tail reach the logits only through the class token: passed over
    assert probe_layer(model, images) == "stack.1.pre"
    _, flags = explain_with_flags("gradcam", model, images, torch.arange(4) % 3)
    assert (flags == OK).all()


def test_a_layer_below_two_by_two_is_refused_before_any_map(tmp_path):
    _split(tmp_path / "test.h5", size=8)  # SmallResNet's layer4 is 1×1 at 8 px
    _checkpoint(tmp_path / "model.pt")
    out = tmp_path / "out.h5"
    with pytest.raises(ValueError, match=r"'models.baseline.layer'.*1×1, below the 2×2"):
        _run(tmp_path, "gradcam", out, n_images=16)
    assert not out.exists() and not out.with_name(".out.h5.tmp").exists()


@pytest.mark.parametrize("arch", ["torchvision:resnet18", "timm:resnet18"])
def test_the_readme_example_s_resnet18_at_32_px_is_refused_at_config_time(arch):
    """The reported case: layer4 of a ResNet-18 is 1×1 on 32-pixel images (constant
    maps); checked on the meta device, no weights read."""
    if arch.startswith("timm"):
        pytest.importorskip("timm")
    model = {"kind": "pretrained", "arch": arch, "weights": "absent.pt", "num_classes": 1000}
    hint = r"larger dataset.image_size, or an earlier layer"
    with pytest.raises(ValueError, match=rf"'models.r18.layer'.*1×1, below the 2×2.*{hint}"):
        check_target_layer("r18", model, 1000, 32)
    assert check_target_layer("r18", model, 1000, 64) == "net.layer4"  # 2×2
    assert check_target_layer("r18", {**model, "layer": "layer3"}, 1000, 32) == "net.layer3"
    with pytest.raises(ValueError, match=r"'models.r18.layer': layer 'layr3' not found"):
        check_target_layer("r18", {**model, "layer": "layr3"}, 1000, 64)


def test_a_ca_stream_model_s_layer_is_checked_at_config_time_too():
    """Built on its base model's config, as its train job builds it."""
    from test_config import check_config

    base = {"kind": "baseline", "arch": "resnet_small", "width": 8, "blocks": [1, 1, 1, 1]}
    models = {"b": base, "ca": {"kind": "castream", "base": "b", "layer": "layr4"}}
    with pytest.raises(ValueError, match=r"'models.ca.layer': layer 'layr4' not found"):
        check_config({"methods": {}, "models": models})
    check_config({"methods": {}, "models": {**models, "ca": {"kind": "castream", "base": "b"}}})


def test_the_example_s_random_plugin_vit_gives_all_zero_maps_and_they_are_flagged():
    """examples/my_arch.py's ``tiny_vit``, randomly initialised: torchvision
    initialises a ViT's head to zero, so every gradient is zero — pytorch-grad-cam's
    Grad-CAM is all zero too — and every map is flagged, not scored."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cambench.models import ARCH_FACTORIES
    from cambench.plugins import load_plugins

    load_plugins([str(Path(__file__).parents[1] / "examples" / "my_arch.py")])
    torch.manual_seed(0)
    vit = ARCH_FACTORIES["tiny_vit"](10).eval()
    images = torch.rand(16, 3, 32, 32)
    targets = vit(images).argmax(1)
    _, flags = explain_with_flags("gradcam", vit, images, targets)
    assert flags.tolist() == [ALL_ZERO] * 16

    def tokens_to_map(t):  # (B, 1 + 16, C) -> (B, C, 4, 4), the class token dropped
        return t[:, 1:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2)

    layer = vit.encoder.layers[-1].ln_1
    with pgc.GradCAM(vit, [layer], reshape_transform=tokens_to_map) as cam:
        peer = cam(images, [ClassifierOutputTarget(int(c)) for c in targets])
    assert np.abs(peer).max() == 0


def test_all_zero_maps_are_flagged_in_the_file_and_counted_in_the_log(tmp_path, registry, capsys):
    _split(tmp_path / "test.h5")
    _checkpoint(tmp_path / "model.pt")

    @register("nothing_found")
    def nothing_found(model, images, targets, layer):
        raw = -images.mean(1)  # negative everywhere: ReLU leaves nothing
        raw[0] = images[0].mean(0)  # but the first image's map is a map
        return raw

    _run(tmp_path, "nothing_found", tmp_path / "out.h5")
    cache = read_saliency(tmp_path / "out.h5")
    codes = cache.degenerate.tolist()
    assert codes == ([OK] + [ALL_ZERO] * 3) * 4  # the first image of each batch of 4
    assert "degenerate maps: 12 of 16 all zero" in capsys.readouterr().out


def _frame(method: str, degenerate: int, n: int = 10, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "model": "m",
            "method": method,
            "index": np.arange(n),
            "label": 0,
            "target": 0,
            "p": 0.9,
            "o": 0.5,
        }
    )
    for column in COLUMNS:
        frame[column] = 50 + shift + rng.random(n)
    frame["degenerate"] = [1] * degenerate + [0] * (n - degenerate)
    return frame


def test_degenerate_pairs_are_warned_about_and_never_bold(tmp_path):
    paths = []
    # "broken" has the best values of every column, but 10 degenerate maps
    for method, bad, shift in (("gradcam", 0, 0.0), ("layercam", 0, 5.0), ("broken", 10, 40.0)):
        path = tmp_path / f"{method}.csv"
        _frame(method, bad, shift=shift).to_csv(path, index=False)
        paths.append(path)
    out = [tmp_path / n for n in ("s.csv", "s.md", "s.tex", "c.csv", "c.md", "c.tex")]
    summary = summarize.run(
        paths, [], [], [], {"resamples": 20, "confidence": 0.9, "seed": 0}, "t", *out
    )
    assert summary.set_index("method").loc["broken", "degenerate_maps"] == 10
    assert rankable(summary).tolist() == [True, True, False]
    text = out[1].read_text()
    assert "**Warning:** m × broken: 10 of 10 maps are degenerate" in text
    broken_row = next(line for line in text.splitlines() if "| broken |" in line)
    assert "**" not in broken_row
    layercam_row = next(line for line in text.splitlines() if "| layercam |" in line)
    assert "**" in layercam_row  # the best of the rest
    # no degenerate maps: no column, no warning (the default run's files unchanged)
    summary = summarize.run(
        paths[:2], [], [], [], {"resamples": 20, "confidence": 0.9, "seed": 0}, "t", *out
    )
    assert "degenerate_maps" not in summary.columns
    assert "degenerate" not in out[1].read_text()


def test_degenerate_pairs_are_left_out_of_the_rank_table():
    per_image = pd.concat(
        [_frame("gradcam", 0), _frame("layercam", 0, shift=5.0), _frame("broken", 3, shift=40.0)]
    )
    excluded = aggregate.degenerate_counts(per_image)[["model", "method"]].itertuples(index=False)
    ranks = rank_table(per_image, resamples=20, confidence=0.9, seed=0, excluded=list(excluded))
    assert ranks["method"].tolist() == ["gradcam", "layercam"]
    # among the two left, the higher values rank first on a higher-is-better metric
    assert ranks.set_index("method")["rank_AI"].to_dict() == {"gradcam": 2.0, "layercam": 1.0}


def _summary_csv(path: Path, degenerate: dict[tuple[str, str], int]) -> Path:
    rng = np.random.default_rng(0)
    rows = [
        {"model": model, "method": method, "n_images": 10}
        | {c: float(rng.uniform(0, 100)) for c in SUMMARY_COLUMNS[3:]}
        | ({"degenerate_maps": degenerate.get((model, method), 0)} if degenerate else {})
        for model in ("resnet", "vit")
        for method in ("gradcam", "layercam", "scorecam")
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_the_figures_mark_degenerate_pairs_and_only_them(tmp_path, monkeypatch):
    csv = _summary_csv(tmp_path / "summary.csv", {("vit", "layercam"): 7})
    fig = metric_bars_figure(csv)
    hatched = {
        (ax.get_xticklabels()[round(bar.get_x() + bar.get_width() / 2)].get_text(), c.get_label())
        for ax in fig.axes
        for c in ax.containers
        if hasattr(c, "patches")
        for bar in c.patches
        if bar.get_hatch() == "xxxx"
    }
    assert hatched == {("vit", "layercam")}  # in every panel, and no other bar
    (legend,) = fig.legends
    assert "vit × layercam (7)" in legend.get_texts()[-1].get_text()

    drawn = {}
    monkeypatch.setattr(summary_heatmap, "save_figure", lambda fig, out: drawn.update(fig=fig))
    summary_heatmap.plot_summary_heatmap(csv, tmp_path / "h.png")
    marked = [
        (ax.get_title(loc="left").split()[0], round(p.get_y() + 0.5))
        for ax in drawn["fig"].axes
        for p in ax.patches
        if p.get_hatch() == "xxx"
    ]
    assert marked == [("vit", 1)]  # the vit panel's layercam row, not resnet's
    assert "degenerate" in drawn["fig"].get_supxlabel()
    # a bold value never sits in a hatched row
    vit = next(ax for ax in drawn["fig"].axes if ax.get_title(loc="left").startswith("vit"))
    bold_rows = {round(t.get_position()[1]) for t in vit.texts if t.get_fontweight() == "bold"}
    assert bold_rows and 1 not in bold_rows

    # nothing degenerate: no hatch, no extra legend entry, no note
    csv = _summary_csv(tmp_path / "clean.csv", {})
    fig = metric_bars_figure(csv)
    assert len(fig.legends[0].get_texts()) == 3
    summary_heatmap.plot_summary_heatmap(csv, tmp_path / "h.png")
    assert not any(p.get_hatch() for ax in drawn["fig"].axes for p in ax.patches)
    assert not drawn["fig"].get_supxlabel()


@pytest.mark.slow
def test_the_evaluation_layer_is_no_training_parameter(tmp_path: Path):
    workdir = copy_workflow(tmp_path / "wf")
    config = workdir / "tiny.yaml"

    def commands(layer: str | None) -> dict[str, str]:
        text = config.read_text()
        if layer:
            text = text.replace("    lr: 0.05", f"    lr: 0.05\n    layer: {layer}")
        (workdir / "layer.yaml").write_text(text)
        out = snakemake(workdir, "-n", "-p", "--configfile", "layer.yaml").stdout
        lines = [line.strip() for line in out.splitlines() if "python -m cambench" in line]
        train = next(line for line in lines if " train " in line)
        saliency = next(line for line in lines if " saliency " in line and "gradcam" in line)
        return {"train": train, "saliency": saliency}

    default, other = commands(None), commands("layer3")
    assert default["train"] == other["train"]  # the same training job: nothing retrains
    assert "--layer=layer3" in other["saliency"] and default["saliency"] != other["saliency"]
    model = json.loads(re.search(r"--model '(\{.*?\})'", other["train"])[1])
    assert "layer" not in model
    # a misspelt layer fails at config time, before any job
    (workdir / "bad.yaml").write_text(
        config.read_text().replace("    lr: 0.05", "    lr: 0.05\n    layer: layr3")
    )
    proc = snakemake(workdir, "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert (
        "config key 'models.baseline.layer': layer 'layr3' not found" in proc.stderr + proc.stdout
    )

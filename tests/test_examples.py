"""The README's and docs' examples as a new user runs them: the plug-in snippet, the
helpers' argument order, the Python API section on the tiny experiment's results, the
report of that experiment, and examples/my-method.yaml exactly as the README writes it
(scaled down by config overrides only)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, copy_of_run, copy_workflow, snakemake

from cambench.saliency.core import activations, activations_and_gradients


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_the_readme_plugin_snippet_runs_as_written(tmp_path):
    """In a fresh interpreter (it registers my_method), with nothing but its imports."""
    snippet = _python_blocks((REPO / "README.md").read_text())[0]
    assert "import torch" in snippet
    check = snippet + (
        "\nfrom cambench.saliency import explain\n"
        "from cambench.saliency.core import example_inputs\n"
        "model, images, targets = example_inputs()\n"
        "maps = explain('my_method', model, images, targets, sigma=0.3)\n"
        "assert maps.shape == (2, 32, 32)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    proc = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_the_helpers_take_a_methods_argument_order_and_the_former_one(
    small_resnet, images, targets
):
    layer = small_resnet.layer3
    acts, logits = activations(small_resnet, images, targets, layer)
    old_acts, old_logits = activations(small_resnet, images, layer, targets)  # former order
    none_acts, _ = activations(small_resnet, images, layer=layer)
    assert torch.equal(acts, old_acts) and torch.equal(logits, old_logits)
    assert torch.equal(acts, none_acts) and acts.shape[:2] == (6, 32)
    a, g, _ = activations_and_gradients(small_resnet, images, targets, layer)
    a2, g2, _ = activations_and_gradients(small_resnet, images, layer, targets)
    assert torch.equal(a, acts) and torch.equal(a, a2) and torch.equal(g, g2)
    with pytest.raises(TypeError, match="layer must be an nn.Module"):
        activations(small_resnet, images, targets)


# --- the tiny experiment's results: the API section and the report --------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_run_template):
    """The tiny experiment run with the command docs/api.md names (on a copy of the
    session's run of the same config, so the command finds its jobs done)."""
    workdir = copy_of_run(tiny_run_template, tmp_path_factory.mktemp("examples") / "run")
    (workdir / "tests").mkdir()
    shutil.copy2(REPO / "tests" / "config.tiny.yaml", workdir / "tests" / "config.tiny.yaml")
    snakemake(workdir, "--cores", "2", "--configfile", "tests/config.tiny.yaml")
    return workdir


@pytest.mark.slow
def test_the_api_section_runs_on_the_tiny_experiment(tiny):
    """docs/api.md's first block, as written, after the run it names."""
    api = (REPO / "docs" / "api.md").read_text()
    assert "snakemake --cores all --configfile tests/config.tiny.yaml" in api
    snippet = _python_blocks(api)[0]
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    check = snippet + "\nassert maps.shape == (8, 32, 32) and len(hits.pointing) == 8\n"
    proc = subprocess.run(
        [sys.executable, "-c", check], cwd=tiny, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_the_report_describes_the_experiment_it_was_built_from(tiny):
    snakemake(tiny, "--report", "report.html", "--configfile", "tests/config.tiny.yaml")
    html = (tiny / "report.html").read_text()
    intro = json.loads(re.search(r"var workflow_desc = (\".*?\");\n", html).group(1))
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html).group(1))
    # the tiny experiment: one trained baseline, three methods, no sanity check
    assert '<tt class="docutils literal">tiny</tt>' in intro
    assert "Its 1 model:" in intro and "baseline</tt>: resnet_small" in intro
    for other in ("castream", "CA-Stream", "gradalign", "gradient-aligned"):
        assert other not in intro
    sections = sorted(categories)
    assert sections == ["1. Training", "2. Saliency maps", "3. Metrics", "4. Tables"]
    announced = re.findall(r"<strong>(\d\. [A-Za-z ]+)</strong>", intro)
    assert announced == sections  # the introduction announces exactly these
    assert categories["1. Training"]["all models"] == ["results/tiny/plots/training.png"]
    assert (
        "results/tiny/plots/saliency_grid_baseline.png"
        in categories["2. Saliency maps"]["baseline"]
    )


@pytest.mark.slow
def test_a_report_without_the_runs_results_says_which_run_makes_them(tiny):
    proc = snakemake(tiny, "--report", "default.html", check=False)  # the default experiment
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "results of experiment 'shapes'" in out and "Run the experiment first" in out


# --- examples/my-method.yaml as the README writes it -----------------------------------

# fewer images, epochs and iterations: a second config file merged over the example
# (Snakemake's --config reads nested values as strings)
SCALED = """
device: cpu
dataset: {train_size: 200, test_size: 16}
models: {baseline: {epochs: 1}}
methods: {opticam: {iterations: 2}}
eval: {n_images: 8, shards: 1, batch_size: 8}
metrics: {steps: 4}
plots: {grid_images: 2}
"""


@pytest.mark.slow
def test_the_example_runs_as_written_from_a_clean_clone(tmp_path, monkeypatch):
    """The README's command on a copy of the checkout (offline: an empty torch hub
    cache), only fewer images, epochs and iterations from a second config file."""
    workdir = copy_workflow(tmp_path / "clone")
    shutil.copytree(REPO / "examples", workdir / "examples")
    readme = (REPO / "README.md").read_text()
    command = "snakemake --cores all --configfile examples/my-method.yaml"
    assert command in readme
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    (workdir / "scaled.yaml").write_text(SCALED)
    snakemake(workdir, "--cores", "2", "--configfile", "examples/my-method.yaml", "scaled.yaml")
    results = workdir / "results" / "my-method"
    summary = (results / "summary.md").read_text()
    for name in ("baseline", "my_vit", "my_method", "gradcam", "opticam"):
        assert name in summary
    history = json.loads((results / "models" / "my_vit.json").read_text())
    assert history["kind"] == "pretrained" and history["provenance"]["weights_sha256"]


@pytest.mark.slow
def test_a_missing_weights_file_fails_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path / "clone")
    shutil.copytree(REPO / "examples", workdir / "examples")
    (workdir / "examples" / "my_vit.pt").unlink()
    (workdir / "scaled.yaml").write_text(SCALED)
    proc = snakemake(
        workdir, "-n", "--configfile", "examples/my-method.yaml", "scaled.yaml", check=False
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "models.my_vit.weights" in out and "examples/my_vit.pt does not exist" in out
    assert not (workdir / "results").exists()

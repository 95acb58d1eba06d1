"""The metric docstrings' examples run and give what they show; every metric names its
paper with a link and shows an example."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "faithfulness",
    "localization",
    "statistics",
    "randomization",
    "similarity",
    "robustness",
]

#: Each metric and the address of the paper its docstring must link.
METRICS = {
    "faithfulness.ConfidenceChange": ["arxiv.org/abs/1710.11063", "arxiv.org/abs/2301.07002"],
    "faithfulness.insertion_deletion": ["arxiv.org/abs/1806.07421"],
    "localization.localization": ["arxiv.org/abs/1608.00507", "arxiv.org/abs/1910.01279"],
    "randomization.spearman": ["arxiv.org/abs/1810.03292"],
    "randomization.randomization_test": ["arxiv.org/abs/1810.03292"],
    "randomization.random_logit": ["arxiv.org/abs/1912.09818"],
    "randomization.smooth_mprt": ["arxiv.org/abs/2401.06465"],
    "randomization.efficient_mprt": ["arxiv.org/abs/2401.06465"],
    "robustness.sensitivity": ["arxiv.org/abs/1901.09392"],
    "robustness.relative_input_stability": ["arxiv.org/abs/2203.06877"],
    "similarity.ssim": ["doi.org/10.1109/TIP.2003.819861"],
    "similarity.data_randomization_test": ["arxiv.org/abs/1810.03292"],
    "statistics.bootstrap_mean_ci": ["doi.org/10.1214/aos/1176344552"],
    "statistics.wilcoxon_signed_rank": ["doi.org/10.2307/3001968"],
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"cambench.metrics.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"no examples in cambench.metrics.{name}"
    assert result.failed == 0, f"{result.failed} failing example(s) in cambench.metrics.{name}"


@pytest.mark.parametrize(("path", "links"), METRICS.items())
def test_metric_docstrings_define_cite_and_show(path, links):
    module, attr = path.split(".")
    doc = getattr(importlib.import_module(f"cambench.metrics.{module}"), attr).__doc__
    assert ".. math::" in doc and "Example::" in doc and ">>> " in doc
    for link in links:
        assert f"<https://{link}>" in doc

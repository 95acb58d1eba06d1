"""Every docstring example in cambench.saliency runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import cambench.saliency
from cambench.saliency import METHODS

MODULES = ["cambench.saliency"] + [
    f"cambench.saliency.{info.name}" for info in pkgutil.iter_modules(cambench.saliency.__path__)
]
# Documented by their owners elsewhere (Opti-CAM, CA-Stream's attention).
DOCUMENTED = sorted(set(METHODS) - {"opticam", "castream_attention"})


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0


@pytest.mark.parametrize("method", DOCUMENTED)
def test_every_method_has_a_reference_and_an_example(method):
    doc = METHODS[method].fn.__doc__
    assert "S" in doc and "=" in doc  # its equation
    assert f'explain("{method}"' in doc  # a runnable example of this very method
    if method != "random":  # random is cambench's own baseline
        assert "https://" in doc

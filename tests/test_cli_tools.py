"""The person-facing CLI tools: `cambench list`, `cambench compare`, every
subcommand's help example, and schema errors as one line naming the key."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import yaml

from cambench.cli import EXAMPLES, build_parser, main
from cambench.saliency import METHODS
from cambench.specs import SCHEMA, check_schema


def test_list_methods_names_every_method_with_its_defaults(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name, spec in METHODS.items():
        assert f"\n{name} " in "\n" + out
        for key in spec.defaults:
            assert f"{key}=" in out
    assert "iterations=" in out and "opticam" in out


def test_list_keys_metrics_and_archs(capsys):
    assert main(["list", "keys"]) == 0
    keys = capsys.readouterr().out
    assert "eval.n_images: integer" in keys
    assert "models.<name>.epochs" in keys
    assert main(["list", "metrics"]) == 0
    metrics = capsys.readouterr().out
    assert "AD" in metrics and "lower is better" in metrics and "insertion" in metrics
    assert main(["list", "archs"]) == 0
    assert "torchvision:<name>" in capsys.readouterr().out


def test_every_subcommand_help_shows_an_example():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subparsers) == set(EXAMPLES)
    for name, sub in subparsers.items():
        text = sub.format_help()
        assert "example:" in text and EXAMPLES[name] in text, name
        assert EXAMPLES[name].startswith(f"cambench {name}"), name


def _summary(ad: float, methods=("gradcam", "opticam")) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["baseline"] * len(methods),
            "method": list(methods),
            "n_images": [16] * len(methods),
            "AD": [ad, ad + 10],
            "AD_ci_low": [ad - 1, ad + 9],
            "AD_ci_high": [ad + 1, ad + 11],
            "insertion": [50.0, 60.0],
            "insertion_ci_low": [48.0, 58.0],
            "insertion_ci_high": [52.0, 62.0],
        }
    )


def test_compare_puts_the_same_rows_of_two_experiments_side_by_side(tmp_path, capsys):
    for name, ad in (("small", 20.0), ("large", 30.0)):
        (tmp_path / name).mkdir()
        _summary(ad).to_csv(tmp_path / name / "summary.csv", index=False)
    other = _summary(5.0).iloc[:1].assign(method="rise")
    (tmp_path / "third").mkdir()
    other.to_csv(tmp_path / "third" / "summary.csv", index=False)
    argv = ["compare", *(str(tmp_path / n) for n in ("small", "large", "third"))]
    assert main([*argv, "--metrics", "AD"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    assert header == "| model | method | AD small | AD large | AD third |"
    gradcam = next(line for line in lines if "| gradcam |" in line)
    assert gradcam == "| baseline | gradcam | 20.0 [19.0, 21.0] | 30.0 [29.0, 31.0] | – |"
    rise = next(line for line in lines if "| rise |" in line)
    assert rise == "| baseline | rise | – | – | 5.0 [4.0, 6.0] |"
    assert main(argv) == 0  # every metric present: AD and insertion, for each experiment
    assert "insertion large" in capsys.readouterr().out


def test_compare_names_a_missing_summary_and_an_unknown_metric(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nothing")]) == 1
    assert "nothing/summary.csv does not exist" in capsys.readouterr().err
    (tmp_path / "a").mkdir()
    _summary(1.0).to_csv(tmp_path / "a" / "summary.csv", index=False)
    assert main(["compare", str(tmp_path / "a"), "--metrics", "ADD"]) == 1
    assert "unknown metric 'ADD'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def default_config() -> dict:
    from pathlib import Path

    return yaml.safe_load((Path(SCHEMA).parents[2] / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["eval"].update(n_images=0), "config key 'eval.n_images': 0 is less than"),
        (lambda c: c.update(experiment="a/b"), "config key 'experiment': 'a/b' does not match"),
        (lambda c: c["eval"].update(target="pred"), "config key 'eval.target': 'pred' is not one"),
        (lambda c: c["models"]["baseline"].update(epochs="3"), "'models.baseline.epochs'"),
    ],
)
def test_schema_errors_are_one_line_naming_the_key(default_config, edit, message):
    config = copy.deepcopy(default_config)
    check_schema(config)  # the default passes
    edit(config)
    with pytest.raises(ValueError) as err:
        check_schema(config)
    assert message in str(err.value)
    assert "\n" not in str(err.value)

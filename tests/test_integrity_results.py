"""The summary refuses incomplete rows and restored copies of old results (issue:
integrity, items 3 and 4): each fault reproduced on small hand-made inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cambench.digest import file_sha256
from cambench.jobs import summarize
from cambench.metric_table import COLUMNS

PROTOCOL = {
    "blur_kernel": 11,
    "blur_sigma": 5.0,
    "deletion_substrate": "black",
    "insertion_substrate": "blur",
    "protocol": "custom",
    "steps": 16,
    "target": "label",
}
SETTINGS = {k: v for k, v in PROTOCOL.items() if k != "target"}
SETTINGS.update(forward_batch_size=512, pointing_tolerance=0)
MODEL_CONFIG = {"kind": "baseline", "arch": "resnet_small", "epochs": 2}


def _per_image(method: str, params: dict, sha: str, n: int = 16, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "model": "baseline",
            "method": method,
            "index": np.arange(n),
            "label": rng.integers(0, 4, n),
            "p": rng.random(n),
            "o": rng.random(n),
        }
    )
    frame["target"] = frame["label"]
    for column in COLUMNS:
        frame[column] = 100 * rng.random(n)
    frame["seconds"] = 0.001
    frame["pointing_tolerance"] = 0
    frame["protocol"] = json.dumps(PROTOCOL, sort_keys=True, separators=(",", ":"))
    frame["params"] = json.dumps(params, sort_keys=True)
    frame["model_sha256"] = sha
    return frame


@pytest.fixture
def inputs(tmp_path: Path):
    checkpoint = tmp_path / "models" / "baseline.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    sha = file_sha256(checkpoint)
    history = tmp_path / "models" / "baseline.json"
    history.write_text(
        json.dumps(
            {
                "model": "baseline",
                "kind": "baseline",
                "config": MODEL_CONFIG,
                "test_acc": 0.9,
                "num_classes": 4,
                "epochs": [],
            }
        )
    )
    csvs = []
    for method, params in (("gradcam", {}), ("random", {"seed": 7})):
        path = tmp_path / f"{method}.csv"
        _per_image(method, params, sha).to_csv(path, index=False)
        csvs.append(path)
    expected = {
        "models": {"baseline": MODEL_CONFIG},
        "methods": {"gradcam": {}, "random": {"seed": 7}},
        "metrics": SETTINGS,
    }
    return tmp_path, csvs, history, checkpoint, expected


def _run(tmp_path, csvs, history, checkpoint, expected):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return summarize.run(
        csvs,
        [history],
        [],
        [],
        {"resamples": 50, "confidence": 0.95, "seed": 0},
        "t",
        *(out / name for name in ("s.csv", "s.md", "s.tex", "c.csv", "c.md", "c.tex")),
        expected=expected,
        checkpoint_paths=[checkpoint],
    )


def test_consistent_inputs_are_summarized(inputs):
    summary = _run(*inputs)
    assert sorted(summary["method"]) == ["gradcam", "random"]
    assert set(summary["n_images"]) == {16}


def test_a_row_cut_short_is_an_error_naming_the_file_and_line(inputs):
    tmp_path, csvs, *_ = inputs
    lines = csvs[1].read_text().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:6])  # the 5th image's row, 6 fields
    csvs[1].write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{csvs[1]}, line 6: column '\w+' is missing"):
        _run(*inputs)


def test_a_non_finite_value_is_an_error(inputs):
    _, csvs, *_ = inputs
    frame = pd.read_csv(csvs[0])
    frame.loc[3, "insertion"] = np.inf
    frame.to_csv(csvs[0], index=False)
    with pytest.raises(ValueError, match=rf"{csvs[0]}, line 5: column 'insertion' is inf"):
        _run(*inputs)


def test_undefined_localization_is_counted_not_an_error(inputs):
    tmp_path, csvs, *_ = inputs
    frame = pd.read_csv(csvs[0])
    frame.loc[[1, 2], "pointing_game"] = np.nan  # images without an object mask
    frame.to_csv(csvs[0], index=False)
    _run(*inputs)
    text = (tmp_path / "out" / "s.md").read_text()
    assert "baseline × gradcam: pointing_game on 14 of 16 images" in text


def test_a_restored_copy_with_old_method_parameters_is_named(inputs):
    tmp_path, csvs, history, checkpoint, expected = inputs
    expected["methods"]["random"] = {"seed": 8}  # the config changed; the file did not
    with pytest.raises(
        ValueError, match=r"random.csv: methods.random.seed: recorded 7, configured 8"
    ):
        _run(tmp_path, csvs, history, checkpoint, expected)


def test_a_restored_copy_from_another_checkpoint_or_training_config_is_named(inputs):
    tmp_path, csvs, history, checkpoint, expected = inputs
    checkpoint.write_bytes(b"retrained weights")
    with pytest.raises(ValueError, match="gradcam.csv: made from another checkpoint"):
        _run(tmp_path, csvs, history, checkpoint, expected)
    expected["models"]["baseline"] = {**MODEL_CONFIG, "epochs": 3}
    with pytest.raises(
        ValueError, match=r"baseline.json: models.baseline.epochs: recorded 2, configured 3"
    ):
        _run(tmp_path, csvs, history, checkpoint, expected)


def test_a_restored_copy_with_another_protocol_is_named(inputs):
    tmp_path, csvs, history, checkpoint, expected = inputs
    expected["metrics"] = {**SETTINGS, "steps": 32}
    with pytest.raises(ValueError, match=r"gradcam.csv: metrics.steps: recorded 16, configured 32"):
        _run(tmp_path, csvs, history, checkpoint, expected)
    expected["metrics"] = {**SETTINGS, "pointing_tolerance": 2}
    with pytest.raises(ValueError, match="metrics.pointing_tolerance: recorded 0, configured 2"):
        _run(tmp_path, csvs, history, checkpoint, expected)

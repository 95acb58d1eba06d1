"""The convert job: an evaluation-only (``kind: pretrained``) model into a cambench
checkpoint, with a history holding its test accuracy; no training.

The checkpoint records where the weights came from (``provenance``: the source arch,
the weights and their file's SHA-256, the input normalization), so a result can be
traced to the exact file it was computed from.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from cambench import joblog
from cambench.data.store import Split, read_split
from cambench.models import build_model, file_sha256, huggingface, save_checkpoint, weights_source
from cambench.models.external import is_external, normalization
from cambench.table_io import write_json


@torch.no_grad()
def test_accuracy(
    model: torch.nn.Module, split: Split, batch_size: int, device: torch.device
) -> float:
    """Top-1 accuracy of ``model`` on every image of ``split``."""
    correct = 0
    for begin in range(0, len(split), batch_size):
        index = slice(begin, begin + batch_size)
        logits = model(split.float_images(index).to(device))
        correct += int((logits.argmax(1).cpu() == split.labels[index]).sum())
    return correct / max(len(split), 1)


def provenance(model_config: dict[str, Any]) -> dict[str, Any]:
    """Where the weights came from: source arch, weights, the file's SHA-256, and the
    normalization inside the model."""
    source = weights_source(model_config)
    arch = model_config["arch"]
    norm = normalization(model_config) if is_external(arch) else "built in"
    return {
        "source": arch,
        "arch_kwargs": model_config.get("arch_kwargs") or {},
        "weights": model_config.get("weights"),
        "weights_file": str(source) if source else None,
        "weights_sha256": file_sha256(source) if source else None,
        "normalization": norm
        if not isinstance(norm, tuple)
        else {
            "mean": list(norm[0]),
            "std": list(norm[1]),
        },
    }


def checkpoint_config(model_config: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """The model config a checkpoint records: an hf: model's also holds its complete
    transformers config (``hf_config``), so the checkpoint is rebuilt without the
    weights directory."""
    if not str(model_config.get("arch", "")).startswith(huggingface.PREFIX):
        return dict(model_config)
    return {**model_config, "hf_config": huggingface.config_record(model.net)}


def run(
    name: str,
    model_config: dict[str, Any],
    test_path: str | os.PathLike,
    out_model: str | os.PathLike,
    out_history: str | os.PathLike,
    batch_size: int,
    device: torch.device,
) -> None:
    """Build ``name`` from its config (weights loaded, every key must fit), measure its
    test accuracy, write its checkpoint and history.

    The model's classes are ``num_classes`` (default: the dataset's); when they differ
    from the dataset's the accuracy is NaN (the labels are not the model's classes;
    evaluate with ``eval.target: predicted``).
    """
    start = joblog.header(
        "convert", {"model": name, "config": model_config, "device": str(device)}, [str(test_path)]
    )
    test = read_split(test_path)
    classes = len(test.class_names)
    num_classes = int(model_config.get("num_classes") or classes)
    tic = time.perf_counter()
    try:
        model = build_model(model_config, num_classes).eval()
    except ValueError as err:
        raise ValueError(f"model {name} (config key 'models.{name}'): {err}") from None
    record = provenance(model_config)
    same = num_classes == classes
    accuracy = test_accuracy(model.to(device), test, batch_size, device) if same else float("nan")
    names = test.class_names if same else [str(i) for i in range(num_classes)]
    save_checkpoint(
        out_model, model, checkpoint_config(model_config, model), num_classes, names, record
    )
    write_json(
        out_history,
        {
            "model": name,
            "kind": "pretrained",
            "config": dict(model_config),
            "provenance": record,
            "epochs": [],
            "test_acc": accuracy,
            "num_classes": num_classes,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": 0,
            "seconds": time.perf_counter() - tic,
            "device": str(device),
        },
    )
    if same:
        print(f"{name}: test accuracy {100 * accuracy:.2f} % (no training)")
    else:
        print(f"{name}: {num_classes} classes, the dataset {classes}: no test accuracy")
    joblog.footer(start, [str(out_model), str(out_history)])

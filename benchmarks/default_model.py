"""The default experiment's baseline model (config.yaml), randomly initialised, for the
benchmarks: they measure the model the default run evaluates."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from cambench.models import build_model

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


def default_model(device: torch.device | str = "cpu") -> tuple[torch.nn.Module, str, int, int]:
    """``(model, description, image_size, num_classes)`` of ``models.baseline``."""
    config = yaml.safe_load(CONFIG.read_text())
    entry = {
        k: v for k, v in config["models"]["baseline"].items() if k in ("arch", "width", "blocks")
    }
    classes = int(config["dataset"]["num_classes"])
    size = int(config["dataset"]["image_size"])
    torch.manual_seed(0)
    model = build_model(entry, classes).to(device).eval()
    blocks = ",".join(str(b) for b in entry.get("blocks", []))
    description = (
        f"default model (config.yaml models.baseline: {entry.get('arch', 'resnet_small')} "
        f"w{entry.get('width')} [{blocks}]), {size}x{size}, {classes} classes"
    )
    return model, description, size, classes

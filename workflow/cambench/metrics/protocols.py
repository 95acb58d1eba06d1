"""Insertion/deletion protocols as named presets (``metrics.protocol`` in the config).

The papers cambench reproduces score insertion and deletion differently:

- ``opticam`` (Zhang et al., Opti-CAM, 2024): one image row of pixels per step
  (``steps`` = image height), the **predicted** class, insertion from a Gaussian-blurred
  image, deletion towards black;
- ``castream`` (Torres et al., CA-Stream, 2024): eight image rows per step
  (``steps`` = height / 8), the **ground-truth** class, same substrates;
- ``custom``: every value from the config (``steps``, default one row per step; the
  substrates; the blur), and the class of ``eval.target``.

**The explained class.** The class a map explains is fixed when the maps are computed
(``eval.target``, stored in every saliency file), and the metrics score that class. A
preset therefore does not choose the class; it *requires* it: ``opticam`` needs
``eval.target: predicted`` and ``castream`` needs ``eval.target: label``, and a
mismatch is an error (when the workflow is parsed, and again when a metrics job reads
a saliency file made for the other class), never a silently mislabelled result. With
``custom`` the class is whatever ``eval.target`` says; it is recorded either way.

A preset also fixes steps, substrates and blur: setting one of them in the config to
a *different* value is an error (use ``custom``); setting it to the preset's own value
is allowed, so a default config that spells out the Opti-CAM values still works.

The resolved protocol (:class:`Protocol`) is written beside every result: in the
per-image CSVs, in the curve files and in the summary tables.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from cambench.metrics.faithfulness import DEFAULT_BLUR_KERNEL, DEFAULT_BLUR_SIGMA, SUBSTRATES

__all__ = [
    "PRESETS",
    "PROTOCOL_KEYS",
    "PROTOCOLS",
    "Protocol",
    "resolve_protocol",
]

TARGETS = ("label", "predicted")

#: The named presets: rows of pixels per step, class, substrates, blur.
PRESETS: dict[str, dict[str, Any]] = {
    "opticam": {
        "rows_per_step": 1,
        "target": "predicted",
        "insertion_substrate": "blur",
        "deletion_substrate": "black",
        "blur_sigma": DEFAULT_BLUR_SIGMA,
        "blur_kernel": DEFAULT_BLUR_KERNEL,
    },
    "castream": {
        "rows_per_step": 8,
        "target": "label",
        "insertion_substrate": "blur",
        "deletion_substrate": "black",
        "blur_sigma": DEFAULT_BLUR_SIGMA,
        "blur_kernel": DEFAULT_BLUR_KERNEL,
    },
}
PROTOCOLS = (*PRESETS, "custom")

#: Config keys that define a protocol (the rest of ``metrics`` is not the protocol's).
PROTOCOL_KEYS = (
    "protocol",
    "steps",
    "insertion_substrate",
    "deletion_substrate",
    "blur_sigma",
    "blur_kernel",
    "target",
)

_CUSTOM_DEFAULTS = {
    "insertion_substrate": "blur",
    "deletion_substrate": "black",
    "blur_sigma": DEFAULT_BLUR_SIGMA,
    "blur_kernel": DEFAULT_BLUR_KERNEL,
}


@dataclass(frozen=True)
class Protocol:
    """A fully resolved insertion/deletion protocol."""

    name: str
    steps: int
    target: str
    insertion_substrate: str
    deletion_substrate: str
    blur_sigma: float
    blur_kernel: int

    def to_dict(self) -> dict[str, Any]:
        """The protocol as config keys (``name`` as ``protocol``): resolving it again
        gives the same protocol."""
        d = asdict(self)
        d["protocol"] = d.pop("name")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def describe(self, image_height: int | None = None) -> str:
        """One line for tables and captions."""
        if image_height and image_height % self.steps == 0:
            rows = image_height // self.steps
            per_step = f"{rows} image row{'s' if rows > 1 else ''} per step, "
        else:
            per_step = ""
        ins = self.insertion_substrate
        if ins == "blur":
            ins = f"Gaussian blur (σ = {self.blur_sigma:g}, {self.blur_kernel}×{self.blur_kernel})"
        dele = self.deletion_substrate
        if dele == "blur":
            dele = f"Gaussian blur (σ = {self.blur_sigma:g}, {self.blur_kernel}×{self.blur_kernel})"
        cls = "predicted class" if self.target == "predicted" else "ground-truth class"
        return (
            f"{self.name}: {self.steps} steps ({per_step}{cls}); "
            f"insertion from {ins}, deletion to {dele}"
        )


def resolve_protocol(metrics: dict[str, Any], image_height: int, target: str) -> Protocol:
    """The protocol that ``metrics`` (the config's ``metrics`` mapping, or a resolved
    :meth:`Protocol.to_dict`) defines for images ``image_height`` rows high whose maps
    explain ``target`` (``eval.target``: ``label`` or ``predicted``).

    Raises ``ValueError`` naming the config key on an unknown protocol, a value that
    contradicts the chosen preset, or a preset whose class is not ``target``.
    """
    metrics = dict(metrics or {})
    name = metrics.get("protocol", "custom")
    if name not in PROTOCOLS:
        raise ValueError(
            f"config key 'metrics.protocol': unknown protocol {name!r}; valid: {', '.join(PROTOCOLS)}"
        )
    if target not in TARGETS:
        raise ValueError(f"eval.target must be one of {TARGETS}, got {target!r}")
    if "target" in metrics and metrics["target"] != target:
        raise ValueError(
            f"the metrics protocol scores the {metrics['target']!r} class, but the maps "
            f"explain the {target!r} class (eval.target)"
        )
    height = int(image_height)
    if name == "custom":
        values = {**_CUSTOM_DEFAULTS, "steps": height}
        values.update({k: metrics[k] for k in values if k in metrics})
        values["target"] = target
    else:
        preset = PRESETS[name]
        if preset["target"] != target:
            raise ValueError(
                f"config key 'metrics.protocol': the {name!r} protocol explains the "
                f"{preset['target']} class, but eval.target is {target!r}; set "
                f"eval.target: {preset['target']}, or use metrics.protocol: custom"
            )
        values = {k: v for k, v in preset.items() if k != "rows_per_step"}
        values["steps"] = max(1, height // preset["rows_per_step"])
        for key, value in values.items():
            if key in metrics and metrics[key] != value:
                raise ValueError(
                    f"config key 'metrics.{key}': the {name!r} protocol fixes it to "
                    f"{value!r} (for {height}-pixel-high images), got {metrics[key]!r}; "
                    "use metrics.protocol: custom to choose it"
                )
    for key in ("insertion_substrate", "deletion_substrate"):
        if values[key] not in SUBSTRATES:
            raise ValueError(
                f"config key 'metrics.{key}': unknown substrate {values[key]!r}; "
                f"valid: {', '.join(SUBSTRATES)}"
            )
    steps = values["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"config key 'metrics.steps': a positive integer, got {steps!r}")
    return Protocol(
        name=name,
        steps=int(steps),
        target=target,
        insertion_substrate=values["insertion_substrate"],
        deletion_substrate=values["deletion_substrate"],
        blur_sigma=float(values["blur_sigma"]),
        blur_kernel=int(values["blur_kernel"]),
    )

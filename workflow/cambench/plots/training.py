"""Training histories of every model on one figure."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from cambench.plots.style import model_color, new_figure, save_figure, styled

REQUIRED_EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "test_acc")
# Per-epoch keys with a panel of their own (or deliberately not drawn).
STANDARD_EPOCH_KEYS = frozenset({*REQUIRED_EPOCH_KEYS, "lr", "seconds"})
# Readable (title, y label) of the extra per-epoch keys that training variants log.
EXTRA_PANELS = {
    "train_ce": ("cross-entropy (train)", "CE"),
    "train_reg": ("alignment term $L_R$ (train)", "$L_R$"),
    "grad_cosine": ("gradient alignment (held-out batch)", "cos(gradient, guided gradient)"),
}
# Extra keys that repeat another key unless the objective adds a term: cross-entropy is
# the whole training loss of a baseline; it gets a panel only where some model's differs.
SAME_AS = {"train_ce": "train_loss"}
PANEL_W, PANEL_H = 3.4, 2.5
MAX_PANELS_PER_ROW = 3


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_history(path: str | os.PathLike) -> dict:
    """Read and check one ``models/<name>.json`` training history."""
    path = Path(path)
    try:
        history = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ValueError(f"{path}: training history not found") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(history, dict):
        raise ValueError(f"{path}: a training history must be a JSON object")
    epochs = history.get("epochs")
    if not isinstance(epochs, list) or not epochs:
        raise ValueError(f"{path}: key 'epochs' must be a non-empty list")
    for k, epoch in enumerate(epochs):
        if not isinstance(epoch, dict):
            raise ValueError(f"{path}: epochs[{k}] is not an object")
        for key in REQUIRED_EPOCH_KEYS:
            if key not in epoch:
                raise ValueError(f"{path}: epochs[{k}] lacks key {key!r}")
            if not _is_number(epoch[key]):
                raise ValueError(f"{path}: epochs[{k}][{key!r}] is not a number: {epoch[key]!r}")
    history.setdefault("model", path.stem)
    history["model"] = str(history["model"])
    return history


def _series(history: dict, key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key``, skipping epochs where it is missing or not a number."""
    xs, ys = [], []
    for epoch in history["epochs"]:
        value = epoch.get(key)
        if _is_number(value) and math.isfinite(value):
            xs.append(float(epoch["epoch"]))
            ys.append(float(value))
    return xs, ys


def _repeats(histories: list[dict], key: str, other: str) -> bool:
    """Whether ``key`` equals ``other`` (up to float rounding) wherever both are logged."""
    for history in histories:
        for epoch in history["epochs"]:
            a, b = epoch.get(key), epoch.get(other)
            if _is_number(a) and not (_is_number(b) and math.isclose(a, b, rel_tol=1e-6)):
                return False
    return True


def _extra_keys(histories: list[dict]) -> list[str]:
    """The numeric per-epoch keys beyond the standard ones, in order of appearance,
    without those that only repeat another key (:data:`SAME_AS`)."""
    keys: dict[str, None] = {}
    for history in histories:
        for epoch in history["epochs"]:
            for key, value in epoch.items():
                if key not in STANDARD_EPOCH_KEYS and _is_number(value):
                    keys[key] = None
    return [k for k in keys if not (k in SAME_AS and _repeats(histories, k, SAME_AS[k]))]


def _legend_label(history: dict) -> str:
    label = history["model"]
    kind = history.get("kind")
    if isinstance(kind, str) and kind and kind != label:
        label += f" ({kind})"
    details = []
    if _is_number(history.get("test_acc")):
        details.append(f"test {100 * history['test_acc']:.1f}%")
    if _is_number(history.get("seconds")):
        seconds = float(history["seconds"])
        details.append(f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s")
    return f"{label}: {', '.join(details)}" if details else label


def plot_training(history_jsons: Sequence[str | os.PathLike], out_png: str | os.PathLike) -> None:
    """Loss and accuracy per epoch for every model, plus one panel per extra logged key.

    Each model has one colour in every panel; in the accuracy panel the training accuracy
    is dashed and the test accuracy solid. Extra numeric per-epoch keys (e.g. ``train_ce``,
    ``train_reg``, ``grad_cosine``) get a panel each, drawn for the models that log them;
    ``train_ce`` only when it differs from the training loss for some model (an added
    term such as gradalign's), not for baselines alone, whose loss it repeats. The
    figure is :func:`training_figure`'s.
    """
    save_figure(training_figure(history_jsons), out_png)


@styled
def training_figure(history_jsons: Sequence[str | os.PathLike]) -> Figure:
    """The figure of :func:`plot_training`, not saved."""
    if isinstance(history_jsons, (str, os.PathLike)) or not history_jsons:
        raise ValueError(f"history_jsons must be a non-empty list of files, got {history_jsons!r}")
    histories = [read_history(p) for p in history_jsons]
    extras = _extra_keys(histories)
    n_panels = 2 + len(extras)
    n_cols = min(n_panels, MAX_PANELS_PER_ROW)
    n_rows = -(-n_panels // n_cols)
    legend_h = 0.2 * len(histories) + 0.3
    fig = new_figure(PANEL_W * n_cols, PANEL_H * n_rows + legend_h)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    panels = list(axes.flat)
    for ax in panels[n_panels:]:
        ax.set_visible(False)
    few_epochs = max(len(h["epochs"]) for h in histories) <= 12
    marker = {"marker": "o", "markersize": 3} if few_epochs else {}

    loss_ax, acc_ax, extra_axes = panels[0], panels[1], panels[2:n_panels]
    model_lines = []
    for k, history in enumerate(histories):
        colour = model_color(k)
        (line,) = loss_ax.plot(*_series(history, "train_loss"), color=colour, **marker)
        model_lines.append((line, _legend_label(history)))
        xs, ys = _series(history, "train_acc")
        acc_ax.plot(xs, [100 * y for y in ys], color=colour, linestyle="--", alpha=0.8, **marker)
        xs, ys = _series(history, "test_acc")
        acc_ax.plot(xs, [100 * y for y in ys], color=colour, **marker)
        for key, ax in zip(extras, extra_axes, strict=True):
            xs, ys = _series(history, key)
            if xs:
                ax.plot(xs, ys, color=colour, **marker)

    loss_ax.set_title("training loss")
    loss_ax.set_ylabel("loss")
    acc_ax.set_title("accuracy")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.legend(
        handles=[
            acc_ax.plot([], [], color="#444444", linestyle="--")[0],
            acc_ax.plot([], [], color="#444444")[0],
        ],
        labels=["train", "test"],
        loc="lower right",
        frameon=False,
    )
    for key, ax in zip(extras, extra_axes, strict=True):
        title, ylabel = EXTRA_PANELS.get(key, (key.replace("_", " "), key))
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    for ax in panels[:n_panels]:
        ax.set_xlabel("epoch")
        ax.grid(True)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.legend(
        [line for line, _ in model_lines],
        [label for _, label in model_lines],
        loc="outside lower center",
        ncol=min(len(model_lines), 3),
        frameon=False,
    )
    return fig

"""The shared look of every cambench figure: method colours, fonts, atomic PNG output.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot state), at
``DPI`` dots per inch, with fonts of at least 8 pt at the saved size.
"""

from __future__ import annotations

import functools
import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import matplotlib

matplotlib.use("Agg")

from matplotlib import colormaps  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import rgb_to_hsv, to_hex, to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cambench.atomic import atomic_output  # noqa: E402
from cambench.best import SANITY_BASELINES  # noqa: E402

DPI = 150

STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
}

# One fixed colour per known method, the same in every figure. The CAM family takes the
# saturated tab10 colours; gradient methods dark tones; sanity-check baselines greys.
METHOD_COLORS: dict[str, str] = {
    "cam": "#1f77b4",  # blue
    "gradcam": "#d62728",  # red
    "gradcampp": "#ff7f0e",  # orange
    "xgradcam": "#bcbd22",  # olive
    "layercam": "#2ca02c",  # green
    "scorecam": "#9467bd",  # purple
    "ablationcam": "#8c564b",  # brown
    "opticam": "#e377c2",  # pink
    "castream_attention": "#17becf",  # cyan
    "gradient": "#222222",  # near black
    "guided_backprop": "#6b6ecf",  # periwinkle
    "fakecam": "#7f7f7f",  # grey
    "random": "#a8a8a8",  # light grey
}

# Sanity-check baselines: drawn dashed in line plots.
BASELINE_METHODS = frozenset(SANITY_BASELINES)

_TAB20 = [to_hex(c) for c in colormaps["tab20"].colors]
#: Greys say "sanity baseline": a method without a fixed colour never gets a grey, nor a
#: colour within GREY_DISTANCE (in every RGB channel) of a baseline's grey.
GREY_SATURATION, GREY_DISTANCE = 0.15, 0.15
_BASELINE_GREYS = [to_rgb(METHOD_COLORS[m]) for m in ("fakecam", "random")]


def _plug_in_colour(colour: str) -> bool:
    """Whether a tab20 ``colour`` may go to a method without a fixed one."""
    rgb = to_rgb(colour)
    far = all(
        max(abs(a - b) for a, b in zip(rgb, g, strict=True)) >= GREY_DISTANCE
        for g in _BASELINE_GREYS
    )
    return rgb_to_hsv(rgb)[1] >= GREY_SATURATION and far


_FALLBACK_COLORS = [
    c for c in _TAB20 if c not in set(METHOD_COLORS.values()) and _plug_in_colour(c)
]

MODEL_COLORS = [to_hex(c) for c in colormaps["Dark2"].colors]


def method_color(method: str) -> str:
    """The colour of ``method`` in every figure (hex string).

    Known methods have a fixed colour; any other name (a plug-in) gets one of the
    saturated tab20 colours not taken by them, chosen by a stable hash of the name, so
    it is the same in every run and figure and never a baseline's grey.
    """
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _FALLBACK_COLORS[zlib.crc32(method.encode("utf-8")) % len(_FALLBACK_COLORS)]


def method_linestyle(method: str) -> str:
    """Dashed for sanity-check baselines, solid otherwise."""
    return "--" if method in BASELINE_METHODS else "-"


def model_color(position: int) -> str:
    """Colour of the ``position``-th model in a figure (models are few; Dark2 cycle)."""
    return MODEL_COLORS[position % len(MODEL_COLORS)]


def _overlap(boxes: list, pad: float) -> bool:
    """Whether any two of ``boxes`` (display bounding boxes, left to right) overlap
    horizontally, with ``pad`` pixels between them required."""
    boxes = sorted(boxes, key=lambda b: b.x0)
    return any(a.x1 + pad > b.x0 for a, b in zip(boxes, boxes[1:], strict=False))


def xtick_labels_overlap(axes: list[Axes], pad: float = 2.0) -> bool:
    """Whether the x tick labels of any of ``axes`` overlap (checked with the renderer
    after the figure's layout)."""
    axes[0].figure.draw_without_rendering()
    return any(
        _overlap([t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()], pad)
        for ax in axes
    )


def _wrap_name(name: str, width: int) -> str:
    """``name`` in lines of about ``width`` characters, broken after ``_`` or ``-``."""
    lines = [""]
    for part in re.split(r"(?<=[_\-])", name):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def fit_xtick_labels(axes: list[Axes], labels: list[str]) -> None:
    """Give every axis of ``axes`` the x tick ``labels`` so that none overlaps its
    neighbour: as they are when they fit, else broken into lines at ``_``/``-``, else
    vertical. The check measures the drawn labels (renderer bounding boxes)."""
    for ax in axes:
        ax.set_xticklabels(labels)
    if not labels or not xtick_labels_overlap(axes):
        return
    room = min(ax.get_window_extent().width for ax in axes) / len(labels)
    widest = max(
        t.get_window_extent().width / len(t.get_text())
        for ax in axes
        for t in ax.get_xticklabels()
        if t.get_text()
    )
    wrapped = [_wrap_name(label, max(4, int(0.9 * room / widest))) for label in labels]
    for ax in axes:
        ax.set_xticklabels(wrapped)
    if not xtick_labels_overlap(axes):
        return
    for ax in axes:
        ax.set_xticklabels(labels, rotation=90)


def _break_lines(text: str, width: int) -> str:
    """``text`` in lines of at most about ``width`` characters, broken at spaces and
    inside CamelCase words (``RelativeRepresentationStability``)."""
    lines = [""]
    for piece in re.split(r"(?<= )|(?<=[a-z])(?=[A-Z])", text):
        if lines[-1].strip() and len(lines[-1]) + len(piece.rstrip()) > width:
            lines[-1] = lines[-1].rstrip()
            lines.append("")
        lines[-1] += piece
    return "\n".join(line.rstrip() for line in lines)


def fit_titles(axes: list[Axes]) -> None:
    """Break an axis title that is wider than its axis into lines that fit (neighbouring
    panels' titles would overprint), measured with the renderer after the layout."""
    figure = axes[0].figure
    figure.draw_without_rendering()
    for ax in axes:
        text = ax.title.get_text()
        room = ax.get_window_extent().width
        width = len(text)
        while ax.title.get_window_extent().width > room and width > 6:
            width = int(width * 0.85)
            ax.title.set_text(_break_lines(text, width))


def new_figure(width: float, height: float) -> Figure:
    """A bare figure (no pyplot state) with constrained layout, size in inches."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def pdf_path(out_png: str | os.PathLike) -> Path:
    """The PDF twin of a figure: the same name with ``.pdf``."""
    return Path(out_png).with_suffix(".pdf")


def save_figure(fig: Figure, out_png: str | os.PathLike, pdf: bool = True) -> None:
    """Write ``fig`` to ``out_png`` and (``pdf``) to its vector twin :func:`pdf_path`,
    each atomically (temporary sibling, then rename). The PDF carries no creation date,
    so the same figure gives the same bytes."""
    options = {"bbox_inches": "tight", "pad_inches": 0.06, "facecolor": "white"}
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, **options)
    if pdf:
        with atomic_output(pdf_path(out_png)) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"CreationDate": None}, **options)


F = TypeVar("F", bound=Callable)


def styled(func: F) -> F:
    """Run a plotting function under the cambench rcParams, leaving the caller's intact."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

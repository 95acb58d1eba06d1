"""The shared look of every cambench figure: method colours, fonts, atomic PNG output.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot state), at
``DPI`` dots per inch, with fonts of at least 8 pt at the saved size.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import matplotlib

matplotlib.use("Agg")

from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
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
_FALLBACK_COLORS = [c for c in _TAB20 if c not in set(METHOD_COLORS.values())]

MODEL_COLORS = [to_hex(c) for c in colormaps["Dark2"].colors]


def method_color(method: str) -> str:
    """The colour of ``method`` in every figure (hex string).

    Known methods have a fixed colour; any other name gets one from the tab20 cycle
    chosen by a stable hash of the name, so it is the same in every run and figure.
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

"""Shared helpers: headless figures, saving, rendering to images.

Figures are built with the object-oriented API (``Figure`` attached to an Agg
canvas), never through ``pyplot``: drawing works without a display, nothing is
registered in pyplot's global figure list (so nothing can leak), and importing
``mlplab.plots`` does not change the backend of the caller (e.g. a notebook).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

#: networkx / matplotlib colour names used for weights, as in the tutorial.
POSITIVE_COLOUR = "green"  # (0, 128, 0)
NEGATIVE_COLOUR = "red"  # (255, 0, 0)

DEFAULT_DPI = 100


def new_figure(
    figsize: tuple[float, float],
    dpi: float = DEFAULT_DPI,
    layout: Literal["constrained", "compressed", "tight"] | None = "constrained",
) -> Figure:
    """Return a new figure drawn by an Agg canvas (headless, not known to pyplot)."""
    fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` to ``path`` (creating parent folders) and release it; return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=fig.dpi)
    finally:
        fig.clear()
    return out


def figure_to_image(fig: Figure) -> Image.Image:
    """Render ``fig`` to an RGB PIL image of exactly figsize × dpi pixels, then release it."""
    canvas = fig.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
    fig.clear()
    return image


def as_2d(a: np.ndarray, name: str) -> np.ndarray:
    """Return ``a`` as a float 2-D array (a 1-D array becomes one column)."""
    arr = np.asarray(a, dtype=float)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 1-D or 2-D array, got shape {arr.shape}")
    return arr


def default_names(prefix: str, n: int, names: list[str] | None, what: str) -> list[str]:
    """Return ``names`` if given (checking its length), else ``prefix1 .. prefixN``."""
    if names is None:
        return [f"{prefix}{i + 1}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{what} has {len(names)} names but the data have {n} columns")
    return list(names)

"""The still figures of many runs of one shape, fast: a figure per kind and shape, reused.

A sweep trained as one population writes the same three figures for every member
(``plots/rmse.png``, ``plots/predictions.png``, ``plots/network.png``). Building a figure
(Figure, axes, ticks, artists) and laying it out (constrained layout measures every tick
label, and then the figure is drawn a second time to be saved) costs more than drawing
it. A :class:`Painter` keeps one figure per kind and shape, a *template*
(:class:`~mlplab.plots.curves.RmseFigure`,
:class:`~mlplab.plots.predictions.PredictionsFigure`,
:class:`~mlplab.plots.network.NetworkFigure`), and for each member fills it with that
member's data and saves it:

* the first figure of a template is laid out by constrained layout, as the one-off
  ``plot_*`` functions are: pixel for pixel the same figure. The layout is then kept (the
  axes stay where they are) for the next members, which therefore differ from their
  one-off figures only where their tick labels would have moved the axes by a few pixels;
  a member whose titles, axis labels or end tick labels would no longer fit in the figure
  is laid out again (that member's figure is then its one-off figure), and from then on
  each panel keeps the room that both layouts gave its decorations;
* the PNGs are encoded for speed (:func:`~mlplab.plots._common.write_png`: the same
  pixels, as RGB, in a file about 20 % larger);
* a member of another shape gets a template of its own (at most ``max_templates`` are
  kept, the least recently used is dropped); the figures without a template (confusion
  matrices, the heatmaps of large networks) are drawn by the one-off functions.

Nothing of a member stays in its template for the next one: every artist that shows data
is refilled, and the limits are recomputed from the new data alone.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from mlplab.plots._common import DEFAULT_DPI, default_names, write_png
from mlplab.plots.curves import RmseFigure, history_curves
from mlplab.plots.network import NetworkFigure, layer_sizes, network_layout_mode, plot_network
from mlplab.plots.predictions import PredictionsFigure, checked_inputs, plot_predictions

T = TypeVar("T", RmseFigure, PredictionsFigure, NetworkFigure)


@dataclass
class _Slot:
    """A template and how its axes are placed: by constrained layout, or by hand."""

    template: RmseFigure | PredictionsFigure | NetworkFigure
    constrained: bool


def _end_tick_labels(axis: Axis) -> list[Text]:
    """The labels of the first and last ticks (major and minor) within the axis' view."""
    lo, hi = sorted(axis.get_view_interval())
    labels = []
    for ticks in (axis.get_major_ticks(), axis.get_minor_ticks()):
        shown = [tick.label1 for tick in ticks if lo <= tick.get_loc() <= hi]
        labels += shown[:1] + shown[-1:]
    return labels


def _fits(fig: Figure) -> bool:
    """Whether the texts at the edges of each panel, as last drawn, lie inside the figure.

    They are the texts that constrained layout keeps inside it and that a member's data can
    move: titles, axis labels and offset texts (placed beyond the tick labels, they move
    out as these widen) and the tick labels at both ends of the x axis (they stick out
    sideways).
    """
    renderer = cast(FigureCanvasAgg, fig.canvas).get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    for ax in fig.axes:
        if not (ax.get_visible() and ax.axison):
            continue
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label, ax.xaxis.offsetText]
        for text in [*texts, ax.yaxis.offsetText, *_end_tick_labels(ax.xaxis)]:
            if not (text.get_visible() and text.get_text()):
                continue
            box = text.get_window_extent(renderer)
            if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height:
                return False
    return True


class Painter:
    """Draws the still figures of many runs fast, reusing one figure per kind and shape.

    ``painter.rmse(...)``, ``painter.predictions(...)`` and ``painter.network(...)`` take
    the arguments of :func:`~mlplab.plots.plot_rmse`, :func:`~mlplab.plots.plot_predictions`
    and :func:`~mlplab.plots.plot_network`, write the same figure (see the module's
    documentation for how a reused figure may differ) and return its path.
    ``max_templates`` bounds the figures kept.
    """

    def __init__(self, max_templates: int = 8) -> None:
        self.max_templates = max_templates
        self._slots: dict[Hashable, _Slot] = {}

    def rmse(
        self,
        history: Mapping[str, np.ndarray],
        path: str | Path,
        title: str = "RMSE across epochs",
        dpi: float = DEFAULT_DPI,
        kept: int | None = None,
    ) -> Path:
        """:func:`~mlplab.plots.plot_rmse` on a template of the history's curves."""
        curves = history_curves(history)
        keys = tuple(curves)
        key = ("rmse", keys, dpi)
        self._template(key, lambda: RmseFigure(keys, dpi)).fill(curves, title, kept)
        return self._save(key, path)

    def predictions(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        Y_pred: np.ndarray,
        path: str | Path,
        feature_names: list[str] | None = None,
        target_names: list[str] | None = None,
        classification: bool = False,
        dpi: float = DEFAULT_DPI,
    ) -> Path:
        """:func:`~mlplab.plots.plot_predictions` on a template of the data's shape."""
        if classification:  # a confusion matrix: drawn anew each time
            return plot_predictions(X, Y, Y_pred, path, feature_names, target_names, True, dpi)
        X, Y, Y_pred, fnames = checked_inputs(X, Y, Y_pred, feature_names)
        tnames = default_names("Y", Y.shape[1], target_names, "target_names")
        n_in, n_out = X.shape[1], Y.shape[1]
        key = ("predictions", n_in, n_out, dpi)
        figure = self._template(key, lambda: PredictionsFigure(n_in, n_out, dpi))
        figure.fill(X, Y, Y_pred, fnames, tnames)
        return self._save(key, path)

    def network(
        self,
        weights: list[np.ndarray],
        path: str | Path,
        title: str = "Final network after backpropagation",
        subtitle: str | None = None,
        dpi: float = DEFAULT_DPI,
    ) -> Path:
        """:func:`~mlplab.plots.plot_network` on a template of the layer sizes."""
        if network_layout_mode(weights) != "graph":  # heatmaps: drawn anew each time
            return plot_network(weights, path, title, subtitle, dpi)
        sizes = layer_sizes(weights)
        subtitled = bool(subtitle)
        key = ("network", tuple(sizes), subtitled, dpi)
        self._template(key, lambda: NetworkFigure(sizes, subtitled, dpi)).fill(
            weights, title, subtitle
        )
        return self._save(key, path)

    def _template(self, key: Hashable, build: Callable[[], T]) -> T:
        """The template kept under ``key``, built (and kept) if there is none."""
        slot = self._slots.pop(key, None)
        if slot is None:
            template = build()
            slot = _Slot(template, template.fig.get_layout_engine() is not None)
            while self._slots and len(self._slots) >= self.max_templates:
                del self._slots[next(iter(self._slots))]  # the least recently used
        self._slots[key] = slot  # now the most recently used
        return cast(T, slot.template)  # the key determines the template's type

    def _save(self, key: Hashable, path: str | Path) -> Path:
        """Write the filled template kept under ``key``; lay it out on its first use, then
        keep the layout while the member's texts fit in the figure."""
        slot = self._slots[key]
        fig = slot.template.fig
        out = write_png(fig, path)
        if slot.constrained:
            if fig.get_layout_engine() is None and not _fits(fig):
                _lay_out_again(fig, out)
            fig.set_layout_engine(None)  # the axes stay where the layout put them
        return out


def _lay_out_again(fig: Figure, path: Path) -> None:
    """Write ``fig`` laid out anew (its one-off figure); then give each panel the room
    that both this layout and the previous one gave its decorations."""
    kept = [ax.get_position() for ax in fig.axes]
    _place(fig, [_grid_position(ax, fig) for ax in fig.axes])  # where a new figure starts
    fig.set_layout_engine("constrained")
    write_png(fig, path)
    inner = [
        Bbox.intersection(ax.get_position(), old) for ax, old in zip(fig.axes, kept, strict=True)
    ]
    _place(fig, [box or old for box, old in zip(inner, kept, strict=True)])


def _grid_position(ax: Axes, fig: Figure) -> Bbox:
    """Where ``ax`` sits in a new ``fig``, before any layout: its grid cell."""
    spec = ax.get_subplotspec()
    return spec.get_position(fig) if spec is not None else ax.get_position()


def _place(fig: Figure, positions: list[Bbox]) -> None:
    """Move the axes of ``fig`` to ``positions``, still under the layout engine's control."""
    for ax, position in zip(fig.axes, positions, strict=True):
        ax.set_position(position)
        ax.set_in_layout(True)  # which set_position turns off

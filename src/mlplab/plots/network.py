"""The network diagram: a layered graph of the weights, or heatmaps when large.

Weight format (SPEC §5): ``weights[l]`` has shape ``(fan_in + 1, fan_out)``; row 0 holds
the weights leaving the bias neuron, rows 1.. those leaving the units of layer ``l``.

Node names, following the tutorial:

* inputs ``X1 .. Xn``, outputs ``Y1 .. Yk``;
* one hidden layer: its units are ``Z1 .. Zm``;
* several hidden layers: hidden layer ``h`` (counted from 1) has units ``Hh_1 .. Hh_m``
  (``H1_1, H1_2, ..., H2_1, ...``);
* bias neurons ``B1, B2, ...``: ``B(l+1)`` is the bias feeding layer ``l + 1``, i.e. row 0
  of ``weights[l]``; it is drawn on top of layer ``l`` (``B1`` above the inputs, ``B2``
  above the first hidden layer, ...). The output layer has no bias neuron.

Size rules (see :func:`network_layout_mode`): a graph while every layer has at most
``MAX_GRAPH_UNITS`` units and there are at most ``MAX_GRAPH_EDGES`` weights, otherwise
one heatmap per weight matrix. In graph mode, edge labels (weight to 2 decimals) are shown
while there are at most ``MAX_EDGE_LABELS`` edges and node labels while every layer has
at most ``MAX_NODE_LABEL_UNITS`` units; larger graphs get thinner, fainter edges.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, MaxNLocator

from mlplab.plots._common import (
    DEFAULT_DPI,
    NEGATIVE_COLOUR,
    POSITIVE_COLOUR,
    new_figure,
    save_figure,
)

MAX_GRAPH_UNITS = 64
MAX_GRAPH_EDGES = 5000
MAX_EDGE_LABELS = 40
MAX_NODE_LABEL_UNITS = 20
MAX_EDGE_WIDTH = 5.0  # points, for the largest |w|

_NODE_COLOURS = {
    "bias": "#d9d9d9",
    "input": "#9ecae1",
    "hidden": "#fdd0a2",
    "output": "#c7e9c0",
}
_HEATMAP_CMAP = "RdYlGn"  # red negative, green positive, as in the graph


def layer_sizes(weights: list[np.ndarray]) -> list[int]:
    """Return the layer sizes ``[n_inputs, hidden..., n_outputs]``, checking the shapes."""
    if len(weights) == 0:
        raise ValueError("weights is empty: a network needs at least one weight matrix")
    shapes = [np.shape(w) for w in weights]
    for li, shape in enumerate(shapes):
        if len(shape) != 2 or shape[0] < 2 or shape[1] < 1:
            raise ValueError(
                f"weights[{li}] has shape {shape}; expected (fan_in + 1, fan_out) "
                "with fan_in >= 1 and fan_out >= 1 (row 0 is the bias)"
            )
        if li > 0 and shape[0] != shapes[li - 1][1] + 1:
            raise ValueError(
                f"weights[{li}] has {shape[0]} rows but layer {li} has {shapes[li - 1][1]} "
                f"units: expected {shapes[li - 1][1] + 1} rows (bias row + one per unit)"
            )
    return [shapes[0][0] - 1] + [s[1] for s in shapes]


def network_node_names(weights: list[np.ndarray]) -> list[list[str]]:
    """Return, per layer, ``[bias name] + unit names`` (the output layer has no bias).

    For the tutorial 2-2-2 network: ``[["B1", "X1", "X2"], ["B2", "Z1", "Z2"], ["Y1", "Y2"]]``.
    """
    return _node_names(layer_sizes(weights))


def _node_names(sizes: list[int]) -> list[list[str]]:
    """:func:`network_node_names` of a network with these layer sizes."""
    n_hidden = len(sizes) - 2
    names: list[list[str]] = []
    for li, n in enumerate(sizes):
        if li == 0:
            units = [f"X{i + 1}" for i in range(n)]
        elif li == len(sizes) - 1:
            units = [f"Y{i + 1}" for i in range(n)]
        elif n_hidden == 1:
            units = [f"Z{i + 1}" for i in range(n)]
        else:
            units = [f"H{li}_{i + 1}" for i in range(n)]
        bias = [f"B{li + 1}"] if li < len(sizes) - 1 else []
        names.append(bias + units)
    return names


def network_layout_mode(weights: list[np.ndarray]) -> str:
    """Return ``"graph"`` or ``"heatmap"``: how :func:`plot_network` draws these weights."""
    sizes = layer_sizes(weights)
    n_edges = sum(int(np.size(w)) for w in weights)
    if max(sizes) > MAX_GRAPH_UNITS or n_edges > MAX_GRAPH_EDGES:
        return "heatmap"
    return "graph"


def max_abs_weight(snapshots: list[list[np.ndarray]]) -> float:
    """Return the largest finite |w| over several weight lists (1.0 if there is none)."""
    best = 0.0
    for weights in snapshots:
        for w in weights:
            a = np.abs(np.asarray(w, dtype=float))
            a = a[np.isfinite(a)]
            if a.size:
                best = max(best, float(a.max()))
    return best if best > 0 else 1.0


def _positions(sizes: list[int], names: list[list[str]]) -> dict[str, tuple[float, float]]:
    """Layered layout: layer l at x = l, units centred on y = 0, bias nodes on a top row.

    Units are one apart in the widest layer; a small layer is spread over at least half
    that height so that it does not collapse into a dot beside a wide one.
    """
    tallest = max(sizes) - 1
    top = tallest / 2.0
    pos: dict[str, tuple[float, float]] = {}
    for li, n in enumerate(sizes):
        layer = names[li]
        has_bias = li < len(sizes) - 1
        units = layer[1:] if has_bias else layer
        if has_bias:
            pos[layer[0]] = (float(li), top + 1.0)
        span = max(n - 1, 0.5 * tallest) if n > 1 else 0.0
        step = span / (n - 1) if n > 1 else 0.0
        for i, name in enumerate(units):
            pos[name] = (float(li), span / 2.0 - i * step)
    return pos


def _edge_label(w: float) -> str:
    return f"{w:.2f}" if math.isfinite(w) else str(w)


def _edge_slots(names: list[list[str]]) -> list[tuple[str, str, float]]:
    """Every weight's edge as ``(source, target, t)``, matrix by matrix, row by row.

    This is the order of the weights flattened matrix by matrix (row-major, see
    :func:`_flat_weights`). The sources of ``weights[l]`` are ``names[l]`` (the bias first,
    as row 0), its targets the units of layer ``l + 1``. ``t`` places the edge's label
    along it: from 0.25 for the bias to 0.75 for the last unit of the source layer, so that
    labels do not pile up.
    """
    slots: list[tuple[str, str, float]] = []
    for li in range(len(names) - 1):
        sources = names[li]
        targets = names[li + 1][1:] if li + 1 < len(names) - 1 else names[li + 1]
        for i, src in enumerate(sources):
            t = 0.25 + 0.5 * i / max(len(sources) - 1, 1)
            slots.extend((src, dst, t) for dst in targets)
    return slots


def _flat_weights(weights: list[np.ndarray]) -> np.ndarray:
    """All the weights as floats, in the order of :func:`_edge_slots`."""
    return np.concatenate([np.asarray(w, dtype=float).ravel() for w in weights])


def _node_kind(layer: int, index: int, n_layers: int) -> str:
    """``"bias"``, ``"input"``, ``"hidden"`` or ``"output"``: the colour key of a node."""
    if layer < n_layers - 1 and index == 0:
        return "bias"
    if layer == 0:
        return "input"
    return "output" if layer == n_layers - 1 else "hidden"


def _edge_styles(
    values: np.ndarray, max_abs: float
) -> tuple[np.ndarray, list[tuple[float, float, float, float]], np.ndarray]:
    """Width (points) and RGBA colour of the edge of each weight, and the drawing order.

    Width grows with |w| / ``max_abs`` (a non-finite weight counts as the largest and is
    grey); with many edges they get thinner and fainter, so a big net stays legible. The
    order draws the strongest edges last, on top.
    """
    n_edges = values.size
    finite = np.isfinite(values)
    rel = np.where(finite, np.abs(np.where(finite, values, 0.0)) / max_abs, 1.0)
    rel = np.clip(rel, 0.0, 1.0)
    max_width = max(MAX_EDGE_WIDTH * min(1.0, (60 / n_edges) ** 0.5), 0.6)
    widths = np.maximum(rel * max_width, 0.05 if n_edges > 200 else 0.3)
    alphas = np.ones_like(rel) if n_edges <= 200 else 0.05 + 0.95 * rel**2
    colours = []
    for v, a in zip(values, alphas, strict=True):
        base = "grey" if not math.isfinite(v) else (POSITIVE_COLOUR if v > 0 else NEGATIVE_COLOUR)
        r, g, b, _ = to_rgba(base)
        colours.append((r, g, b, float(a)))
    return widths, colours, np.argsort(rel, kind="stable")


class GraphDrawing:
    """The layered graph of a network of given layer sizes on ``ax``, filled with weights.

    Built once for the layer sizes: the nodes and their labels, one edge per weight (an
    arrow while the edges are labelled, else one line collection) and the (empty) edge
    labels and legend. :meth:`fill` then draws one set of weights (edge colours, widths
    and drawing order, edge labels, legend), as often as needed: the same drawing serves
    member after member of a population, or frame after frame of an animation.

    ``edge_labels`` / ``node_labels`` force the labels on or off (default: while they fit).
    """

    def __init__(
        self,
        ax: Axes,
        sizes: list[int],
        edge_labels: bool | None = None,
        node_labels: bool | None = None,
        legend: bool = True,
    ) -> None:
        names = _node_names(sizes)
        self.ax, self.pos, self.slots = ax, _positions(sizes, names), _edge_slots(names)
        n_edges = len(self.slots)
        # Node size from the vertical room per node (in points), capped.
        height_pt = max(ax.bbox.height / ax.figure.dpi * 72.0, 50.0)
        diameter = min(30.0, 0.8 * height_pt / (max(sizes) + 2))
        self.arrows, self.lines = self._add_edges(max(diameter, 2.0) ** 2, n_edges)
        show_node_labels = (
            max(sizes) <= MAX_NODE_LABEL_UNITS if node_labels is None else node_labels
        )
        font = self._add_nodes(names, diameter, show_node_labels)
        show_edge_labels = n_edges <= MAX_EDGE_LABELS if edge_labels is None else edge_labels
        self.edge_texts = self._add_edge_labels(max(font - 2.0, 6.0)) if show_edge_labels else []
        self.legend = None
        if legend:
            self.legend = ax.text(
                0.0, -0.01, "", transform=ax.transAxes, fontsize=7, color="#444444", va="top"
            )
        ax.margins(x=0.08, y=0.08)
        ax.set_axis_off()

    def _add_edges(
        self, node_size: float, n_edges: int
    ) -> tuple[list[FancyArrowPatch], LineCollection | None]:
        """One arrow per edge while they are labelled, else one line collection; unstyled.

        Added in the order of :func:`_edge_slots` (:meth:`fill` reorders them): the data
        limits they give depend only on their positions, which are those of the nodes.
        """
        ends = np.asarray([(self.pos[src], self.pos[dst]) for src, dst, _ in self.slots])
        arrows: list[FancyArrowPatch] = []
        lines = None
        if n_edges <= MAX_EDGE_LABELS:
            shrink = float(np.sqrt(node_size) / 2)  # from the centre to the node's edge
            for (x0, y0), (x1, y1) in ends:
                arrow = FancyArrowPatch(
                    (x0, y0),
                    (x1, y1),
                    arrowstyle="-|>",
                    shrinkA=shrink,
                    shrinkB=shrink,
                    mutation_scale=10,
                    connectionstyle="arc3",
                    zorder=1,
                )
                self.ax.add_patch(arrow)
                arrows.append(arrow)
        else:
            lines = LineCollection(list(ends), antialiaseds=(1,), zorder=1)
            self.ax.add_collection(lines)
        (minx, miny), (maxx, maxy) = ends.min(axis=(0, 1)), ends.max(axis=(0, 1))
        padx, pady = 0.05 * (maxx - minx), 0.05 * (maxy - miny)
        self.ax.update_datalim([(minx - padx, miny - pady), (maxx + padx, maxy + pady)])
        self.ax.autoscale_view()
        return arrows, lines

    def _add_nodes(self, names: list[list[str]], diameter: float, labels: bool) -> float:
        """The nodes, coloured by kind, and their names if ``labels``; return the font size."""
        nodelist = [name for layer in names for name in layer]
        kinds = [
            _node_kind(li, j, len(names))
            for li, layer in enumerate(names)
            for j in range(len(layer))
        ]
        xy = np.asarray([self.pos[v] for v in nodelist])
        nodes = self.ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=max(diameter, 2.0) ** 2,
            c=[_NODE_COLOURS[kind] for kind in kinds],
            linewidths=0.8 if diameter > 6 else 0.3,
            edgecolors="#555555",
        )
        nodes.set_zorder(2)
        longest = max(len(n) for n in nodelist)
        font = float(np.clip(min(diameter * 0.4, 1.35 * diameter / longest), 5.0, 11.0))
        if labels:
            for name in nodelist:
                x, y = self.pos[name]
                self.ax.text(x, y, name, size=font, ha="center", va="center", clip_on=True)
        return font

    def _add_edge_labels(self, font_size: float) -> list[Text]:
        """The (empty) weight label of every edge, along it (see :func:`_edge_slots`)."""
        texts = []
        for src, dst, t in self.slots:
            (x0, y0), (x1, y1) = self.pos[src], self.pos[dst]
            texts.append(
                self.ax.text(
                    x0 + t * (x1 - x0),
                    y0 + t * (y1 - y0),
                    "",
                    fontsize=font_size,
                    rotation=math.degrees(math.atan2(y1 - y0, x1 - x0)),
                    rotation_mode="anchor",
                    transform_rotates_text=True,
                    ha="center",
                    va="center",
                    zorder=3,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
                )
            )
        return texts

    def fix_label_angles(self) -> None:
        """Give the edge labels the angles at which they now show, fixed: the same drawing,
        cheaper (an angle that follows the axes is computed again several times per label
        and draw). Only for axes whose place, size and limits no longer change."""
        self.ax.get_xlim()  # the limits, final (they are computed when first asked for)
        for text in self.edge_texts:
            angle = text.get_rotation()
            text.set_transform_rotates_text(False)
            text.set_rotation(angle)

    def fill(self, weights: list[np.ndarray], max_abs: float) -> None:
        """Draw ``weights`` (of the layer sizes given at construction); ``max_abs`` is the
        |w| that gets the widest edge."""
        values = _flat_weights(weights)
        widths, colours, order = _edge_styles(values, max_abs)
        ends = [(self.pos[self.slots[k][0]], self.pos[self.slots[k][1]]) for k in order]
        if self.lines is not None:
            self.lines.set_segments(ends)
            self.lines.set_linewidth(widths[order])
            self.lines.set_colors([colours[k] for k in order])
        for arrow, (start, end), k in zip(self.arrows, ends, order, strict=False):
            arrow.set_positions(start, end)
            arrow.set_linewidth(float(widths[k]))
            arrow.set_color(colours[k])
        for text, w in zip(self.edge_texts, values, strict=False):
            text.set_text(_edge_label(float(w)))
        if self.legend is not None:
            self.legend.set_text(
                f"green w > 0, red w ≤ 0; width ∝ |w| (widest: |w| = {max_abs:.3g}); "
                f"{values.size} weights"
            )


def _draw_heatmaps(ax: Axes, weights: list[np.ndarray], max_abs: float | None) -> None:
    """One heatmap per weight matrix, as inset axes of ``ax``; row 0 (bias) marked.

    Row r > 0 is unit r of the source layer, column c is unit c + 1 of the target layer.
    """
    ax.set_axis_off()
    sizes = layer_sizes(weights)
    n = len(weights)
    left, gap = 0.08, 0.2
    width = (1.0 - left - gap * (n - 1) - 0.08) / n
    for li, w in enumerate(weights):
        w = np.asarray(w, dtype=float)
        finite = np.abs(w[np.isfinite(w)])
        vmax = max_abs if max_abs is not None else (float(finite.max()) if finite.size else 1.0)
        vmax = vmax if vmax > 0 else 1.0
        sub = ax.inset_axes((left + li * (width + gap), 0.1, width, 0.8))
        im = sub.imshow(
            w,
            aspect="auto",
            cmap=_HEATMAP_CMAP,
            vmin=-vmax,
            vmax=vmax,
            interpolation="nearest",
            extent=(0.5, w.shape[1] + 0.5, w.shape[0] - 0.5, -0.5),
        )
        sub.axhline(0.5, color="black", linewidth=1.0)
        sub.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6, min_n_ticks=1))
        step = _nice_step(w.shape[0] - 1)
        sub.set_yticks([0, *range(step, w.shape[0], step)])
        sub.yaxis.set_major_formatter(FuncFormatter(_row_label))
        sub.tick_params(labelsize=7)
        sub.set_xlabel(f"to unit of layer {li + 1}", fontsize=7)
        sub.set_ylabel(f"from unit of layer {li}", fontsize=7)
        sub.set_title(f"W{li}: {sizes[li]} + bias → {sizes[li + 1]}", fontsize=8)
        cax = sub.inset_axes((1.03, 0.0, 0.05, 1.0))
        cbar = ax.figure.colorbar(im, cax=cax)
        cbar.ax.tick_params(labelsize=6)


def _nice_step(span: int, max_ticks: int = 7) -> int:
    """Smallest of 1, 2, 5, 10, 20, 50, ... giving at most ``max_ticks`` ticks over ``span``."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if span / (factor * magnitude) <= max_ticks:
                return factor * magnitude
        magnitude *= 10


def _row_label(value: float, _pos: int | None = None) -> str:
    row = round(value)
    if abs(value - row) > 1e-6 or row < 0:
        return ""
    return "bias" if row == 0 else str(row)


def draw_network(
    ax: Axes,
    weights: list[np.ndarray],
    *,
    max_abs: float | None = None,
    mode: str | None = None,
    edge_labels: bool | None = None,
    node_labels: bool | None = None,
    legend: bool = True,
) -> str:
    """Draw the network on ``ax``; return the mode used (``"graph"`` or ``"heatmap"``).

    ``max_abs`` fixes the |w| that gets the widest edge (or the colour limits of the
    heatmaps) so that several drawings share one scale; by default the largest |w| here.
    ``mode`` forces ``"graph"`` or ``"heatmap"``; by default :func:`network_layout_mode`.
    ``edge_labels`` / ``node_labels`` force the labels on or off (default: while they fit).
    """
    chosen = network_layout_mode(weights) if mode is None else mode
    if chosen not in ("graph", "heatmap"):
        raise ValueError(f"mode must be 'graph' or 'heatmap', got {mode!r}")
    if chosen == "heatmap":
        _draw_heatmaps(ax, weights, max_abs)
    else:
        scale = max_abs if max_abs is not None and max_abs > 0 else max_abs_weight([weights])
        graph = GraphDrawing(ax, layer_sizes(weights), edge_labels, node_labels, legend)
        graph.fill(weights, scale)
    return chosen


def _network_figure(
    figsize: tuple[float, float], subtitled: bool, dpi: float
) -> tuple[Figure, Axes]:
    """A figure for :func:`plot_network` and its axes, below room for the (sub)title."""
    fig = new_figure(figsize, dpi=dpi, layout=None)  # axes placed by hand: no tick labels to fit
    top = 1.0 - (0.75 if subtitled else 0.5) / figsize[1]
    return fig, fig.add_axes((0.01, 0.06, 0.98, top - 0.06))


def _heading(fig: Figure, title: str, subtitle: str | None) -> None:
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=12, y=0.995, va="top")


class NetworkFigure:
    """The figure of :func:`plot_network` in graph mode for networks of given layer sizes,
    filled with one set of weights.

    Built once for the layer sizes, a dpi and whether a subtitle is shown; :meth:`fill`
    then draws one set of weights and the heading, as often as needed: a
    :class:`~mlplab.plots.Painter` fills one figure with member after member.
    """

    def __init__(self, sizes: list[int], subtitled: bool, dpi: float = DEFAULT_DPI) -> None:
        width = min(16.0, max(6.0, 2.0 * len(sizes) + 1.0))
        figsize = (width, min(11.0, max(4.2, 3.0 + 0.2 * max(sizes))))
        self.fig, ax = _network_figure(figsize, subtitled, dpi)
        self.graph = GraphDrawing(ax, sizes)
        self.graph.fix_label_angles()  # the axes are placed by hand, their limits set

    def fill(self, weights: list[np.ndarray], title: str, subtitle: str | None) -> None:
        """Draw ``weights`` (widest edge: their largest |w|) under ``title`` and ``subtitle``."""
        self.graph.fill(weights, max_abs_weight([weights]))
        _heading(self.fig, title, subtitle)


def plot_network(
    weights: list[np.ndarray],
    path: str | Path,
    title: str = "Final network after backpropagation",
    subtitle: str | None = None,
    dpi: float = DEFAULT_DPI,
) -> Path:
    """Draw the network (graph or heatmaps, see :func:`network_layout_mode`) to ``path``.

    The figure grows with the number of layers and the widest layer; it is drawn and
    saved at ``dpi`` dots per inch.
    """
    sizes = layer_sizes(weights)
    if network_layout_mode(weights) == "graph":
        figure = NetworkFigure(sizes, bool(subtitle), dpi)
        figure.fill(weights, title, subtitle)
        return save_figure(figure.fig, path)
    fig, ax = _network_figure((min(20.0, 3.6 * len(weights) + 1.0), 5.5), bool(subtitle), dpi)
    draw_network(ax, weights, mode="heatmap")
    _heading(fig, title, subtitle)
    return save_figure(fig, path)

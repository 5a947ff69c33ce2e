"""The network diagram: a layered graph of the weights (networkx), or heatmaps when large.

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

import networkx as nx
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
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
    sizes = layer_sizes(weights)
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


def _weighted_edges(
    weights: list[np.ndarray], names: list[list[str]]
) -> list[tuple[str, str, float, float]]:
    """Every weight as ``(source, target, w, t)``, matrix by matrix, row by row.

    The sources of ``weights[l]`` are ``names[l]`` (the bias first, as row 0), its targets
    the units of layer ``l + 1``. ``t`` places the edge's label along it: from 0.25 for the
    bias to 0.75 for the last unit of the source layer, so that labels do not pile up.
    """
    edges: list[tuple[str, str, float, float]] = []
    for li, matrix in enumerate(weights):
        w = np.asarray(matrix, dtype=float)
        sources = names[li]
        targets = names[li + 1][1:] if li + 1 < len(names) - 1 else names[li + 1]
        for i, src in enumerate(sources):
            t = 0.25 + 0.5 * i / max(len(sources) - 1, 1)
            edges.extend((src, dst, float(w[i, j]), t) for j, dst in enumerate(targets))
    return edges


def _draw_edge_labels(
    ax: Axes,
    edges: list[tuple[str, str, float, float]],
    pos: dict[str, tuple[float, float]],
    font_size: float,
) -> None:
    """Weight labels along the edges (see :func:`_weighted_edges`), to 2 decimals."""
    for src, dst, w, t in edges:
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        ax.text(
            x0 + t * (x1 - x0),
            y0 + t * (y1 - y0),
            _edge_label(w),
            fontsize=font_size,
            rotation=math.degrees(math.atan2(y1 - y0, x1 - x0)),
            rotation_mode="anchor",
            transform_rotates_text=True,
            ha="center",
            va="center",
            zorder=3,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )


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


def _draw_graph(
    ax: Axes,
    weights: list[np.ndarray],
    max_abs: float,
    edge_labels: bool | None,
    node_labels: bool | None,
    legend: bool,
) -> None:
    sizes = layer_sizes(weights)
    names = network_node_names(weights)
    pos = _positions(sizes, names)
    edges = _weighted_edges(weights, names)
    n_edges = len(edges)
    show_edge_labels = n_edges <= MAX_EDGE_LABELS if edge_labels is None else edge_labels
    show_node_labels = max(sizes) <= MAX_NODE_LABEL_UNITS if node_labels is None else node_labels

    g = nx.DiGraph()
    nodelist = [name for layer in names for name in layer]
    g.add_nodes_from(nodelist)
    g.add_edges_from((src, dst, {"weight": w}) for src, dst, w, _ in edges)
    kinds = [
        _node_kind(li, j, len(sizes)) for li, layer in enumerate(names) for j in range(len(layer))
    ]
    widths, colours, order = _edge_styles(np.array([e[2] for e in edges]), max_abs)

    # Node size from the vertical room per node (in points), capped.
    height_pt = max(ax.bbox.height / ax.figure.dpi * 72.0, 50.0)
    diameter = min(30.0, 0.8 * height_pt / (max(sizes) + 2))
    node_size = max(diameter, 2.0) ** 2
    nx.draw_networkx_edges(
        g,
        pos,
        edgelist=[edges[k][:2] for k in order],
        width=[float(widths[k]) for k in order],
        edge_color=[colours[k] for k in order],
        ax=ax,
        arrows=n_edges <= MAX_EDGE_LABELS,
        arrowsize=10,
        node_size=node_size,
        nodelist=nodelist,
    )
    nx.draw_networkx_nodes(
        g,
        pos,
        nodelist=nodelist,
        node_size=node_size,
        node_color=[_NODE_COLOURS[kind] for kind in kinds],
        edgecolors="#555555",
        linewidths=0.8 if diameter > 6 else 0.3,
        ax=ax,
    )
    longest = max(len(n) for n in nodelist)
    font = float(np.clip(min(diameter * 0.4, 1.35 * diameter / longest), 5.0, 11.0))
    if show_node_labels:
        nx.draw_networkx_labels(g, pos, font_size=font, ax=ax)
    if show_edge_labels:
        _draw_edge_labels(ax, edges, pos, max(font - 2.0, 6.0))
    if legend:
        ax.text(
            0.0,
            -0.01,
            f"green w > 0, red w ≤ 0; width ∝ |w| (widest: |w| = {max_abs:.3g}); {n_edges} weights",
            transform=ax.transAxes,
            fontsize=7,
            color="#444444",
            va="top",
            ha="left",
        )
    ax.margins(x=0.08, y=0.08)
    ax.set_axis_off()


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
        _draw_graph(ax, weights, scale, edge_labels, node_labels, legend)
    return chosen


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
    mode = network_layout_mode(weights)
    if mode == "graph":
        width = min(16.0, max(6.0, 2.0 * len(sizes) + 1.0))
        figsize = (width, min(11.0, max(4.2, 3.0 + 0.2 * max(sizes))))
    else:
        figsize = (min(20.0, 3.6 * len(weights) + 1.0), 5.5)
    fig = new_figure(figsize, dpi=dpi, layout=None)  # axes placed by hand: no tick labels to fit
    top = 1.0 - (0.75 if subtitle else 0.5) / figsize[1]
    ax = fig.add_axes((0.01, 0.06, 0.98, top - 0.06))
    draw_network(ax, weights, mode=mode)
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=12, y=0.995, va="top")
    return save_figure(fig, path)

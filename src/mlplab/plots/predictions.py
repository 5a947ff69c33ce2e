"""Predictions: actual vs predicted panels, confusion matrix, decision boundary."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mlplab.plots._common import (
    DEFAULT_DPI,
    as_2d,
    default_names,
    new_figure,
    rescale,
    save_figure,
)

#: At most this many panels (outputs) are drawn; the title says when some are left out.
MAX_PANELS = 16
#: At most this many samples are scattered per panel (evenly spaced rows are kept).
MAX_POINTS = 5000
#: Grid resolution (points per axis) of a decision boundary.
GRID_RESOLUTION = 200

_ACTUAL = "blue"
_PREDICTED = "red"


def _grid_shape(n: int) -> tuple[int, int]:
    ncols = math.ceil(math.sqrt(n))
    return math.ceil(n / ncols), ncols


def _subsample(n: int) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_POINTS).astype(int))


def _panels(fig: Figure, n: int, nrows: int, ncols: int) -> list[Axes]:
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def _class_labels(Y: np.ndarray) -> np.ndarray:
    """Integer classes of one-hot / score rows (argmax), one column (> 0.5) or labels."""
    arr = np.asarray(Y)
    if arr.ndim == 1:
        return arr.astype(int)
    if arr.shape[1] == 1:
        return (np.nan_to_num(arr[:, 0].astype(float)) > 0.5).astype(int)
    return np.argmax(np.nan_to_num(arr.astype(float), nan=-np.inf), axis=1)


def _n_classes(Y: np.ndarray) -> int:
    arr = np.asarray(Y)
    if arr.ndim == 1:
        return int(arr.max()) + 1 if arr.size else 1
    return max(arr.shape[1], 2)


def _check_rows(X: np.ndarray, Y: np.ndarray, Y_pred: np.ndarray | None = None) -> None:
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    if Y_pred is not None and Y_pred.shape != Y.shape:
        raise ValueError(f"Y_pred has shape {Y_pred.shape} but Y has shape {Y.shape}")


def _confusion(fig: Figure, Y: np.ndarray, Y_pred: np.ndarray, names: list[str]) -> None:
    k = len(names)
    actual = np.clip(_class_labels(Y), 0, k - 1)
    predicted = np.clip(_class_labels(Y_pred), 0, k - 1)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (actual, predicted), 1)
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, label="samples")
    if k <= 20:
        ticks = np.arange(k)
        ax.set_xticks(ticks, names, rotation=45 if k > 6 else 0)
        ax.set_yticks(ticks, names)
        top = cm.max() if cm.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=9 if k <= 10 else 6,
                    color="white" if cm[i, j] > top / 2 else "black",
                )
    n = int(cm.sum())
    accuracy = float(np.trace(cm)) / n if n else float("nan")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    ax.set_title(f"Confusion matrix: accuracy {accuracy:.1%} on {n} samples")


def _points(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The (x, y) pairs to scatter: those with both coordinates finite (as ``scatter``)."""
    xy = np.column_stack([x, y])
    return xy[np.isfinite(xy).all(axis=1)]


def _r2(t: np.ndarray, p: np.ndarray) -> float:
    """Coefficient of determination of predictions ``p`` of targets ``t`` (NaN if t is flat)."""
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return 1.0 - float(np.sum((t - p) ** 2)) / ss_tot if ss_tot > 0 else float("nan")


class PredictionsFigure:
    """Actual against predicted outputs for data of one shape, filled with one data set.

    Built once for ``n_in`` inputs, ``n_out`` outputs and a dpi: the figure, its panels
    and their (empty) series; :meth:`fill` then draws one data set into it (points, lines,
    titles, labels, limits), as often as needed: a :class:`~mlplab.plots.Painter` fills
    one figure with member after member. The layouts are those of
    :func:`plot_predictions` for regression.
    """

    def __init__(self, n_in: int, n_out: int, dpi: float = DEFAULT_DPI) -> None:
        self.shown = min(n_out, MAX_PANELS)
        nrows, ncols = _grid_shape(self.shown)
        #: One panel per output against an input (else: predicted against actual).
        self.vs_input = n_in == 1 or (n_in == n_out and n_out <= 4)
        self.line = n_in == 1
        if self.vs_input:
            if self.shown <= 2:  # stacked, as in the tutorial
                nrows, ncols = self.shown, 1
            figsize = (5.0 * ncols + 1.0, 3.4 * nrows + 0.6)
        else:
            figsize = (3.6 * ncols + 0.6, 3.3 * nrows + 0.6)
        self.fig = new_figure(figsize, dpi=dpi)
        self.axes = _panels(self.fig, self.shown, nrows, ncols)
        #: Per panel, the series filled by :meth:`fill`: actual points (against an input),
        #: predicted points (scattered) and a line (the prediction against the only input,
        #: or the y = x diagonal of predicted against actual).
        self.actual: list[PathCollection] = []
        self.predicted: list[PathCollection] = []
        self.lines: list[Line2D] = []
        for ax in self.axes:
            if self.vs_input:
                self.actual.append(ax.scatter([], [], color=_ACTUAL, s=14, label="Actual"))
            if self.line:
                self.lines += ax.plot([], [], color=_PREDICTED, lw=2, label="Predicted")
            elif self.vs_input:
                self.predicted.append(
                    ax.scatter([], [], color=_PREDICTED, alpha=0.5, s=14, label="Predicted")
                )
            else:
                self.predicted.append(ax.scatter([], [], color=_PREDICTED, alpha=0.5, s=10))
                self.lines += ax.plot([], [], color="black", lw=1, ls="--", label="y = x")
            ax.grid(True, alpha=0.3)
        if self.vs_input:
            self.axes[-1].legend(loc="lower right", fontsize=8)
        # fill sets its text only: fig.suptitle would undo where constrained layout put it.
        self.heading = self.fig.suptitle("")

    def fill(
        self, X: np.ndarray, Y: np.ndarray, Y_pred: np.ndarray, fnames: list[str], tnames: list[str]
    ) -> None:
        """Draw one data set (2-D arrays of the shapes given at construction) into the figure."""
        rows = _subsample(X.shape[0])
        if self.vs_input:
            self._output_vs_input(X[rows], Y[rows], Y_pred[rows], fnames, tnames)
            heading = "Actual vs predicted"
        else:
            self._predicted_vs_actual(Y, Y_pred, rows, tnames)
            heading = "Predicted vs actual"
        if self.shown < Y.shape[1]:
            heading += f" (first {self.shown} of {Y.shape[1]} outputs shown)"
        if X.shape[0] > MAX_POINTS:
            heading += f"; {len(rows)} of {X.shape[0]} samples drawn"
        self.heading.set_text(heading)
        rescale(self.axes)

    def _output_vs_input(
        self, X: np.ndarray, Y: np.ndarray, Y_pred: np.ndarray, fnames: list[str], tnames: list[str]
    ) -> None:
        """Panel k: output k against input k (or the only input), actual blue, predicted red."""
        for k, ax in enumerate(self.axes):
            i = 0 if self.line else k
            x = X[:, i]
            self.actual[k].set_offsets(_points(x, Y[:, k]))
            if self.line:
                order = np.argsort(x, kind="stable")
                self.lines[k].set_data(x[order], Y_pred[order, k])
            else:
                self.predicted[k].set_offsets(_points(x, Y_pred[:, k]))
            ax.set_title(f"Relationship between {fnames[i]} and {tnames[k]}", fontsize=10)
            ax.set_xlabel(fnames[i])
            ax.set_ylabel(tnames[k])

    def _predicted_vs_actual(
        self, Y: np.ndarray, Y_pred: np.ndarray, rows: np.ndarray, tnames: list[str]
    ) -> None:
        """Panel k: predicted against actual output k, with the y = x diagonal."""
        for k, ax in enumerate(self.axes):
            t, p = Y[rows, k], Y_pred[rows, k]
            self.predicted[k].set_offsets(_points(t, p))
            both = np.concatenate([t, p])
            both = both[np.isfinite(both)]
            self.lines[k].set_visible(bool(both.size))  # no diagonal without a finite value
            if both.size:
                lo, hi = float(both.min()), float(both.max())
                self.lines[k].set_data([lo, hi], [lo, hi])
            ax.set_title(f"{tnames[k]} (R² {_r2(Y[:, k], Y_pred[:, k]):.3f})", fontsize=10)
            ax.set_xlabel(f"actual {tnames[k]}")
            ax.set_ylabel(f"predicted {tnames[k]}")


def checked_inputs(
    X: np.ndarray, Y: np.ndarray, Y_pred: np.ndarray, feature_names: list[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``X``, ``Y``, ``Y_pred`` as 2-D float arrays (rows and shapes checked), and the
    feature names (``X1 ..`` by default)."""
    X = as_2d(X, "X")
    Y = as_2d(Y, "Y")
    Y_pred = as_2d(Y_pred, "Y_pred")
    _check_rows(X, Y, Y_pred)
    return X, Y, Y_pred, default_names("X", X.shape[1], feature_names, "feature_names")


def plot_predictions(
    X: np.ndarray,
    Y: np.ndarray,
    Y_pred: np.ndarray,
    path: str | Path,
    feature_names: list[str] | None = None,
    target_names: list[str] | None = None,
    classification: bool = False,
    dpi: float = DEFAULT_DPI,
) -> Path:
    """Plot actual against predicted outputs to ``path``; the layout depends on the shapes.

    * ``classification``: confusion matrix of argmax(Y) vs argmax(Y_pred) (a single
      column is thresholded at 0.5);
    * one input: each output against the input, actual as blue points, prediction as a
      red line (sorted by x);
    * as many inputs as outputs, at most 4 (the tutorial): panel k shows output k against
      input k, actual blue, predicted red (alpha 0.5);
    * otherwise: predicted against actual per output with the y = x diagonal.

    At most ``MAX_PANELS`` outputs are drawn (the title says so when truncated) and at
    most ``MAX_POINTS`` samples per panel. The figure is drawn and saved at ``dpi`` dots
    per inch.
    """
    X, Y, Y_pred, fnames = checked_inputs(X, Y, Y_pred, feature_names)
    n_in, n_out = X.shape[1], Y.shape[1]
    if classification:
        k = max(n_out, 2)
        cnames = default_names("class ", k, target_names if n_out > 1 else None, "target_names")
        fig = new_figure((6.0 + 0.2 * min(k, 20), 5.0 + 0.15 * min(k, 20)), dpi=dpi)
        _confusion(fig, Y, Y_pred, cnames)
        return save_figure(fig, path)
    figure = PredictionsFigure(n_in, n_out, dpi)
    figure.fill(X, Y, Y_pred, fnames, default_names("Y", n_out, target_names, "target_names"))
    return save_figure(figure.fig, path)


def _grid(X: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``resolution`` × ``resolution`` grid covering the 2-D data with a 10 % margin."""
    lo = np.nanmin(X, axis=0)
    hi = np.nanmax(X, axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    lo, hi = lo - 0.1 * span, hi + 0.1 * span
    return np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))


def draw_decision_boundary(
    ax: Axes,
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    resolution: int = GRID_RESOLUTION,
) -> None:
    """Draw on ``ax`` the predicted class over a grid covering ``X`` and the points by class.

    ``X`` has 2 columns; ``Y`` is one-hot (argmax), one column (> 0.5) or integer labels;
    ``predict`` maps an (n, 2) array to scores of the same kind.
    """
    X = as_2d(X, "X")
    if X.shape[1] != 2:
        raise ValueError(f"a decision boundary needs 2 input features, X has {X.shape[1]}")
    Y = np.asarray(Y)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    xx, yy = _grid(X, resolution)
    scores = np.asarray(predict(np.column_stack([xx.ravel(), yy.ravel()])))
    k = max(_n_classes(Y), _n_classes(scores))
    zz = np.clip(_class_labels(scores), 0, k - 1).reshape(xx.shape)
    colours = [_CLASS_COLOURS[i % len(_CLASS_COLOURS)] for i in range(k)]
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(k + 1) - 0.5, k)
    ax.contourf(xx, yy, zz, levels=np.arange(k + 1) - 0.5, colors=colours, alpha=0.35)
    labels = np.clip(_class_labels(Y), 0, k - 1)
    rows = _subsample(X.shape[0])
    ax.scatter(
        X[rows, 0],
        X[rows, 1],
        c=labels[rows],
        cmap=cmap,
        norm=norm,
        s=16,
        edgecolors="black",
        linewidths=0.4,
    )
    ax.set_xlim(float(xx.min()), float(xx.max()))
    ax.set_ylim(float(yy.min()), float(yy.max()))
    ax.set_xlabel("X1")
    ax.set_ylabel("X2")


_CLASS_COLOURS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip


def plot_decision_boundary(
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    path: str | Path,
    title: str = "Decision boundary",
    dpi: float = DEFAULT_DPI,
) -> Path:
    """Plot the predicted class over the plane of the 2-D inputs, with the data, to ``path``.

    ``predict`` maps an (n, 2) array to (n, k) scores (argmax = class) or (n, 1)
    probabilities (> 0.5 = class 1); ``Y`` is one-hot, one column, or integer labels.
    The 6 × 5 in figure is drawn and saved at ``dpi`` dots per inch.
    """
    fig = new_figure((6.0, 5.0), dpi=dpi)
    ax = fig.add_subplot()
    draw_decision_boundary(ax, predict, X, Y)
    ax.set_title(title)
    return save_figure(fig, path)

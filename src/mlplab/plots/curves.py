"""Training curves: RMSE (and accuracy, when recorded) across epochs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mlplab.plots._common import DEFAULT_DPI, new_figure, rescale, save_figure

#: A log-scaled y axis is used when the finite positive values span more than this ratio.
LOG_SCALE_RATIO = 100.0


def wants_log_scale(*curves: np.ndarray) -> bool:
    """True when the finite positive values of ``curves`` span more than two decades."""
    values = [np.asarray(c, dtype=float).ravel() for c in curves if c is not None]
    if not values:
        return False
    v = np.concatenate(values)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 2:
        return False
    return bool(v.max() / v.min() > LOG_SCALE_RATIO)


#: The curves a history may hold: key → (legend label, colour, panel: 0 RMSE, 1 accuracy).
_CURVES = {
    "train_rmse": ("train RMSE", "tab:blue", 0),
    "val_rmse": ("validation RMSE", "tab:orange", 0),
    "train_accuracy": ("train accuracy", "tab:green", 1),
    "val_accuracy": ("validation accuracy", "tab:red", 1),
}


def _curve(history: Mapping[str, np.ndarray], key: str) -> np.ndarray | None:
    if key not in history or history[key] is None:
        return None
    arr = np.asarray(history[key], dtype=float).ravel()
    return arr if arr.size else None


def history_curves(history: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The non-empty curves of ``history`` (keys of ``_CURVES``, in that order), as floats."""
    curves = {key: _curve(history, key) for key in _CURVES}
    return {key: arr for key, arr in curves.items() if arr is not None}


def _last(arr: np.ndarray) -> str:
    finite = arr[np.isfinite(arr)]
    return f"{finite[-1]:.4g}" if finite.size else "n/a"


class RmseFigure:
    """The RMSE figure of histories holding one set of curves, filled with one history.

    Built once for the curves present (``keys``, from :func:`history_curves`) and a dpi:
    the figure, its panels and one line per curve. :meth:`fill` then draws a history into
    it (values, legends, scale, limits, title), as often as needed: a
    :class:`~mlplab.plots.Painter` fills one figure with member after member.
    """

    def __init__(self, keys: tuple[str, ...], dpi: float = DEFAULT_DPI) -> None:
        has_acc = any(_CURVES[key][2] for key in keys)
        self.fig = new_figure((7.0, 6.5) if has_acc else (7.0, 4.5), dpi=dpi)
        if has_acc:
            self.panels = list(self.fig.subplots(2, 1, sharex=True, height_ratios=[3, 2]))
        else:
            self.panels = [self.fig.add_subplot()]
        self.lines: dict[str, Line2D] = {}
        for key in keys:
            _, colour, panel = _CURVES[key]
            (self.lines[key],) = self.panels[panel].plot([], [], color=colour, ms=3)
        ax = self.panels[0]
        self.kept = ax.axvline(1, color="0.35", ls="--", lw=1, visible=False)
        self.has_rmse = any(not _CURVES[key][2] for key in keys)
        if not self.has_rmse:
            ax.text(0.5, 0.5, "no RMSE recorded", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylabel("RMSE")
        ax.grid(True, which="major", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if has_acc:
            self.panels[1].set_ylabel("accuracy")
            self.panels[1].grid(True, alpha=0.3)
        self.panels[-1].set_xlabel("epoch")

    def fill(self, curves: Mapping[str, np.ndarray], title: str, kept: int | None = None) -> None:
        """Draw ``curves`` (the same keys as at construction) titled ``title``, and the epoch
        whose weights were ``kept`` (if not the last) as a dashed line."""
        self.kept.set_visible(kept is not None)
        self.kept.set_xdata([kept or 1] * 2)
        self.kept.set_label("_nolegend_" if kept is None else f"weights kept (epoch {kept})")
        for key, line in self.lines.items():
            arr = curves[key]
            line.set_data(np.arange(1, arr.size + 1), arr)
            line.set_marker("o" if arr.size <= 30 else "None")
            # the last epoch's (running) value: the summary's final RMSE is the final weights'
            line.set_label(f"{_CURVES[key][0]} (last epoch {_last(arr)})")
        ax = self.panels[0]
        rmse = [arr for key, arr in curves.items() if not _CURVES[key][2]]
        scale = "log" if rmse and wants_log_scale(*rmse) else "linear"
        if ax.get_yscale() != scale:
            ax.set_yscale(scale)
        if self.has_rmse:
            ax.legend(loc="best")
        ax.set_title(title)
        if len(self.panels) > 1:
            self._fill_accuracy([arr for key, arr in curves.items() if _CURVES[key][2]])
        rescale([panel for panel in self.panels if panel.lines])  # no line: no autoscaling

    def _fill_accuracy(self, curves: list[np.ndarray]) -> None:
        """Accuracy panel: from -0.02 to 1.02 when every finite value is in [0, 1]."""
        ax = self.panels[1]
        acc = np.concatenate(curves)
        acc = acc[np.isfinite(acc)]
        if acc.size and acc.min() >= 0.0 and acc.max() <= 1.0:
            ax.set_ylim(-0.02, 1.02)
        else:
            ax.set_autoscaley_on(True)
        ax.legend(loc="best")


def plot_rmse(
    history: Mapping[str, np.ndarray],
    path: str | Path,
    title: str = "RMSE across epochs",
    dpi: float = DEFAULT_DPI,
    kept: int | None = None,
) -> Path:
    """Plot ``train_rmse`` (and ``val_rmse``) against the epoch (counted from 1) to ``path``.

    ``kept``: the epoch whose weights early stopping kept (a dashed line), if not the last.
    The y axis is logarithmic when the values span more than two decades. When
    ``train_accuracy`` / ``val_accuracy`` are present they get a second panel below.
    Missing or empty curves are skipped; non-finite values (a diverged run) are not drawn.
    The figure is 7 in wide, drawn and saved at ``dpi`` dots per inch.
    """
    curves = history_curves(history)
    figure = RmseFigure(tuple(curves), dpi)
    figure.fill(curves, title, kept)
    return save_figure(figure.fig, path)

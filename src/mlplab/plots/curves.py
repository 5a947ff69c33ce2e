"""Training curves: RMSE (and accuracy, when recorded) across epochs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from mlplab.plots._common import DEFAULT_DPI, new_figure, save_figure

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


def _curve(history: Mapping[str, np.ndarray], key: str) -> np.ndarray | None:
    if key not in history or history[key] is None:
        return None
    arr = np.asarray(history[key], dtype=float).ravel()
    return arr if arr.size else None


def _final(arr: np.ndarray) -> str:
    finite = arr[np.isfinite(arr)]
    return f"{finite[-1]:.4g}" if finite.size else "n/a"


def _plot_series(ax: Axes, arr: np.ndarray, label: str, colour: str) -> None:
    epochs = np.arange(1, arr.size + 1)
    marker = "o" if arr.size <= 30 else None
    ax.plot(epochs, arr, label=f"{label} (final {_final(arr)})", color=colour, marker=marker, ms=3)


def plot_rmse(
    history: Mapping[str, np.ndarray],
    path: str | Path,
    title: str = "RMSE across epochs",
    dpi: float = DEFAULT_DPI,
) -> Path:
    """Plot ``train_rmse`` (and ``val_rmse``) against the epoch (counted from 1) to ``path``.

    The y axis is logarithmic when the values span more than two decades. When
    ``train_accuracy`` / ``val_accuracy`` are present they get a second panel below.
    Missing or empty curves are skipped; non-finite values (a diverged run) are not drawn.
    The figure is 7 in wide, drawn and saved at ``dpi`` dots per inch.
    """
    train = _curve(history, "train_rmse")
    val = _curve(history, "val_rmse")
    train_acc = _curve(history, "train_accuracy")
    val_acc = _curve(history, "val_accuracy")
    has_acc = train_acc is not None or val_acc is not None

    fig = new_figure((7.0, 6.5) if has_acc else (7.0, 4.5), dpi=dpi)
    if has_acc:
        ax, ax_acc = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    else:
        ax, ax_acc = fig.add_subplot(), None

    if train is not None:
        _plot_series(ax, train, "train RMSE", "tab:blue")
    if val is not None:
        _plot_series(ax, val, "validation RMSE", "tab:orange")
    if train is None and val is None:
        ax.text(0.5, 0.5, "no RMSE recorded", transform=ax.transAxes, ha="center", va="center")
    elif wants_log_scale(*(c for c in (train, val) if c is not None)):
        ax.set_yscale("log")
    if train is not None or val is not None:
        ax.legend(loc="best")
    ax.set_ylabel("RMSE")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    if ax_acc is not None:
        if train_acc is not None:
            _plot_series(ax_acc, train_acc, "train accuracy", "tab:green")
        if val_acc is not None:
            _plot_series(ax_acc, val_acc, "validation accuracy", "tab:red")
        acc = np.concatenate([a for a in (train_acc, val_acc) if a is not None])
        acc = acc[np.isfinite(acc)]
        if acc.size and acc.min() >= 0.0 and acc.max() <= 1.0:
            ax_acc.set_ylim(-0.02, 1.02)
        ax_acc.set_ylabel("accuracy")
        ax_acc.legend(loc="best")
        ax_acc.grid(True, alpha=0.3)
        ax_acc.set_xlabel("epoch")
    else:
        ax.set_xlabel("epoch")
    return save_figure(fig, path)

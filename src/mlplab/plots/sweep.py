"""Figures of a sweep or a study: every child's RMSE curve, metric against swept value,
and an Optuna study's objective per trial.

The inputs are those of :mod:`mlplab.report`: child records and the summary rows made
from them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator, NullFormatter

from mlplab.plots._common import DEFAULT_DPI, new_figure, save_figure
from mlplab.report import RANK_BY, ChildRecord

#: Points of a categorical panel are spread sideways by up to this much (seeded jitter).
JITTER = 0.12
#: A numeric parameter with more distinct values than this gets a numeric axis.
MAX_CATEGORIES = 8


#: A number in a run name (``seed=10``, ``lr=0.05``, ``lr=1e-05``).
_NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)")


def natural_key(name: str) -> list[tuple[int, float, str]]:
    """Run names in the order of their numbers: ``seed=2`` before ``seed=10``, ``lr=0.05``
    before ``lr=0.1``."""
    return [(1, float(part), "") if i % 2 else (0, 0.0, part)
            for i, part in enumerate(_NUMBER.split(name))]  # fmt: skip


def plot_sweep_curves(
    children: Sequence[ChildRecord], path: str | Path, title: str = "", dpi: float = DEFAULT_DPI
) -> Path:
    """Every child's train RMSE per epoch on one chart (log scale), labelled by run name.

    Curves are in run-name order (:func:`natural_key`) with distinct colours (up to 20,
    then a colour ramp), at the epochs logged (a long run's are thinned); a child that did
    not finish is dashed and its status added to its label.
    """
    fig = new_figure((10.0, 6.0), dpi=dpi)
    ax = fig.add_subplot()
    with_history = sorted((c for c in children if c.history), key=lambda c: natural_key(c.run_name))
    # distinct colours for up to 20 curves (tab10 repeats after 10), then a ramp
    n = len(with_history)
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    for i, c in enumerate(with_history):
        y = np.asarray(c.history, dtype=float)
        x = np.asarray(c.steps) if len(c.steps) == y.size else np.arange(1, y.size + 1)
        label = c.run_name or c.run_id[:8]
        if c.status != "FINISHED":
            label += f" ({c.status})"
        ax.plot(
            x,  # the epochs logged: a long run's history is thinned
            y,
            lw=1.2,
            label=label,
            ls="-" if c.status == "FINISHED" else "--",
            color=cmap(i if n <= 20 else i / max(1, n - 1)),
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("train RMSE")
    if n:
        ax.set_yscale("log")
        ax.legend(
            fontsize=7,
            ncol=1 if n <= 12 else 2,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
        )
    else:
        ax.text(0.5, 0.5, "no RMSE history", ha="center", va="center", transform=ax.transAxes)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or f"train RMSE of {n} runs")
    return save_figure(fig, path)


def _as_numbers(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def _draw_param_panel(ax: Axes, values: list[str], y: np.ndarray) -> None:
    """Scatter ``y`` against the swept ``values`` (strings) on ``ax``, see plot_sweep_params."""
    numbers = _as_numbers(values) if values else None
    if numbers is not None and len(set(numbers)) > MAX_CATEGORIES:
        x = np.asarray(numbers)
        ax.scatter(x, y, s=22, alpha=0.8)
        if x.min() > 0 and x.max() / x.min() >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        elif all(v.is_integer() for v in numbers):  # seeds, widths: no tick between two
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return
    if numbers is not None:
        levels = sorted(set(values), key=float)
    else:
        levels = sorted(set(values), key=lambda s: (len(s), s))
    pos = {c: i for i, c in enumerate(levels)}
    x = np.array([pos[v] for v in values], dtype=float)
    rng = np.random.default_rng(0)
    ax.scatter(x + rng.uniform(-JITTER, JITTER, x.size), y, s=22, alpha=0.8)
    medians = [np.median(y[x == i]) for i in range(len(levels))]
    ax.plot(range(len(levels)), medians, lw=1, color="grey", marker="_", ms=14)
    # a tuned float is named by 4 digits (its full repr would overprint the next)
    labels = [f"{float(v):.4g}" for v in levels] if numbers is not None else levels
    ax.set_xticks(range(len(levels)), labels, rotation=30 if len(levels) > 4 else 0)
    ax.set_xlim(-0.5, max(len(levels), 1) - 0.5)  # no level: every child failed


def plot_sweep_params(
    rows: Sequence[dict[str, Any]],
    param_keys: Sequence[str],
    path: str | Path,
    metric: str = RANK_BY,
    dpi: float = DEFAULT_DPI,
) -> Path:
    """Final ``metric`` against each swept parameter: one panel per parameter.

    ``rows`` are summary rows (:func:`mlplab.report.summary_rows`); without
    ``param_keys`` the single panel is against the run name. A parameter with at most
    ``MAX_CATEGORIES`` distinct values is drawn as categories (numbers in numeric order,
    other values by length then alphabetically); one with more numeric values (a tuned
    learning rate) on a numeric axis, logarithmic when they span a factor of 10 or more.
    Each point is a child; the grey line joins the medians of the categories. Rows
    without the metric (NaN or absent: failed children) are counted in the panel title.
    """
    keys = list(param_keys) or ["run_name"]
    fig = new_figure((max(4.0, 3.6 * len(keys)), 3.8), dpi=dpi)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    ok = [r for r in rows if not math.isnan(r.get(metric, math.nan))]
    missing = len(rows) - len(ok)
    y = np.array([r[metric] for r in ok], dtype=float)
    for ax, key in zip(axes, keys, strict=True):
        _draw_param_panel(ax, [str(r[key]) for r in ok], y)
        if y.size and np.all(y > 0):
            ax.set_yscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.set_title(key + (f"  ({missing} without {metric})" if missing else ""), fontsize=9)
    fig.suptitle(f"final {metric} against each swept parameter")
    return save_figure(fig, path)


def plot_objective(
    values: Sequence[float | None],
    path: str | Path,
    direction: str = "minimize",
    label: str = "objective",
    dpi: float = DEFAULT_DPI,
) -> Path:
    """An Optuna study's objective per trial (failed trials left out) and its best so far.

    ``values[i]`` is trial ``i``'s objective (None or non-finite for a failed trial);
    ``direction`` (``"minimize"`` or ``"maximize"``) decides what "best" means. The y
    axis is logarithmic when every value is positive.
    """
    fig = new_figure((7.0, 4.0), dpi=dpi)
    ax = fig.add_subplot()
    trials = [i for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    y = np.array([values[i] for i in trials], dtype=float)
    if y.size:
        ax.scatter(trials, y, s=18, label="trial")
        best = np.minimum.accumulate(y) if direction == "minimize" else np.maximum.accumulate(y)
        ax.step(trials, best, where="post", color="C3", label="best so far")
        if np.all(y > 0):
            ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{label} of {y.size} trials")
    return save_figure(fig, path)


def plot_sweep_replicates(
    reps: Sequence[dict[str, Any]],
    path: str | Path,
    metric: str = RANK_BY,
    dpi: float = DEFAULT_DPI,
) -> Path:
    """Each config's mean ``metric`` across its seeds with its 95 % interval as error bars
    (:func:`mlplab.report.replicate_rows`: best mean first), and the seeds' count."""
    fig = new_figure((max(5.0, 0.9 * len(reps) + 2.5), 4.2), dpi=dpi)
    ax = fig.add_subplot()
    stats = ("n_seeds", "n_failed", f"mean_{metric}", f"std_{metric}", "ci95_low", "ci95_high",
             "best_run_id")  # fmt: skip
    labels = [" ".join(f"{k}={v}" for k, v in r.items() if k not in stats) for r in reps]
    mean = np.array([r[f"mean_{metric}"] for r in reps], dtype=float)
    low = np.array([r["ci95_low"] for r in reps], dtype=float)
    high = np.array([r["ci95_high"] for r in reps], dtype=float)
    x = np.arange(len(reps))
    err = np.nan_to_num(np.vstack([mean - low, high - mean]))  # one seed: no interval
    ax.errorbar(x, mean, yerr=err, fmt="o", capsize=4, color="C0", label="mean, 95 % interval")
    for xi, r in zip(x, reps, strict=True):
        failed = f", {r['n_failed']} failed" if r["n_failed"] else ""
        # a config without a mean is annotated at the axis' foot
        where = ("data", mean[xi]) if r["n_seeds"] else (ax.get_xaxis_transform(), 0.02)
        ax.annotate(f"n={r['n_seeds']}{failed}", (xi, where[1]), xycoords=where[0],
                    xytext=(6, 4), textcoords="offset points", fontsize=7)  # fmt: skip
    ax.set_xticks(
        x, labels, rotation=30 if len(reps) > 3 else 0, ha="right" if len(reps) > 3 else "center"
    )
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{metric} across seeds, per config (best mean first)", fontsize=10)
    return save_figure(fig, path)

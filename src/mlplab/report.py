"""The report of a sweep or a study: pure functions from child records to a table and figures.

Nothing here talks to MLflow: :mod:`mlplab.sweep` collects one :class:`ChildRecord` per
child run and hands the list to :func:`summary_frame`, :func:`plot_curves`,
:func:`plot_params` and :func:`best_row`. Figures use the object-oriented Matplotlib API
on an Agg canvas (headless, nothing registered with pyplot).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a report is made: single runs never pay for it
    import pandas as pd

#: Final metrics copied into the summary, in this order (missing ones are left empty).
METRICS = (
    "test_rmse",
    "test_mae",
    "test_r2",
    "test_accuracy",
    "final_val_rmse",
    "final_train_rmse",
    "epochs_run",
    "train_seconds",
)
#: Metrics that are always columns of the summary, even when no child has them.
ALWAYS = ("test_rmse", "test_mae", "test_r2", "final_train_rmse", "epochs_run", "train_seconds")
#: The metric the table is sorted by and the best child is chosen by.
RANK_BY = "test_rmse"


@dataclass
class ChildRecord:
    """One child run, as the report needs it."""

    run_id: str
    run_name: str
    status: str
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    failure_reason: str = ""
    history: list[float] = field(default_factory=list)


def override_key(item: str) -> str:
    """``+model.hidden=[4]`` → ``model.hidden``."""
    return item.partition("=")[0].lstrip("+~")


def override_map(overrides: Sequence[str]) -> dict[str, str]:
    """Overrides as ``{key: value}`` (the last one wins, as in Hydra)."""
    return {override_key(item): item.partition("=")[2] for item in overrides}


def param_value(child: ChildRecord, key: str) -> str:
    """The value the child used for a swept key: from its overrides, else its params.

    A config-group override (``optimizer=adam``) has no param of its own; its ``name``
    param (``optimizer.name``) stands in for it when the overrides are not known.
    """
    given = override_map(child.overrides)
    if key in given:
        return given[key]
    for candidate in (key, f"{key}.name"):
        if candidate in child.params:
            return child.params[candidate]
    return ""


def summary_frame(children: Sequence[ChildRecord], param_keys: Sequence[str] = ()) -> pd.DataFrame:
    """One row per child: id, name, status, swept values, overrides, final metrics, reason.

    Sorted by test RMSE (children without one, e.g. failed ones, last).
    """
    present = [m for m in METRICS if m in ALWAYS or any(m in c.metrics for c in children)]
    rows = []
    for c in children:
        row: dict[str, Any] = {"run_id": c.run_id, "run_name": c.run_name, "status": c.status}
        for key in param_keys:
            row[key] = param_value(c, key)
        row["overrides"] = " ".join(c.overrides)
        for m in present:
            row[m] = c.metrics.get(m, math.nan)
        row["failure_reason"] = c.failure_reason
        rows.append(row)
    columns = ["run_id", "run_name", "status", *param_keys, "overrides", *present, "failure_reason"]
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    if len(frame):
        frame = frame.sort_values(RANK_BY, na_position="last", kind="stable")
        frame = frame.reset_index(drop=True)
    return frame


def best_row(frame: pd.DataFrame) -> pd.Series | None:
    """The FINISHED child with the lowest test RMSE, or None."""
    done = frame[(frame["status"] == "FINISHED") & frame[RANK_BY].notna()]
    if done.empty:
        return None
    return done.sort_values(RANK_BY, kind="stable").iloc[0]


def format_table(frame: pd.DataFrame, param_keys: Sequence[str] = ()) -> str:
    """The summary as a text table for the terminal (short ids, the main metrics)."""
    import pandas as pd

    if frame.empty:
        return "(no child runs)"
    show = frame.copy()
    show["run_id"] = show["run_id"].str[:8]
    show["failure_reason"] = show["failure_reason"].fillna("").str[:60]
    metrics = [
        m
        for m in (
            "test_rmse",
            "test_mae",
            "test_r2",
            "test_accuracy",
            "final_train_rmse",
            "epochs_run",
        )
        if m in show.columns
    ]
    cols = ["run_id", "run_name", "status", *metrics]
    if show["failure_reason"].astype(bool).any():
        cols.append("failure_reason")
    if "epochs_run" in show.columns:
        show["epochs_run"] = show["epochs_run"].map(lambda v: "" if pd.isna(v) else str(int(v)))

    def number(v: Any) -> str:
        return "" if pd.isna(v) else f"{v:.6g}"

    formats: dict[str, Callable[..., str]] = {m: number for m in metrics if m != "epochs_run"}
    return show[cols].to_string(index=False, formatters=formats)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path)
    finally:
        fig.clear()
    return path


def plot_curves(children: Sequence[ChildRecord], path: Path, title: str = "") -> Path:
    """Every child's train RMSE per epoch on one chart (log scale), labelled by run name."""
    import matplotlib

    fig = _figure(10, 6)
    ax = fig.add_subplot()
    drawn = 0
    with_history = sorted((c for c in children if c.history), key=lambda c: c.run_name)
    # distinct colours for up to 20 curves (tab10 repeats after 10), then a ramp
    n = len(with_history)
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    colours = [cmap(i if n <= 20 else i / max(1, n - 1)) for i in range(n)]
    for i, c in enumerate(with_history):
        y = np.asarray(c.history, dtype=float)
        label = c.run_name or c.run_id[:8]
        if c.status != "FINISHED":
            label += f" ({c.status})"
        ax.plot(
            np.arange(1, len(y) + 1),
            y,
            lw=1.2,
            label=label,
            ls="-" if c.status == "FINISHED" else "--",
            color=colours[i],
        )
        drawn += 1
    ax.set_xlabel("epoch")
    ax.set_ylabel("train RMSE")
    if drawn:
        ax.set_yscale("log")
        ax.legend(
            fontsize=7,
            ncol=1 if drawn <= 12 else 2,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
        )
    else:
        ax.text(0.5, 0.5, "no RMSE history", ha="center", va="center", transform=ax.transAxes)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or f"train RMSE of {drawn} runs")
    return _save(fig, path)


def _as_numbers(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def plot_params(
    frame: pd.DataFrame, param_keys: Sequence[str], path: Path, metric: str = RANK_BY
) -> Path:
    """Final ``metric`` against each swept parameter: one panel per parameter.

    A parameter with a few values is drawn as categories (numbers in numeric order); one
    with many numeric values (a tuned learning rate) on a numeric axis, logarithmic when
    they span a factor of 10 or more. Each point is a child; the grey line joins the
    medians. Children without the metric (failed ones) are counted in the panel title.
    """
    from matplotlib.ticker import NullFormatter

    keys = list(param_keys) or ["run_name"]
    fig = _figure(max(4.0, 3.6 * len(keys)), 3.8)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    ok = frame[frame[metric].notna()] if metric in frame.columns else frame.iloc[0:0]
    missing = len(frame) - len(ok)
    for ax, key in zip(axes, keys, strict=True):
        values = [str(v) for v in ok[key]] if key in ok.columns else []
        y = ok[metric].to_numpy(dtype=float) if len(ok) else np.array([])
        numbers = _as_numbers(values) if values else None
        levels = sorted(set(values), key=lambda s: (len(s), s))
        if numbers is not None and len(set(numbers)) > 8:
            x = np.asarray(numbers)
            ax.scatter(x, y, s=22, alpha=0.8)
            if x.min() > 0 and x.max() / x.min() >= 10:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            if numbers is not None:
                levels = sorted(set(values), key=float)
            pos = {c: i for i, c in enumerate(levels)}
            x = np.array([pos[v] for v in values], dtype=float)
            rng = np.random.default_rng(0)
            ax.scatter(x + rng.uniform(-0.12, 0.12, x.size), y, s=22, alpha=0.8)
            medians = [np.median(y[x == i]) for i in range(len(levels))]
            ax.plot(range(len(levels)), medians, lw=1, color="grey", marker="_", ms=14)
            ax.set_xticks(range(len(levels)), levels, rotation=30 if len(levels) > 4 else 0)
            ax.set_xlim(-0.5, len(levels) - 0.5)
        if y.size and np.all(y > 0):
            ax.set_yscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.set_title(key + (f"  ({missing} without {metric})" if missing else ""), fontsize=9)
    fig.suptitle(f"final {metric} against each swept parameter")
    return _save(fig, path)


def plot_objective(
    values: Sequence[float | None],
    path: Path,
    direction: str = "minimize",
    label: str = "objective",
) -> Path:
    """An Optuna study's objective per trial (failed trials left out) and its best so far."""
    fig = _figure(7, 4)
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
    return _save(fig, path)

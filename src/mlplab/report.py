"""The report of a sweep or a study: pure functions from child records to rows and a table.

Nothing here talks to MLflow or draws: :mod:`mlplab.sweep` collects one
:class:`ChildRecord` per child run, turns the list into summary rows with
:func:`summary_rows`, writes them with :func:`write_summary_csv`, prints them with
:func:`format_table` and picks the winner with :func:`best_row`. When a sweep crosses its
configs with seeds, :func:`replicate_rows` gives each config's mean, spread and 95 %
interval across its seeds, and the best config is the one with the best mean. The figures
of a report are in :mod:`mlplab.plots.sweep`. No pandas, no Matplotlib.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The inverse CDF of Student's t, as scipy.stats.t.ppf (the same numbers): scipy.special is
# loaded anyway (the sigmoid), and scipy.stats would add about a second to every job's start
from scipy.special import stdtrit

from mlplab.config import override_key

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
#: The metrics :func:`format_table` shows, when they are columns of the summary.
TABLE_METRICS = (
    "test_rmse",
    "test_mae",
    "test_r2",
    "test_accuracy",
    "final_train_rmse",
    "epochs_run",
)
#: Failure reasons are cut to this many characters in the table.
TABLE_REASON_WIDTH = 60


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
    steps: list[int] = field(default_factory=list)  # the history's epochs (default 1, 2, ...)


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


def _rank(row: dict[str, Any]) -> tuple[bool, float]:
    """Sort key: NaN test RMSEs after all others (which sort by value, ``inf`` included)."""
    value = row[RANK_BY]
    return (True, 0.0) if math.isnan(value) else (False, value)


def summary_rows(
    children: Sequence[ChildRecord], param_keys: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """One row per child: id, name, status, swept values, overrides, final metrics, reason.

    Every row has the same keys, in column order: ``run_id``, ``run_name``, ``status``,
    each of ``param_keys`` (the value as a string, see :func:`param_value`), ``overrides``
    (joined by spaces), the metrics of :data:`METRICS` that are in :data:`ALWAYS` or that
    some child has (NaN where a child lacks one), ``failure_reason``. Rows are sorted by
    test RMSE, ascending; rows whose test RMSE is NaN (failed children, mostly) come last,
    and ties keep the order of ``children``.
    """
    present = [m for m in METRICS if m in ALWAYS or any(m in c.metrics for c in children)]
    rows = []
    for c in children:
        row: dict[str, Any] = {"run_id": c.run_id, "run_name": c.run_name, "status": c.status}
        for key in param_keys:
            row[key] = param_value(c, key)
        row["overrides"] = " ".join(c.overrides)
        for m in present:
            row[m] = float(c.metrics.get(m, math.nan))
        row["failure_reason"] = c.failure_reason
        rows.append(row)
    rows.sort(key=_rank)
    return rows


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The FINISHED row with the lowest finite test RMSE (the first of equals), or None."""
    done = [r for r in rows if r["status"] == "FINISHED" and math.isfinite(r[RANK_BY])]
    return min(done, key=lambda r: r[RANK_BY], default=None)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.17g}"
    return value


def write_summary_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write ``rows`` to ``path`` as CSV (creating parent folders); return the path.

    The header is the columns in row order (without rows: the columns a sweep without
    swept keys would have). Floats are written with 17 significant digits, which reads
    back as the same float; NaN is an empty cell.
    """
    if rows:
        columns = list(rows[0])
    else:
        metrics = [m for m in METRICS if m in ALWAYS]
        columns = ["run_id", "run_name", "status", "overrides", *metrics, "failure_reason"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row[c]) for c in columns])
    return path


def _table_cell(column: str, value: Any) -> str:
    if column == "run_id":
        return str(value)[:8]
    if column == "failure_reason":
        return str(value)[:TABLE_REASON_WIDTH]
    if column == "epochs_run":
        return "" if math.isnan(value) else str(int(value))
    if column in TABLE_METRICS:
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a text table for the terminal (short ids, the main metrics).

    Columns: the first 8 characters of the run id, the run name, the status, the metrics
    of :data:`TABLE_METRICS` that are columns of the rows (6 significant digits, NaN when
    missing; ``epochs_run`` as an integer, blank when missing), and the failure reason cut
    to :data:`TABLE_REASON_WIDTH` characters when some row has one. Every column is
    right-aligned under its name (the swept values are in the run names).
    """
    if not rows:
        return "(no child runs)"
    metrics = [m for m in TABLE_METRICS if m in rows[0]]
    columns = ["run_id", "run_name", "status", *metrics]
    if any(r["failure_reason"] for r in rows):
        columns.append("failure_reason")
    cells = [[_table_cell(c, r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join(
        " ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


#: The swept key whose values are replicates of one config (seeds as replicates).
SEED_KEY = "seed"


def replicate_rows(
    rows: Sequence[dict[str, Any]], param_keys: Sequence[str], metric: str = RANK_BY
) -> list[dict[str, Any]]:
    """Each config's ``metric`` across its seeds: n, mean, std, 95 % interval, best run, and
    how many of its runs do not count (``n_failed``).

    A config is one combination of the swept keys other than ``seed``; only FINISHED runs
    with a finite metric count. The interval is Student's t (n − 1 degrees of freedom); with
    one seed std and the interval are NaN, and a config none of whose runs counts keeps its
    row with n = 0 (its mean NaN, listed last). Sorted by mean, best first. Empty unless the
    sweep crosses ``seed`` with at least one other swept key.
    """
    keys = [k for k in param_keys if k != SEED_KEY]
    if SEED_KEY not in param_keys or not keys:
        return []
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row[k]) for k in keys), []).append(row)
    out = [
        {**dict(zip(keys, config, strict=True)), **_across_seeds(runs, metric)}
        for config, runs in groups.items()
    ]
    return sorted(out, key=lambda r: (r["n_seeds"] == 0, r[f"mean_{metric}"]))


def _finite(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _across_seeds(runs: Sequence[dict[str, Any]], metric: str) -> dict[str, Any]:
    """One config's statistics across its runs (:func:`replicate_rows`)."""
    counted = [r for r in runs if r["status"] == "FINISHED" and _finite(r.get(metric))]
    values = [float(r[metric]) for r in counted]
    n = len(values)
    mean = math.fsum(values) / n if n else math.nan
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    half = stdtrit(n - 1, 0.975) * std / math.sqrt(n) if n > 1 else math.nan
    return {
        "n_seeds": n,
        "n_failed": len(runs) - n,
        f"mean_{metric}": mean,
        f"std_{metric}": std,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "best_run_id": min(counted, key=lambda r: float(r[metric]))["run_id"] if counted else "",
    }


def format_replicates(reps: Sequence[dict[str, Any]], metric: str = RANK_BY) -> str:
    """The configs' means across seeds as a text table, best first."""
    if not reps:
        return ""
    stats = ["n_seeds", "n_failed", f"mean_{metric}", f"std_{metric}", "ci95_low", "ci95_high"]
    keys = [k for k in reps[0] if k not in (*stats, "best_run_id")]
    columns = [*keys, *stats]
    cells = [
        [f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in reps
    ]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    return "\n".join(
        " ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [columns, *cells]
    )

"""The study in MLflow: its parent run (one across sessions), its best trial, its report.

Every trial is a child of one parent run per study. The parent's id is kept in the study's
user attributes, so a resumed study reopens the same parent (RUNNING and guarded again:
if the coordinator dies, the tracking helper closes it KILLED). At the end of a session the
parent gets the report of a sweep (``summary.csv``, the figures, the best child) plus the
study's own: ``plots/tune_history.png`` (the objective per trial), ``best_params``,
``best_overrides``, a ``best.<key>`` tag per best value and the ``best_value`` metric.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from mlplab import plots
from mlplab.sweep import Parent, collect_children, publish_report, reopen_parent, start_parent
from mlplab.tune.space import ParamSpec, TuneSettings


@dataclass
class BestTrial:
    """The best completed trial, as ``make tune`` prints it."""

    number: int
    value: float
    metric: str
    overrides: list[str]
    params: dict[str, Any]
    run_id: str | None


def best_trial(study: optuna.Study) -> BestTrial | None:
    """The best COMPLETE trial, or None if no trial completed."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    assert best.value is not None
    return BestTrial(
        number=best.number,
        value=float(best.value),
        metric=str(best.user_attrs.get("metric", "objective")),
        overrides=[str(o) for o in best.user_attrs.get("overrides", [])],
        params=dict(best.params),
        run_id=best.user_attrs.get("mlflow_run_id"),
    )


def open_parent(
    study: optuna.Study,
    settings: TuneSettings,
    specs: Sequence[ParamSpec],
    uri: str,
    experiment: str,
    overrides: Sequence[str],
) -> Parent:
    """The study's parent run: the one of an earlier session (reopened), else a new one
    (``overrides``: those every trial runs with, the study's then the command line's)."""
    previous = study.user_attrs.get("mlflow_parent_run_id")
    if previous and study.user_attrs.get("mlflow_tracking_uri") == uri:
        parent = reopen_parent(uri, str(previous))
        if parent is not None:
            return parent
    keys = ", ".join(s.key for s in specs)
    tags = {
        "optuna_study": settings.study_name,
        "mlplab_role": "tune",
        "sweep_keys": ",".join(s.key for s in specs),
        "tune_space": json.dumps(settings.space),
        "tune_overrides": " ".join(overrides),
        "mlflow.note.content": (
            f"Optuna study `{settings.study_name}`: {settings.direction} "
            f"{settings.metric or 'test RMSE (validation RMSE if any)'} over {keys}. "
            "Each child is a trial."
        ),
    }
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    parent = start_parent(uri, experiment, f"tune {settings.study_name} {stamp}", tags, {})
    study.set_user_attr("mlflow_parent_run_id", parent.run_id)
    study.set_user_attr("mlflow_tracking_uri", uri)
    return parent


def best_tags(best: BestTrial) -> dict[str, str]:
    """The parent's tags for the best trial: its number, parameters, overrides, run."""
    tags = {
        "best_trial": str(best.number),
        "best_params": json.dumps(best.params),
        "best_overrides": " ".join(best.overrides),
        **{f"best.{o.partition('=')[0]}": o.partition("=")[2] for o in best.overrides},
    }
    if best.run_id:
        tags["best_trial_run_id"] = best.run_id
    return tags


def publish(
    study: optuna.Study,
    settings: TuneSettings,
    specs: Sequence[ParamSpec],
    parent: Parent,
    storage: str,
    best: BestTrial | None,
) -> None:
    """The study's report on its parent run (see the module doc)."""
    out_dir = Path(settings.out_dir) / settings.study_name / "report"
    trials = study.get_trials(deepcopy=False)
    plots.plot_objective(
        [t.value for t in trials],
        out_dir / "plots" / "tune_history.png",
        settings.direction,
        best.metric if best else (settings.metric or "objective"),
    )
    children = collect_children(parent.store, parent.run_id, close_orphans=False)
    title = f"study {settings.study_name}: train RMSE per epoch"
    keys = [s.key for s in specs]
    chosen = best.run_id if best else None  # on the study's objective, not the test RMSE
    publish_report(parent.store, parent.run_id, children, keys, out_dir, title, chosen)
    tags = {"tune_n_trials": str(settings.n_trials), "tune_storage": storage}
    parent.store.log_metrics(parent.run_id, {"n_trials": float(len(trials))})
    if best is not None:
        tags.update(best_tags(best))
        parent.store.log_metrics(parent.run_id, {"best_value": best.value}, step=len(trials))
    parent.store.set_tags(parent.run_id, tags)

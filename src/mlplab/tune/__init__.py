"""Hyperparameter search with Optuna: resumable, parallel, every trial an MLflow child run.

``make tune`` (``pipelines/tune.py``) reads a study description from
``conf/tune/<name>.yaml`` and runs it with :func:`run_study`. Why not
hydra-optuna-sweeper: version 1.3.0 pins ``optuna<3``, whose persistent storage fails with
SQLAlchemy 2 (which MLflow needs), so studies could not be resumed. Here Optuna (current
releases, public API only) is used directly:

* **Resumable.** The study lives in persistent storage beside the MLflow store under a
  fixed ``study_name``. ``n_trials`` is the study's *total*: running the same command again
  after Ctrl-C runs only the missing trials; raising ``tune.n_trials`` continues a
  finished study. Trials cut short are failed and run again; trials whose run failed count.
* **Parallel.** ``n_jobs`` worker processes ask the shared storage for trials.
* **Recorded.** Each trial runs :func:`mlplab.pipeline.run` as a child of one MLflow
  parent run per study (the same across sessions), which gets the report at the end.

The package: :mod:`~mlplab.tune.space` (settings and search space),
:mod:`~mlplab.tune.study` (storage, counting, stale trials, workers, one trial),
:mod:`~mlplab.tune.report` (the parent run, the best trial, the report) and, here, the
coordinator. Its modules import Optuna at their top; ``pipelines/tune.py`` imports this
package only once it has a study to run (see there why).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna

from mlplab.config import override_key, user_overrides
from mlplab.project import conf_dir
from mlplab.sweep import Parent
from mlplab.tracking import open_store
from mlplab.tracking.uris import check_store
from mlplab.tune.report import BestTrial, best_trial, open_parent, publish
from mlplab.tune.space import TuneSettings, load_settings, parse_space
from mlplab.tune.study import (
    WorkerJob,
    check_config,
    check_objective,
    check_same_search,
    counted_trials,
    fail_stale_trials,
    open_study,
    run_workers,
    storage_spec,
    worker_loop,
)

__all__ = ["StudyOutcome", "TuneSettings", "load_settings", "run_study"]

log = logging.getLogger("mlplab")


@dataclass
class StudyOutcome:
    """What ``make tune`` reports."""

    study_name: str
    storage: str
    parent_run_id: str | None
    n_trials: int
    best: BestTrial | None
    status: str
    #: the overrides that run the best trial alone (``make run ARGS=...``)
    run_alone: list[str]


def alone_overrides(fixed: Sequence[str], best: BestTrial | None) -> list[str]:
    """The overrides that run the best trial alone: one per key (the last value wins, as in
    Hydra), without the tracking ones."""
    if best is None:
        return []
    last = {override_key(o): o for o in [*fixed, *best.overrides]}
    return user_overrides(last.values())


def run_trials(study: optuna.Study, job: WorkerJob, parent: Parent | None) -> str:
    """Run the missing trials (here, or in worker processes); FINISHED or FAILED."""
    settings = job.settings
    done = counted_trials(study)
    remaining = max(0, settings.n_trials - done)
    n_jobs = (os.cpu_count() or 1) if settings.n_jobs == -1 else settings.n_jobs
    n_jobs = min(n_jobs, remaining)
    print(
        f"study {settings.study_name!r} in {job.storage}: {done} of {settings.n_trials} "
        f"trials done, {remaining} to run in {n_jobs} process(es)"
        + (f"; MLflow parent run {parent.run_id} ({job.tracking_uri})" if parent else ""),
        flush=True,
    )
    if n_jobs == 1:
        worker_loop(job, contextlib.nullcontext())
    elif n_jobs > 1:
        codes = run_workers(job, n_jobs)
        if 130 in codes:
            raise KeyboardInterrupt
        if any(code != 0 for code in codes):
            log.error("tune worker(s) ended with exit status %s", codes)
            return "FAILED"
    return "FINISHED"


def run_study(
    settings: TuneSettings, run_overrides: Sequence[str], conf: Path | None = None
) -> StudyOutcome:
    """Create or resume the study, run the missing trials in parallel, report the best."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    conf = conf or conf_dir()
    specs = parse_space(settings.space)
    fixed = [*settings.overrides, *run_overrides]
    base = check_config(fixed, specs, conf)
    check_objective(settings, base)
    uri = base.tracking.uri if base.tracking.enabled else None
    if uri:  # a single run's message, not MLflow's
        check_store(uri, base.tracking.timeout, base.tracking.retries)
    storage = storage_spec(settings, uri)
    study = open_study(settings, storage)
    check_same_search(study, settings, fixed)
    store = open_store(uri) if uri else None
    stale = fail_stale_trials(study, store)
    if stale:
        print(f"{stale} trial(s) of an interrupted session will be run again", flush=True)
    parent = (
        open_parent(study, settings, specs, uri, base.tracking.experiment, fixed) if uri else None
    )
    job = WorkerJob(
        settings,
        fixed,
        storage,
        str(conf),
        tracking_uri=uri,
        parent_run_id=parent.run_id if parent else None,
        session=len(study.get_trials(deepcopy=False)),
    )
    try:
        status = run_trials(study, job, parent)
        fail_stale_trials(study, store)  # the trials of a worker that died
        best = best_trial(study)
        if parent is not None:
            try:
                publish(study, settings, specs, parent, storage, best)
            except Exception:
                log.exception("could not write the study report")
                status = "FAILED"
    except BaseException as exc:
        if parent is not None:
            with contextlib.suppress(Exception):  # the exception matters more
                parent.close("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    status = status if best is not None else "FAILED"
    if parent is not None:
        parent.close(status)
    return StudyOutcome(
        settings.study_name,
        storage,
        job.parent_run_id,
        counted_trials(study),
        best,
        status,
        alone_overrides(fixed, best),
    )

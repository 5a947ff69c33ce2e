"""Sweeps at the cost of one run: a multirun's jobs trained together, as populations.

The ``population`` launcher (:mod:`hydra_plugins.mlplab_population`) prepares every job of a
multirun in Hydra's job context (:func:`prepare_job`: its output folder, its typed config,
data and initial weights; nothing trained, no run opened), then :func:`run_jobs` groups the
jobs whose networks stack (:func:`mlplab.build.stack_key`: same layer sizes, activations,
loss, dtype, batch size, task, data shape and update rule) and runs each group as one
population (:func:`mlplab.pipeline.run_group`): one stacked computation, every member a run
of its own, written from this process through the tracking helper. Jobs that stack with no
other are groups of one. A member's weights are bit-identical to the same config run alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from omegaconf import DictConfig

from mlplab import build
from mlplab.config import hydra_job_context
from mlplab.errors import UserError
from mlplab.pipeline import Job, RunOutcome, configure, prepare, record_refusal, run_group
from mlplab.tracking import make_sink

log = logging.getLogger("mlplab")


def prepare_job(cfg: DictConfig) -> Job | None:
    """Hydra's task function of the first phase: the job ready to train (None if refused).

    A job refused by validation is reported and, in a tracked sweep, recorded as a FAILED
    child; the sweep goes on.
    """
    overrides, out_dir, _ = hydra_job_context()
    try:
        typed = configure(cfg)
    except UserError as exc:
        log.error("job %s: %s", " ".join(overrides), exc)
        return None
    try:
        return prepare(typed, out_dir, overrides)
    except UserError as exc:
        log.error("job %s: %s", " ".join(overrides), exc)
        record_refusal(typed, overrides, str(exc))
        return None


def groups(jobs: Sequence[Job]) -> list[list[int]]:
    """The indices of the jobs whose networks stack, group by group, in order of first job."""
    by_key: dict[tuple[object, ...], list[int]] = {}
    for i, job in enumerate(jobs):
        d = job.data
        key = build.stack_key(job.cfg, d.n_features, d.n_outputs, len(d.X_train), len(d.X_val))
        by_key.setdefault(key, []).append(i)
    return list(by_key.values())


def run_jobs(jobs: Sequence[Job], pool: ProcessPoolExecutor | None = None) -> list[RunOutcome]:
    """Run the prepared jobs, a population per group; the outcomes in the jobs' order (the
    figures drawn by ``pool``'s workers: :func:`mlplab.pipeline.population_workers`).

    An interrupt ends the members of the population in training KILLED (each with its
    history so far) and then stops the sweep: the groups not started yet have no runs.
    """
    outcomes: dict[int, RunOutcome] = {}
    for members in groups(jobs):
        group = [jobs[i] for i in members]
        sinks = [make_sink(job.cfg.tracking, in_helper=True) for job in group]
        log.info("training %d network(s) as one population", len(group))
        ran = run_group(group, sinks, progress=False, pool=pool)
        for i, outcome in zip(members, ran, strict=True):
            outcomes[i] = outcome
            print(outcome.describe(brief=True), flush=True)
        if any(outcomes[i].status == "KILLED" for i in members):
            raise KeyboardInterrupt("the sweep was interrupted")
    return [outcomes[i] for i in range(len(jobs))]

"""The study and its workers: storage, sampler, which trials count, stale trials, one trial.

Only Optuna's public API is used: ``create_study``/``load_study``, ``ask``, ``tell`` (with
the trial, or with a trial *number* for a trial of another process), user attributes and
``get_trials``.

* **Storage.** ``optuna.journal`` beside ``mlflow.db`` (a journal file), or any Optuna RDB
  URL; the study is loaded by name, so a second session resumes it.
* **Which trials count.** ``n_trials`` is the study's total. COMPLETE, PRUNED and RUNNING
  trials count, and so do FAIL trials that carry a ``failure_reason`` attribute: their run
  failed (diverged, refused, crashed), and would fail again. A FAIL trial without one was
  cut short (Ctrl-C, SIGTERM, a process that died) and is run again.
* **Stale trials, without a heartbeat.** Optuna's heartbeat (``RDBStorage(heartbeat_interval=
  ...)``) is recorded by a thread that only ``Study.optimize`` starts: trials from
  ``Study.ask`` never get one (Optuna warns so), and the journal storage has none at all.
  Our workers use ask/tell, because "count the trials, then ask for one" must happen under
  one lock for ``n_trials`` to stay the study's total; so the heartbeat is not used.
  Instead a worker notes its host and pid on each trial as it asks for it, and every
  session, when it starts and when its workers have ended, fails the RUNNING trials whose
  process is gone from this host (:func:`fail_stale_trials`) and closes their MLflow runs
  KILLED. A trial whose process died before noting its pid is failed after
  :data:`UNCLAIMED_SECONDS`. Limitation: a trial whose process died on *another* host (a
  shared RDB storage) stays RUNNING, and counts, until a session runs on that host.
* **Workers.** ``n_jobs`` processes (spawned: training holds the GIL, and a fork would
  inherit MLflow's and SQLite's connections) each ask for trials until the study has
  ``n_trials``. They ignore SIGINT: on Ctrl-C the coordinator sends each one SIGTERM, once,
  which interrupts its trial (the run ends KILLED, the trial FAIL without a reason, to be
  run again); ``n_jobs=1`` runs the trials in the coordinator itself.
* **One trial** composes its config with Hydra's compose API (the same ``conf/`` as
  ``make run``, the fixed overrides, then the sampled values) and runs
  :func:`mlplab.pipeline.run` as a child run of the study's parent. A run whose training
  finished is a COMPLETE trial even if the store failed on the way (its record went to the
  fallback folder, named in a warning and in the trial's ``fallback_folder`` attribute).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from mlplab.config import Config, override_key, register_configs, schema_error, validate
from mlplab.errors import UserError
from mlplab.interrupts import sigterm_interrupts
from mlplab.pipeline import RunOutcome, check_inputs, configure, run
from mlplab.project import repo_root
from mlplab.tracking import Sink, make_sink
from mlplab.tracking.sink import Relay
from mlplab.tune.space import (
    ParamSpec,
    TuneSettings,
    parse_space,
    probe_values,
    short_name,
    suggest,
)

if TYPE_CHECKING:  # the store's module imports MLflow; tracking.open_store loads it on use
    from mlplab.tracking.mlflow_store import RunStore

log = logging.getLogger("mlplab")

#: A RUNNING trial without a pid this old was abandoned between ``ask`` and noting its pid.
UNCLAIMED_SECONDS = 300
#: How long a worker waits for the others before its first trial.
START_TIMEOUT = 120
KILLED_REASON = "killed: the trial's process ended without closing this run"


# -- storage, sampler, counting ----------------------------------------------------------------
def storage_spec(settings: TuneSettings, mlflow_uri: str | None) -> str:
    """Where the study lives: the setting, else ``optuna.journal`` beside the SQLite store."""
    if settings.storage:
        return settings.storage
    if mlflow_uri and mlflow_uri.startswith("sqlite:///"):
        folder = Path(mlflow_uri[len("sqlite:///") :]).parent
    else:
        folder = repo_root()
    return str(folder / "optuna.journal")


def open_storage(spec: str) -> BaseStorage:
    """An Optuna storage: a journal file for a path, an RDB storage for a URL."""
    if "://" not in spec:
        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(spec))
    return RDBStorage(spec)


def make_sampler(
    settings: TuneSettings, worker: int = 0, session: int = 0
) -> optuna.samplers.BaseSampler:
    """TPE (with the constant liar, for parallel workers) or random.

    Each worker of each session (``session`` = trials in the study when it started) gets
    its own seed derived from ``sampler_seed``: a resumed study does not draw again the
    points it has already tried.
    """
    seed = None
    if settings.sampler_seed is not None:
        entropy = [settings.sampler_seed, session, worker]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def open_study(settings: TuneSettings, storage: str) -> optuna.Study:
    """Create the study, or load it if it exists (a resumed session)."""
    try:
        return optuna.create_study(
            study_name=settings.study_name,
            storage=open_storage(storage),
            direction="maximize" if settings.direction == "maximize" else "minimize",
            sampler=make_sampler(settings),
            load_if_exists=True,
        )
    except Exception as exc:
        raise UserError(f"tune.storage={storage!r}, study {settings.study_name!r}: {exc}") from None


#: Config groups whose overrides change where and how a trial is recorded, not its numbers.
NO_EFFECT = ("tracking", "hydra", "plot", "trace")


def check_same_search(study: optuna.Study, settings: TuneSettings, fixed: Sequence[str]) -> None:
    """Refuse to add trials of another search to a study: its run overrides and objective
    are noted on the study when it is created (a study of an earlier release gets them now).

    The study is found by name only, so without this ``make tune ARGS="data=sine"`` after
    ``make tune`` would report the tutorial study's best without running a trial, and
    extending it would mix sine trials into it. Overrides of :data:`NO_EFFECT` groups may
    change from one session to the next.
    """
    search = {
        "run_overrides": [o for o in fixed if override_key(o).split(".")[0] not in NO_EFFECT],
        "objective": f"{settings.direction} {settings.metric or 'default metric'}",
    }
    noted = {k: study.user_attrs[k] for k in search if k in study.user_attrs}
    if not noted:
        for key, value in search.items():
            study.set_user_attr(key, value)
        return
    differs = [k for k in search if noted.get(k) != search[k]]

    def shown(values: dict[str, Any]) -> str:
        return "; ".join(
            f"{k.replace('_', ' ')}: {' '.join(v) if isinstance(v, list) else v}"
            for k, v in values.items()
            if k in differs
        )

    if differs:
        was, now = shown(noted), shown(search)
        raise UserError(
            f"study {settings.study_name!r} is another search ({was}), not this one ({now}): "
            "its trials would mix with this one's. Name a new study (tune.study_name=...) "
            "or repeat its settings"
        )


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: done, running, or failed by their run."""
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        or (t.state == TrialState.FAIL and "failure_reason" in t.user_attrs)
        for t in study.get_trials(deepcopy=False)
    )


# -- stale trials ----------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_stale(trial: optuna.trial.FrozenTrial, host: str, now: datetime) -> bool:
    """A RUNNING trial whose process is gone from this host (or that never claimed one)."""
    pid = trial.user_attrs.get("pid")
    if pid is None:
        started = trial.datetime_start
        return started is not None and (now - started).total_seconds() >= UNCLAIMED_SECONDS
    return trial.user_attrs.get("host") == host and isinstance(pid, int) and not pid_alive(pid)


def fail_stale_trials(study: optuna.Study, store: RunStore | None) -> int:
    """FAIL the stale RUNNING trials (to be run again), close their runs KILLED; how many."""
    host, now = socket.gethostname(), datetime.now()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t, host, now):
            continue
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        failed += 1
        run_id = t.user_attrs.get("mlflow_run_id")
        if store is not None and run_id:
            try:
                store.close_if_running(run_id, "KILLED", KILLED_REASON)
            except Exception as exc:  # the trial is failed all the same
                log.warning("could not close run %s of trial %d: %s", run_id, t.number, exc)
    return failed


# -- composing configs -----------------------------------------------------------------------
@contextlib.contextmanager
def composing(conf: Path) -> Iterator[None]:
    """Hydra's compose API on ``conf`` (the same config folder as ``make run``)."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        yield


def compose_error(exc: Exception, overrides: Sequence[str]) -> UserError:
    """One line for a composition Hydra refused (the key and what is allowed, when known)."""
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException):
        return schema_error(cause)
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(lines) > 1 and lines[1].startswith("Available options"):
        text += f" ({lines[1]} {', '.join(lines[2:]).partition(', Config search path')[0]})"
    return UserError(f"overrides {' '.join(overrides)}: {text}")


def check_config(overrides: Sequence[str], specs: Sequence[ParamSpec], conf: Path) -> Config:
    """Compose and check one point of the space now (its values, its data file), so a bad
    override or file fails at once, before the study and its parent run exist.
    An override of a searched key is refused: every trial would replace it."""
    searched = {spec.key for spec in specs}
    for item in overrides:
        if override_key(item) in searched:
            raise UserError(
                f"{item}: {override_key(item)} is searched (tune.space), so each trial sets "
                "its own value: drop the override, or the key from the space"
            )
    probe = [*overrides, *(f"{k}={v}" for k, v in probe_values(specs).items())]
    try:
        with composing(conf):
            cfg = configure(compose(config_name="config", overrides=probe))
    except (HydraException, OmegaConfBaseException) as exc:
        raise compose_error(exc, probe) from None
    # a data file every trial reads, unless the search chooses it; not an init_file, whose
    # fit depends on the topology the trial draws (trials that do not fit fail on their own)
    if any(key.split(".")[0] == "data" for key in searched):
        validate(cfg)
    else:
        check_inputs(cfg, weights=False)
    return cfg


# -- one trial -------------------------------------------------------------------------------
@dataclass
class WorkerJob:
    """What a worker needs (picklable: it crosses to a spawned process)."""

    settings: TuneSettings
    run_overrides: list[str]
    storage: str
    conf_dir: str
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    index: int = 0
    session: int = 0


class TrialSink(Relay):
    """A run's sink that notes the run's id on the trial as soon as the run exists."""

    def __init__(self, inner: Sink, trial: optuna.Trial) -> None:
        super().__init__(inner)
        self.trial = trial

    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        """Open the run, then note its id (a stale trial's run is closed by that id)."""
        self.inner.start(params, tags, run_name)
        if self.inner.run_id is not None:
            self.trial.set_user_attr("mlflow_run_id", self.inner.run_id)


def run_pipeline(
    trial: optuna.Trial, job: WorkerJob, overrides: list[str], name: str
) -> RunOutcome:
    """Compose the trial's config and run it as a child of the study's parent run."""
    cfg = configure(compose(config_name="config", overrides=overrides))
    if job.tracking_uri:
        cfg.tracking.uri = job.tracking_uri
    cfg.tracking.parent_run_id = job.parent_run_id
    cfg.tracking.run_name = name
    study_name = job.settings.study_name
    return run(
        cfg,
        Path(job.settings.out_dir) / study_name / f"trial-{trial.number:04d}",
        overrides,
        sink=TrialSink(make_sink(cfg.tracking), trial),
        extra_tags={"optuna_study": study_name, "optuna_trial": str(trial.number)},
        progress=False,
    )


def check_objective(settings: TuneSettings, cfg: Config) -> None:
    """Refuse an objective no trial can report: a test metric without a test set, a
    validation metric without a validation set."""
    val = cfg.data.val_fraction > 0
    name = objective(settings, val)
    for prefix, key, present in (
        ("test_", "data.test_fraction", cfg.data.test_fraction > 0),
        ("final_val_", "data.val_fraction", val),
    ):
        if name.startswith(prefix) and not present:
            raise UserError(
                f"{key}=0 leaves no split for the objective {name}: give {key} > 0, or "
                "another tune.metric"
            )


def fail_trial(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """FAIL a trial whose run failed: it counts (running it again would fail again)."""
    trial.set_user_attr("failure_reason", reason[:1000])
    study.tell(trial, state=TrialState.FAIL)


def metric_of(settings: TuneSettings, metrics: dict[str, float]) -> tuple[str, float]:
    """The objective's name and value in a trial's metrics."""
    name = objective(settings, "final_val_rmse" in metrics)
    return name, float(metrics.get(name, math.nan))


def objective(settings: TuneSettings, validation: bool) -> str:
    """``tune.metric``, else the validation RMSE if there is a validation split, else the
    test RMSE."""
    return settings.metric or ("final_val_rmse" if validation else "test_rmse")


def tell_outcome(
    study: optuna.Study, trial: optuna.Trial, name: str, settings: TuneSettings, outcome: RunOutcome
) -> None:
    """Tell Optuna how the trial's run ended. An interrupted run stops the worker."""
    if outcome.status == "KILLED":
        study.tell(trial, state=TrialState.FAIL)  # no failure_reason: it runs again
        raise KeyboardInterrupt(f"{name} was interrupted")
    if outcome.status != "FINISHED":
        fail_trial(study, trial, outcome.failure or f"the run ended {outcome.status}")
        log.warning("%s failed: %s", name, outcome.failure)
        return
    metric, value = metric_of(settings, outcome.metrics)
    trial.set_user_attr("metric", metric)
    if outcome.fallback is not None:  # training finished: the trial counts, its record is safe
        trial.set_user_attr("fallback_folder", str(outcome.fallback))
        log.warning("%s: %s", name, outcome.recorder.notice)
    if not math.isfinite(value):
        fail_trial(study, trial, f"{metric} is {value}")
        log.warning("%s failed: %s is %s", name, metric, value)
        return
    study.tell(trial, value)
    print(f"{name}: {metric}={value:.6g}", flush=True)


def run_trial(
    study: optuna.Study, trial: optuna.Trial, specs: Sequence[ParamSpec], job: WorkerJob
) -> None:
    """Sample the trial's values, run them, tell Optuna (inside :func:`composing`)."""
    values = suggest(trial, specs)
    sampled = [f"{k}={v}" for k, v in values.items()]
    trial.set_user_attr("overrides", sampled)
    name = f"trial {trial.number}: {short_name(values)}"
    try:
        outcome = run_pipeline(trial, job, [*job.run_overrides, *sampled], name)
    except KeyboardInterrupt:
        study.tell(trial, state=TrialState.FAIL)  # no failure_reason: it runs again
        raise
    except UserError as exc:
        fail_trial(study, trial, str(exc))
        log.warning("%s failed: %s", name, exc)
        return
    except Exception as exc:
        # A failure of the machinery, not of the run. It counts as a trial: retrying it
        # would loop for ever on a bug that fails every trial.
        fail_trial(study, trial, f"{type(exc).__name__}: {exc}")
        log.exception("%s crashed", name)
        return
    tell_outcome(study, trial, name, job.settings, outcome)


# -- workers ---------------------------------------------------------------------------------
def next_trial(
    study: optuna.Study, n_trials: int, lock: contextlib.AbstractContextManager[Any]
) -> optuna.Trial | None:
    """A new trial claimed by this process, or None once the study has ``n_trials``."""
    with lock:  # count and ask as one step, across the workers
        if counted_trials(study) >= n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        return trial


def worker_loop(
    job: WorkerJob,
    lock: contextlib.AbstractContextManager[Any],
    barrier: threading.Barrier | None = None,
) -> None:
    """Ask the shared study for trials and run them until it has ``n_trials``.

    ``barrier``: wait for the other workers first, so that no worker takes every trial of
    a short study while the others are still starting.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    specs = parse_space(job.settings.space)
    study = optuna.load_study(
        study_name=job.settings.study_name,
        storage=open_storage(job.storage),
        sampler=make_sampler(job.settings, job.index, job.session),
    )
    with composing(Path(job.conf_dir)):
        if barrier is not None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(START_TIMEOUT)
        while (trial := next_trial(study, job.settings.n_trials, lock)) is not None:
            run_trial(study, trial, specs, job)


def worker_process(
    job: WorkerJob, lock: contextlib.AbstractContextManager[Any], barrier: threading.Barrier
) -> None:
    """Entry point of a worker process (see the module doc for its signals)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    sigterm_interrupts()
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(message)s")
    try:
        worker_loop(job, lock, barrier)
    except KeyboardInterrupt:
        sys.exit(130)


def run_workers(job: WorkerJob, n: int) -> list[int | None]:
    """``n`` worker processes until the study is complete; their exit codes.

    On an interrupt (Ctrl-C, SIGTERM) each worker still running gets one SIGTERM, which
    closes its trial; one that is not gone after a minute is killed.
    """
    ctx = mp.get_context("spawn")
    lock, barrier = ctx.Lock(), ctx.Barrier(n)
    procs = [
        ctx.Process(
            target=worker_process,
            args=(dataclasses.replace(job, index=i), lock, barrier),
            name=f"tune-worker-{i}",
        )
        for i in range(n)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)  # once: the worker closes its trial
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()
    return [p.exitcode for p in procs]

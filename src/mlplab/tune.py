"""Hyperparameter search with Optuna: resumable, parallel, every trial an MLflow child run.

``make tune`` (``pipelines/tune.py``) reads a study description from ``conf/tune/<name>.yaml``
(:class:`TuneSettings`): the study's name and storage, the number of trials, the number
of worker processes and the search space. Why not hydra-optuna-sweeper: version 1.3.0
pins ``optuna<3``, whose persistent storage fails with SQLAlchemy 2 (which MLflow
needs), so studies could not be resumed. Here Optuna (current releases) is used directly:

* **Resumable.** The study lives in persistent storage beside the MLflow store (by
  default ``optuna.journal`` next to ``mlflow.db``; any Optuna RDB URL works too) under a
  fixed ``study_name``, loaded with ``load_if_exists``. ``n_trials`` is the study's
  *total*: running the same command again after Ctrl-C runs only the missing trials;
  raising ``tune.n_trials`` continues a finished study. Trials cut short by Ctrl-C or by a
  killed process are failed and tried again; trials whose run failed (diverged) count.
* **Parallel.** ``n_jobs`` worker *processes* (not threads: training holds the GIL) each
  ask the shared storage for trials until the study has ``n_trials``.
* **Recorded.** Each trial composes its config with Hydra's compose API (the same
  ``conf/`` as ``make run``, plus the fixed overrides and the trial's sampled values) and
  runs :func:`mlplab.pipeline.run` as a child of one MLflow parent run per study (the
  same parent across resumptions), which gets the report of a sweep plus the best
  parameters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from mlplab.errors import ConfigError, RunFailed, UserError

log = logging.getLogger("mlplab")

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
KINDS = ("categorical", "float", "int")


@dataclass
class TuneSettings:
    """A study: what to search, how long, where to keep it (``conf/tune/*.yaml``)."""

    study_name: str = "mlplab"
    #: null: ``optuna.journal`` beside the MLflow SQLite store (the repository root for a
    #: server); a path ending in ``.journal``; or an Optuna RDB URL (``sqlite:///...``).
    storage: str | None = None
    direction: str = "minimize"
    #: the run metric to optimise; null: ``final_val_rmse`` if there is a validation
    #: split, else ``test_rmse``.
    metric: str | None = None
    n_trials: int = 20
    n_jobs: int = -1
    sampler: str = "tpe"
    sampler_seed: int | None = 0
    out_dir: str = "outputs/tune"
    overrides: list[str] = field(default_factory=list)
    space: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParamSpec:
    """One dimension of the search space."""

    key: str
    kind: str = "float"
    choices: list[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    step: float | None = None
    depends_on: str | None = None
    cases: dict[str, ParamSpec] = field(default_factory=dict)


# -- settings and search space ------------------------------------------------------------
def load_settings(name: str, dotlist: Sequence[str], conf_dir: Path = CONF_DIR) -> TuneSettings:
    """``conf/tune/<name>.yaml`` merged into :class:`TuneSettings`, then ``key=value`` items."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = conf_dir / "tune" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf_dir / "tune").glob("*.yaml"))
        raise ConfigError("tune", name, "one of " + ", ".join(known))
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(TuneSettings),
            OmegaConf.load(path),
            OmegaConf.from_dotlist(list(dotlist)),
        )
        settings = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        msg = str(exc).strip().splitlines()[0]
        raise UserError(f"tune settings ({path.name} {' '.join(dotlist)}): {msg}") from None
    assert isinstance(settings, TuneSettings)
    validate_settings(settings)
    return settings


def validate_settings(s: TuneSettings) -> None:
    """Check the study settings and the search space; :class:`ConfigError` on a bad one."""
    if not s.study_name:
        raise ConfigError("tune.study_name", s.study_name, "a non-empty name")
    if s.direction not in ("minimize", "maximize"):
        raise ConfigError("tune.direction", s.direction, "minimize or maximize")
    if s.n_trials < 1:
        raise ConfigError("tune.n_trials", s.n_trials, "an integer >= 1")
    if s.n_jobs == 0 or s.n_jobs < -1:
        raise ConfigError("tune.n_jobs", s.n_jobs, "an integer >= 1, or -1 (one per CPU)")
    if s.sampler not in ("tpe", "random"):
        raise ConfigError("tune.sampler", s.sampler, "tpe or random")
    if not s.space:
        raise ConfigError("tune.space", s.space, "at least one parameter to search")
    parse_space(s.space)


def _spec(key: str, raw: Any, where: str) -> ParamSpec:
    if not isinstance(raw, dict):
        raise ConfigError(where, raw, "a mapping with choices, or low and high")
    if "choices" in raw:
        choices = [choice_text(c) for c in raw["choices"]]
        if not choices:
            raise ConfigError(f"{where}.choices", raw["choices"], "a non-empty list")
        return ParamSpec(key, "categorical", choices=choices)
    if "low" not in raw or "high" not in raw:
        raise ConfigError(where, raw, "choices: [...], or low: and high:")
    kind = str(raw.get("type", "float"))
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}.type", kind, "float or int (or give choices)")
    low, high, log_ = float(raw["low"]), float(raw["high"]), bool(raw.get("log", False))
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(where, raw, "finite bounds with low < high")
    if log_ and low <= 0:
        raise ConfigError(f"{where}.low", low, "a number > 0 with log: true")
    step = raw.get("step")
    return ParamSpec(
        key, kind, low=low, high=high, log=log_, step=None if step is None else float(step)
    )


def parse_space(space: dict[str, Any]) -> list[ParamSpec]:
    """The search space, ordered so that a parameter comes after the one it depends on."""
    specs: list[ParamSpec] = []
    for key, raw in space.items():
        where = f"tune.space.{key}"
        if isinstance(raw, dict) and "depends_on" in raw:
            dep = str(raw["depends_on"])
            if dep not in space or "choices" not in (space[dep] or {}):
                raise ConfigError(
                    f"{where}.depends_on", dep, "another parameter of the space that has choices"
                )
            cases = raw.get("cases") or {}
            if not isinstance(cases, dict) or not cases:
                raise ConfigError(f"{where}.cases", cases, "a mapping {choice: {low, high}}")
            base = {k: v for k, v in raw.items() if k not in ("depends_on", "cases")}
            spec = ParamSpec(str(key), "conditional", depends_on=dep)
            for case, sub in cases.items():
                spec.cases[str(case)] = _spec(
                    str(key), {**base, **(sub or {})}, f"{where}.cases.{case}"
                )
            specs.append(spec)
        else:
            specs.append(_spec(str(key), raw, where))
    return sorted(specs, key=lambda p: p.depends_on is not None)


def choice_text(value: Any) -> Any:
    """A categorical choice as Optuna keeps it: lists become override text (``[4,4]``)."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(choice_text(v)) for v in value) + "]"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def value_text(value: Any) -> str:
    """An override value: ``null`` for None, lowercase booleans, floats at full precision."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def suggest(trial: Any, specs: Sequence[ParamSpec]) -> dict[str, str]:
    """Sample the trial's values: ``{config key: override value}``."""
    out: dict[str, str] = {}
    for spec in specs:
        name, p = spec.key, spec
        if spec.depends_on is not None:
            case = out.get(spec.depends_on)
            if case is None or case not in spec.cases:
                continue  # no range for this choice: the config's own value stays
            p, name = spec.cases[case], f"{spec.key}[{case}]"
        if p.kind == "categorical":
            value: Any = trial.suggest_categorical(name, p.choices)
        elif p.kind == "int":
            value = trial.suggest_int(
                name, int(p.low), int(p.high), log=p.log, step=int(p.step or 1)
            )
        else:
            value = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
        out[spec.key] = value_text(value)
    return out


def probe_values(specs: Sequence[ParamSpec]) -> dict[str, str]:
    """One point of the space (first choices, lower bounds): to check the config early."""
    out: dict[str, str] = {}
    for spec in specs:
        p = spec
        if spec.depends_on is not None:
            case = out.get(spec.depends_on)
            if case is None or case not in spec.cases:
                continue
            p = spec.cases[case]
        first = (
            p.choices[0] if p.kind == "categorical" else (int(p.low) if p.kind == "int" else p.low)
        )
        out[spec.key] = value_text(first)
    return out


def short_name(values: dict[str, str]) -> str:
    """``hidden=[4] optimizer=adam lr=0.0123`` (floats to 4 significant digits)."""
    last = [k.split(".")[-1] for k in values]
    parts = []
    for (key, value), short in zip(values.items(), last, strict=True):
        label = short if last.count(short) == 1 else key
        with contextlib.suppress(ValueError):
            if "." in value or "e" in value.lower():
                value = f"{float(value):.4g}"
        parts.append(f"{label}={value}")
    return " ".join(parts)


# -- storage and study --------------------------------------------------------------------
def storage_spec(settings: TuneSettings, mlflow_uri: str | None) -> str:
    """Where the study lives: explicit setting, else ``optuna.journal`` beside the store."""
    if settings.storage:
        return settings.storage
    from mlplab.tracking import repo_root

    if mlflow_uri and mlflow_uri.startswith("sqlite:///"):
        folder = Path(mlflow_uri[len("sqlite:///") :]).parent
    else:
        folder = repo_root()
    return str(folder / "optuna.journal")


def open_storage(spec: str) -> Any:
    """An Optuna storage: a journal file (``*.journal``/``*.log``) or an RDB URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" not in spec:
        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(spec))
    return optuna.storages.RDBStorage(spec, heartbeat_interval=30, grace_period=120)


def make_sampler(settings: TuneSettings, worker: int = 0, session: int = 0) -> Any:
    """TPE (with the constant liar, for parallel workers) or random.

    Each worker of each session (``session`` = trials in the study when it started) gets
    its own seed derived from ``sampler_seed``: a resumed study does not draw again the
    points it has already tried.
    """
    import numpy as np
    import optuna

    seed = None
    if settings.sampler_seed is not None:
        entropy = [settings.sampler_seed, session, worker]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def counted_trials(study: Any) -> int:
    """Trials that count towards ``n_trials``: done, running, or failed by their run."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) or (
            t.state == TrialState.FAIL and not t.user_attrs.get("retry")
        ):
            n += 1
    return n


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_trials(study: Any, mlflow_uri: str | None) -> int:
    """RUNNING trials of dead processes on this host: FAIL (to be retried); their runs KILLED."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    now = datetime.now()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if pid is None:  # killed between asking for the trial and noting its process
            started = t.datetime_start
            if started is None or (now - started).total_seconds() < 300:
                continue
        elif t.user_attrs.get("host") != host or not isinstance(pid, int) or _pid_alive(pid):
            continue
        study._storage.set_trial_user_attr(t._trial_id, "retry", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id and mlflow_uri:
            with contextlib.suppress(Exception):
                from mlplab.tracking import get_client

                client = get_client(mlflow_uri)
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_terminated(run_id, status="KILLED")
        n += 1
    return n


# -- one worker process ------------------------------------------------------------------
@dataclass
class WorkerJob:
    """What a worker process needs (plain, picklable)."""

    settings: dict[str, Any]
    run_overrides: list[str]
    storage: str
    tracking_uri: str | None
    experiment: str | None
    parent_run_id: str | None
    conf_dir: str
    index: int = 0
    session: int = 0


def _raise_interrupt_once(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the interrupted trial clean up
    raise KeyboardInterrupt(f"signal {signum}")


def worker_process(job: WorkerJob, lock: Any) -> None:
    """Entry point of a worker process: trials until the study is complete.

    Ctrl-C reaches the coordinator only (workers ignore SIGINT); it sends each worker one
    SIGTERM, which interrupts the trial: its run is closed KILLED and the trial is failed,
    to be run again when the study resumes.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupt_once)
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(message)s")
    try:
        worker_loop(job, lock)
    except KeyboardInterrupt:
        sys.exit(130)


def worker_loop(job: WorkerJob, lock: Any) -> int:
    """Ask the shared study for trials and run them; returns how many this worker ran."""
    import optuna
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from mlplab.config import register_configs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = TuneSettings(**job.settings)
    specs = parse_space(settings.space)
    register_configs()
    study = optuna.load_study(
        study_name=settings.study_name,
        storage=open_storage(job.storage),
        sampler=make_sampler(settings, job.index, job.session),
    )
    ran = 0
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=job.conf_dir, version_base="1.3"):
        while True:
            with lock:
                if counted_trials(study) >= settings.n_trials:
                    return ran
                trial = study.ask()
                trial.set_user_attr("host", socket.gethostname())
                trial.set_user_attr("pid", os.getpid())
            run_trial(study, trial, specs, settings, job)
            ran += 1


def _metric_of(settings: TuneSettings, metrics: dict[str, float]) -> tuple[str, float]:
    name = settings.metric or ("final_val_rmse" if "final_val_rmse" in metrics else "test_rmse")
    return name, float(metrics.get(name, math.nan))


def run_trial(
    study: Any, trial: Any, specs: Sequence[ParamSpec], settings: TuneSettings, job: WorkerJob
) -> None:
    """Compose the trial's config, run the pipeline as a child run, tell Optuna."""
    from hydra import compose
    from optuna.trial import TrialState

    from mlplab.cli import make_sink, prepare
    from mlplab.config import to_config
    from mlplab.pipeline import run
    from mlplab.tracking import MlflowSink

    values = suggest(trial, specs)
    sampled = [f"{k}={v}" for k, v in values.items()]
    overrides = [*job.run_overrides, *sampled]
    trial.set_user_attr("overrides", sampled)
    name = f"trial {trial.number}: {short_name(values)}"

    def sink_factory(cfg: Any) -> Any:
        sink = make_sink(cfg)
        if isinstance(sink, MlflowSink):
            start = sink.start

            def start_and_note(
                params: dict[str, str], tags: dict[str, str], run_name: str | None
            ) -> None:
                start(params, tags, run_name)
                trial.set_user_attr("mlflow_run_id", sink.run_id)

            sink.start = start_and_note  # type: ignore[method-assign]
        return sink

    try:
        cfg = prepare(to_config(compose(config_name="config", overrides=overrides)))
        if job.tracking_uri:
            cfg.tracking.uri = job.tracking_uri
        if job.experiment:
            cfg.tracking.experiment = job.experiment
        cfg.tracking.parent_run_id = job.parent_run_id
        cfg.tracking.run_name = name
        out_dir = Path(settings.out_dir) / settings.study_name / f"trial-{trial.number:04d}"
        outcome = run(
            cfg,
            sink_factory,
            out_dir,
            overrides,
            progress=False,
            extra_tags={"optuna_study": settings.study_name, "optuna_trial": str(trial.number)},
        )
    except (RunFailed, UserError) as exc:
        trial.set_user_attr("failure_reason", str(exc)[:1000])
        study.tell(trial, state=TrialState.FAIL)
        log.warning("%s failed: %s", name, exc)
        return
    except KeyboardInterrupt:
        trial.set_user_attr("retry", True)
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:
        # A failure of the machinery, not of the run. It counts as a trial: retrying it
        # would loop for ever on a bug that fails every trial.
        trial.set_user_attr("failure_reason", f"{type(exc).__name__}: {exc}"[:1000])
        study.tell(trial, state=TrialState.FAIL)
        log.exception("%s crashed", name)
        return
    metric, value = _metric_of(settings, outcome.metrics)
    trial.set_user_attr("metric", metric)
    if not math.isfinite(value):
        trial.set_user_attr("failure_reason", f"{metric} is {value}")
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, value)
    print(f"{name}: {metric}={value:.6g}", flush=True)


# -- the coordinator ---------------------------------------------------------------------
@dataclass
class StudyOutcome:
    """What ``make tune`` reports."""

    study_name: str
    storage: str
    parent_run_id: str | None
    n_trials: int
    best: dict[str, Any] | None
    status: str


def _check_config(run_overrides: list[str], specs: Sequence[ParamSpec], conf_dir: Path) -> Any:
    """Compose and validate one point of the space now, so a bad override fails at once."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mlplab.cli import prepare
    from mlplab.config import register_configs, to_config, validate

    register_configs()
    probe = [f"{k}={v}" for k, v in probe_values(specs).items()]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = prepare(
                to_config(compose(config_name="config", overrides=[*run_overrides, *probe]))
            )
    except (HydraException, OmegaConfBaseException) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"overrides {' '.join(run_overrides + probe)}: {msg}") from None
    validate(cfg)
    return cfg


@contextlib.contextmanager
def _workers(n: int, job: WorkerJob) -> Iterator[list[Any]]:
    ctx = mp.get_context("spawn")
    lock = ctx.Lock()
    procs = []
    for i in range(n):
        job_i = WorkerJob(**{**asdict(job), "index": i})
        procs.append(
            ctx.Process(target=worker_process, args=(job_i, lock), name=f"tune-worker-{i}")
        )
    for p in procs:
        p.start()
    try:
        yield procs
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


def _reuse_or_start_parent(
    study: Any, settings: TuneSettings, uri: str, experiment: str, specs: Sequence[ParamSpec]
) -> str:
    """The study's parent run: the one from an earlier session (reopened), else a new one."""
    from mlplab import sweep
    from mlplab.tracking import get_client

    previous = study.user_attrs.get("mlflow_parent_run_id")
    if previous and study.user_attrs.get("mlflow_tracking_uri") == uri:
        with contextlib.suppress(Exception):
            client = get_client(uri)
            run = client.get_run(previous)
            if run.info.lifecycle_stage == "active":
                client.update_run(previous, status="RUNNING")
                sweep._remember(uri, previous)
                sweep.install_guards()
                return str(previous)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    tags = {
        "optuna_study": settings.study_name,
        "mlplab_role": "tune",
        "sweep_keys": ",".join(s.key for s in specs),
        "tune_space": json.dumps(settings.space),
        "tune_overrides": " ".join(settings.overrides),
        "mlflow.note.content": (
            f"Optuna study `{settings.study_name}`: {settings.direction} "
            f"{settings.metric or 'test RMSE (validation RMSE if any)'} over "
            f"{', '.join(s.key for s in specs)}. Each child is a trial."
        ),
    }
    _, _, run_id = sweep.start_parent(uri, experiment, f"tune {settings.study_name} {stamp}", tags)
    sweep.install_guards()
    study.set_user_attr("mlflow_parent_run_id", run_id)
    study.set_user_attr("mlflow_tracking_uri", uri)
    return run_id


def _best(study: Any) -> dict[str, Any] | None:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return None
    best = study.best_trial
    return {
        "trial": best.number,
        "value": best.value,
        "metric": best.user_attrs.get("metric", "objective"),
        "overrides": list(best.user_attrs.get("overrides", [])),
        "params": dict(best.params),
        "run_id": best.user_attrs.get("mlflow_run_id"),
    }


def _report(
    study: Any,
    settings: TuneSettings,
    specs: Sequence[ParamSpec],
    uri: str,
    parent_id: str,
    best: dict[str, Any] | None,
) -> None:
    from mlflow.entities import Metric, RunTag

    from mlplab.report import plot_objective
    from mlplab.sweep import collect_children, publish_report
    from mlplab.tracking import PARAM_MAX_LEN, get_client

    client = get_client(uri)
    out_dir = Path(settings.out_dir) / settings.study_name / "report"
    trials = study.get_trials(deepcopy=False)
    plot_objective(
        [t.value for t in trials],
        out_dir / "plots" / "tune_history.png",
        settings.direction,
        (best or {}).get("metric") or settings.metric or "objective",
    )
    children = collect_children(client, parent_id, close_orphans=False)
    publish_report(
        client,
        parent_id,
        children,
        [s.key for s in specs],
        out_dir,
        title=f"study {settings.study_name}: train RMSE per epoch",
    )
    now = int(time.time() * 1000)
    tags = [
        RunTag("tune_n_trials", str(settings.n_trials)),
        RunTag("tune_storage", settings.storage or ""),
    ]
    metrics = [Metric("n_trials", float(len(trials)), now, 0)]
    if best is not None:
        tags += [
            RunTag("best_trial", str(best["trial"])),
            RunTag("best_params", json.dumps(best["params"])[:PARAM_MAX_LEN]),
            RunTag("best_overrides", " ".join(best["overrides"])[:PARAM_MAX_LEN]),
        ]
        tags += [
            RunTag(f"best.{o.partition('=')[0]}", o.partition("=")[2]) for o in best["overrides"]
        ]
        if best["run_id"]:
            tags.append(RunTag("best_trial_run_id", str(best["run_id"])))
        metrics.append(Metric("best_value", float(best["value"]), now, len(trials)))
    client.log_batch(parent_id, metrics=metrics, tags=tags)


def _direction(settings: TuneSettings) -> Literal["minimize", "maximize"]:
    return "maximize" if settings.direction == "maximize" else "minimize"


def run_study(
    settings: TuneSettings, run_overrides: Sequence[str], conf_dir: Path = CONF_DIR
) -> StudyOutcome:
    """Create or resume the study, run the missing trials in parallel, report the best."""
    import optuna

    from mlplab.sweep import close_open_parent

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    specs = parse_space(settings.space)
    fixed = [*settings.overrides, *run_overrides]
    base = _check_config(fixed, specs, conf_dir)
    uri = base.tracking.uri if base.tracking.enabled else None
    storage = storage_spec(settings, uri)
    try:
        study = optuna.create_study(
            study_name=settings.study_name,
            storage=open_storage(storage),
            direction=_direction(settings),
            sampler=make_sampler(settings),
            load_if_exists=True,
        )
    except Exception as exc:
        raise UserError(f"tune.storage={storage!r}, study {settings.study_name!r}: {exc}") from None
    stale = fail_stale_trials(study, uri)
    if stale:
        print(f"{stale} trial(s) of an interrupted session will be run again", flush=True)
    parent_id = (
        _reuse_or_start_parent(study, settings, str(uri), base.tracking.experiment, specs)
        if uri
        else None
    )
    done = counted_trials(study)
    remaining = max(0, settings.n_trials - done)
    n_jobs = (os.cpu_count() or 1) if settings.n_jobs == -1 else settings.n_jobs
    n_jobs = max(1, min(n_jobs, remaining))
    print(
        f"study {settings.study_name!r} in {storage}: {done} of {settings.n_trials} trials "
        f"done, {remaining} to run in {n_jobs if remaining else 0} process(es)"
        + (f"; MLflow parent run {parent_id} ({uri})" if parent_id else ""),
        flush=True,
    )
    job = WorkerJob(
        settings=asdict(settings),
        run_overrides=fixed,
        storage=storage,
        tracking_uri=uri,
        experiment=base.tracking.experiment if uri else None,
        parent_run_id=parent_id,
        conf_dir=str(conf_dir),
        session=len(study.get_trials(deepcopy=False)),
    )
    status = "FINISHED"
    try:
        if remaining and n_jobs == 1:
            worker_loop(job, contextlib.nullcontext())
        elif remaining:
            with _workers(n_jobs, job) as procs:
                for p in procs:
                    p.join()
                codes = [p.exitcode for p in procs]
            if any(c == 130 for c in codes):
                raise KeyboardInterrupt
            if any(c != 0 for c in codes):
                status = "FAILED"
                log.error("tune worker(s) ended with exit status %s", codes)
    except KeyboardInterrupt:
        close_open_parent("KILLED")
        raise
    best = _best(study)
    if best is None:
        status = "FAILED"
    if parent_id and uri:
        try:
            _report(study, settings, specs, uri, parent_id, best)
        except Exception:
            log.exception("could not write the study report")
            status = "FAILED"
    close_open_parent(status)
    return StudyOutcome(
        settings.study_name, storage, parent_id, counted_trials(study), best, status
    )

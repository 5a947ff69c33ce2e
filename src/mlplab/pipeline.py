"""The pipeline: validate → generate → build → train → evaluate → plot → record.

Each stage is a plain function with plain inputs and outputs (the typed config, arrays, a
:class:`Job`, a :class:`~mlplab.nn.TrainResult`). :func:`run` strings them together inside
one tracked run (:func:`~mlplab.tracking.lifecycle.tracked_run`, which owns the run's status, the
fallback folder and interrupts); :func:`train` takes several jobs at once, so a population
of runs (a sweep's) goes through the very same stages. Nothing here imports MLflow.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import mlplab
from mlplab import build, environment, plots
from mlplab.config import (
    ENTRY_POINT_ENV,
    SWEEP_ENV,
    Config,
    config_yaml,
    override_key,
    to_config,
    user_overrides,
    validate,
)
from mlplab.data import Dataset, generate
from mlplab.errors import Interrupted
from mlplab.interrupts import BetweenEpochs, deferred_interrupts
from mlplab.metrics import SPLITS, evaluate_split
from mlplab.nn import MLP, Progress, TrainData, TrainResult, fit
from mlplab.nn.gradcheck import gradient_check
from mlplab.nn.trainer import Monitor
from mlplab.project import git_commit, resolve_path
from mlplab.trace import build_trace, write_trace
from mlplab.tracking import DataSplit, ModelRequest, Sink, flatten, make_sink
from mlplab.tracking.fallback import FOLDER_NAME
from mlplab.tracking.lifecycle import Recorder, RunSpec, tracked_run
from mlplab.tracking.uris import configure_http, project_store, resolve_uri
from mlplab.weights import save_weights, weights_sha256

Array = np.ndarray
log = logging.getLogger("mlplab")
#: The tag holding a run's own overrides (a sweep's report reads them from it).
OVERRIDES_TAG = "mlplab.overrides"
#: Processes preparing a sweep's jobs and drawing its figures (:func:`population_workers`;
#: two cores here: this process composes and records meanwhile).
WORKERS = 2


@dataclass
class Job:
    """One run's inputs, ready to train: its config, data and initial weights."""

    cfg: Config
    out_dir: Path
    overrides: list[str]
    data: Dataset
    sizes: list[int]
    initial: list[Array]
    shuffle_rng: np.random.Generator


@dataclass
class RunOutcome:
    """What one run produced, for the caller to print; the status is the run's."""

    recorder: Recorder
    metrics: dict[str, float]
    epochs_run: int
    weights_sha256: str
    out_dir: Path

    @property
    def run_id(self) -> str | None:
        """The run's id in the store (known once the run has ended)."""
        return self.recorder.run_id

    @property
    def status(self) -> str:
        """FINISHED, FAILED or KILLED."""
        return self.recorder.status

    @property
    def failure(self) -> str | None:
        """Why the run failed."""
        return self.recorder.failure

    @property
    def fallback(self) -> Path | None:
        """The folder holding the run's record when the store failed mid-run."""
        return self.recorder.fallback

    def _scores(self) -> str:
        """The final RMSEs (and accuracy), or why there are none."""
        m = self.metrics
        if "final_train_rmse" not in m:
            return f"  not evaluated: {self.failure or 'the run ended ' + self.status}"
        train = f"  train RMSE {rmse_text(m['final_train_rmse'])}   "
        if "test_rmse" not in m:
            return train + "no test set (data.test_fraction=0)"
        accuracy = f"   test accuracy {m['test_accuracy']:.3f}" if "test_accuracy" in m else ""
        return train + f"test RMSE {rmse_text(m['test_rmse'])}" + accuracy

    @property
    def _ran(self) -> str:
        """``FINISHED, 435 epochs``; ``FAILED after 20 epochs`` (the 21st diverged)."""
        joint = ", " if self.status == "FINISHED" else " after "
        return f"{self.status}{joint}{self.epochs_run} epochs"

    def describe(self, brief: bool = False, uri: str | None = None) -> str:
        """What the user sees at the end of a run (one line per job in a sweep: ``brief``)."""
        m = self.metrics
        if brief:
            scores = (
                f"test RMSE {rmse_text(m['test_rmse'])}"
                if "test_rmse" in m
                else f"train RMSE {rmse_text(m['final_train_rmse'])}, no test set"
                if "final_train_rmse" in m
                else "not evaluated"
            )
            return f"job {self.out_dir.name}: {self._ran}, {scores}"
        lines = [
            f"run {self.run_id or '(tracking off)'}: {self._ran}, "
            f"weights sha256 {self.weights_sha256[:12] or '-'}",
            self._scores(),
            f"  files: {self.out_dir.absolute()}",
        ]
        if self.fallback is not None:  # the store holds a stub: the record is in the folder
            lines.append(f"  its record: {self.fallback} (the store failed; see below)")
        elif self.run_id and uri and uri.startswith("http"):
            lines.append(f"  look at it: {uri}")
        elif self.run_id and (uri is None or resolve_uri(uri) == project_store()):
            lines.append("  look at it: make ui  (MLflow UI on http://127.0.0.1:5000)")
        elif self.run_id:  # make ui shows the project's store only
            lines.append(f"  look at it: mlflow ui --backend-store-uri {uri}")
        return "\n".join(lines)


# -- the typed config -----------------------------------------------------------------------
def configure(cfg: DictConfig | Config) -> Config:
    """Typed config with the tracking URI and data paths made absolute, HTTP limits applied.

    A sweep's job takes its tracking store, experiment, parent run and run name from the
    environment its sweep set (:data:`mlplab.config.SWEEP_ENV`); a run name the user gave
    wins.
    """
    if isinstance(cfg, DictConfig):
        with read_write(cfg), open_dict(cfg):
            for key, var in SWEEP_ENV.items():
                if var in os.environ and not (key == "tracking.run_name" and cfg.tracking.run_name):
                    OmegaConf.update(cfg, key, os.environ[var], merge=False)
    typed = to_config(cfg)
    if HydraConfig.initialized():  # named after the experiment, or the data chosen instead
        hydra = HydraConfig.get()
        own_data = not any(override_key(o) == "data" for o in hydra.overrides.task)
        experiment = hydra.runtime.choices.get("experiment") if own_data else None
        typed.tracking.run_name = run_name(typed, experiment)
    typed.tracking.uri = resolve_uri(typed.tracking.uri)
    typed.data.path = resolve_path(typed.data.path)
    typed.model.init_file = resolve_path(typed.model.init_file)
    configure_http(typed.tracking.timeout, typed.tracking.retries)
    # a dead server is reported once, by us; urllib3's "Retrying ..." lines are noise
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    return typed


# -- validate, generate, build ---------------------------------------------------------------
def make_rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent streams for data, init and shuffling, all derived from ``seed``."""
    data, init, shuffle = np.random.default_rng(seed).spawn(3)
    return {"data": data, "init": init, "shuffle": shuffle}


def blas_threads(cfg: Config) -> threadpool_limits:
    """BLAS pinned to ``train.blas_threads`` threads: a product's rounding depends on how
    BLAS splits it, so a run's numbers do not depend on the process's own thread count."""
    return threadpool_limits(limits=cfg.train.blas_threads, user_api="blas")


def prepare(cfg: Config, out_dir: Path, overrides: Sequence[str] = ()) -> Job:
    """Validate the config, make the data, draw the initial weights (no store touched)."""
    validate(cfg)
    rngs = make_rngs(cfg.seed)
    with blas_threads(cfg):  # a generator's products (the regression teacher) too
        data = generate(cfg.data, rngs["data"], cfg.train.dtype)
    sizes = build.layer_sizes(cfg, data.n_features, data.n_outputs)
    build.check_memory(cfg, sizes, len(data.X_train), len(data.X_val))
    initial = build.initial_weights(cfg, sizes, rngs["init"])
    return Job(cfg, Path(out_dir), list(overrides), data, sizes, initial, rngs["shuffle"])


def check_inputs(cfg: Config, weights: bool = True) -> None:
    """What a sweep or a study checks before any run: the config's values and the files it
    reads: a CSV file's data, and with ``weights`` a ``model.init_file`` against the
    network it would initialise (a :class:`~mlplab.errors.UserError` if bad). A generator's
    data are not made: valid values give valid data, and they may be large."""
    validate(cfg)
    if weights and cfg.model.init == "file":
        prepare(cfg, Path("."))  # the data too: the file's shapes depend on them
    elif cfg.data.name == "csv":
        generate(cfg.data, make_rngs(cfg.seed)["data"], cfg.train.dtype)


def run_name(cfg: Config, experiment: str | None = None) -> str:
    """The run's name: ``tracking.run_name``, else the experiment and its key choices, as
    ``tutorial · sgd lr=0.5 · [2]`` (never MLflow's random name)."""
    o = cfg.optimizer
    default = f"{experiment or cfg.data.name} · {o.name} lr={o.lr:g} · {list(cfg.model.hidden)}"
    return cfg.tracking.run_name or default


@functools.cache
def environment_record() -> dict[str, Any]:
    """This process's environment (``environment.json``), read once per process."""
    return environment.record()


def entry_point() -> str:
    """The script that started the run: a sweep's, for its jobs (wherever they run)."""
    return os.environ.get(ENTRY_POINT_ENV) or sys.argv[0] or "pipelines/run.py"


def run_spec(job: Job, extra_tags: dict[str, str] | None = None) -> RunSpec:
    """What the run is opened with: the flattened config, the tags (the environment's key
    facts and MLflow's source tags among them), the name."""
    t = job.cfg.tracking
    tags = {
        "mlplab_version": mlplab.__version__,
        "git_commit": git_commit(),
        OVERRIDES_TAG: json.dumps(user_overrides(job.overrides)),
        **environment.tags(environment_record()),
        **environment.source_tags(entry_point()),
        **(extra_tags or {}),
    }
    return RunSpec(
        params=flatten(asdict(job.cfg)),
        tags=tags,
        name=run_name(job.cfg),
        uri=resolve_uri(t.uri),
        experiment=t.experiment,
        parent_run_id=t.parent_run_id,
        fallback_dir=job.out_dir / FOLDER_NAME,
    )


def record_refusal(cfg: Config, overrides: Sequence[str], reason: str) -> None:
    """A sweep job refused by validation still shows in the sweep, as a FAILED child."""
    if not (cfg.tracking.enabled and cfg.tracking.parent_run_id):
        return
    spec = RunSpec(flatten(asdict(cfg)), {}, run_name(cfg))
    try:
        with tracked_run(make_sink(cfg.tracking), spec) as rec:
            rec.end_as("FAILED", reason)
    except Exception as exc:  # the store itself may be the problem
        log.error("could not record the refused job: %s", exc)


def first_batch(
    cfg: Config, data: Dataset, shuffle_rng: np.random.Generator
) -> tuple[Array, Array]:
    """The rows of the first batch of the first epoch (as training will draw them)."""
    n = data.X_train.shape[0]
    size = n if cfg.train.batch_size is None else min(cfg.train.batch_size, n)
    if cfg.train.shuffle and size < n:
        perm = copy.deepcopy(shuffle_rng).permutation(n)[:size]
        return data.X_train[perm], data.Y_train[perm]
    return data.X_train[:size], data.Y_train[:size]


#: What a run writes into its folder: all of it goes to the run's artifacts.
RUN_FILES = ("config.yaml", "overrides.yaml", "environment.json", "weights", "history", "data",
             "plots", "trace")  # fmt: skip


def clear_previous_run(job: Job) -> None:
    """Remove what an earlier run left in this run's folder (a ``hydra.run.dir`` used
    again): the folder goes to the run's artifacts whole, and would show that run's files
    (figures, a trace) as this one's. An input file of this run in there is kept."""
    given = (job.cfg.data.path, job.cfg.model.init_file)
    inputs = [Path(str(resolve_path(p))).resolve() for p in given if p]
    out = job.out_dir.resolve()
    stale = [out / name for name in RUN_FILES if (out / name).exists()]
    stale = [p for p in stale if not any(i == p or p in i.parents for i in inputs)]
    if stale:
        log.warning("%s held another run's files: replaced by this run's", job.out_dir)
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def write_inputs(job: Job) -> None:
    """``config.yaml``, ``overrides.yaml``, ``weights/initial.npz``, ``environment.json``, the
    data CSVs and the trace (the folder first cleared of an earlier run's files)."""
    out, cfg = job.out_dir, job.cfg
    clear_previous_run(job)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config_yaml(cfg))
    lines = "".join(f"- {json.dumps(o)}\n" for o in job.overrides)
    (out / "overrides.yaml").write_text(lines or "[]\n")
    save_weights(out / "weights" / "initial.npz", job.initial)
    (out / "environment.json").write_text(json.dumps(environment_record(), indent=1))
    write_data_csv(job.data, out, cfg.tracking.data_max_rows)  # what it trains on: any run
    if cfg.trace.enabled:
        X, T = first_batch(cfg, job.data, job.shuffle_rng)
        write_trace(build_trace(cfg, job.initial, X, T), out / "trace", cfg.trace.max_rows)


def gradient_error(job: Job, n_samples: int = 5) -> float:
    """Backprop vs central differences on the first training samples, at the initial weights."""
    net = build.network(job.cfg, job.sizes)
    net.set_weights(job.initial)
    k = min(n_samples, job.data.X_train.shape[0])
    X, Y = job.data.X_train[:k], job.data.Y_train[:k]
    return gradient_check(net, X, Y, job.cfg.train.loss, job.cfg.train.reduction)


def data_splits(job: Job) -> list[DataSplit]:
    """The run's splits as dataset inputs: the CSV file's name (``iris``) or the generator's,
    a digest of the arrays, the CSV file as source (a generator's name and seed otherwise),
    the context."""
    d, data = job.cfg.data, job.data
    name = Path(d.path).stem if d.path else str(d.name)
    splits = []
    for context, X, Y in (
        ("training", data.X_train, data.Y_train),
        ("validation", data.X_val, data.Y_val),
        ("testing", data.X_test, data.Y_test),
    ):
        if X.shape[0]:
            digest = hashlib.sha256(X.tobytes() + Y.tobytes()).hexdigest()[:8]
            generator = {} if d.path else {"generator": str(d.name), "seed": str(job.cfg.seed)}
            splits.append(DataSplit(name, context, digest, X, Y, d.path, generator))
    return splits


def check_gradients(job: Job, rec: Recorder) -> dict[str, float]:
    """The gradient check of ``train.gradcheck``, as a metric of the run (logged with the
    others); if it fails the run ends FAILED."""
    t = job.cfg.train
    if not t.gradcheck:
        return {}
    err = gradient_error(job)
    if not err <= t.gradcheck_threshold:
        rec.end_as(
            "FAILED",
            f"gradient check failed: max relative error {err:.3e} > "
            f"train.gradcheck_threshold={t.gradcheck_threshold}",
        )
    return {"gradcheck_max_rel_error": err}


# -- train -----------------------------------------------------------------------------------
def train(jobs: Sequence[Job], monitor: Monitor | None = None) -> list[TrainResult]:
    """Train the jobs' networks as one population (their networks must stack)."""
    cfg = jobs[0].cfg
    net = build.network(cfg, jobs[0].sizes, members=len(jobs))
    for i, job in enumerate(jobs):
        net.set_member(i, job.initial)
    splits = [(j.data.X_train, j.data.Y_train, j.data.X_val, j.data.Y_val) for j in jobs]
    arrays = [
        parts[0] if len(jobs) == 1 else np.stack(parts) for parts in zip(*splits, strict=True)
    ]
    with BetweenEpochs() as signals:  # an interrupt keeps whole epochs' weights
        return fit(
            net,
            TrainData(*arrays),
            build.optimizer([j.cfg for j in jobs], net),
            [build.train_settings(j.cfg) for j in jobs],
            [j.shuffle_rng for j in jobs],
            monitors(monitor, signals.check),
        )


@contextlib.contextmanager
def progress_bar(cfg: Config, show: bool | None = None) -> Iterator[Monitor | None]:
    """A progress bar of the epochs on a terminal (``train.progress``), as a training monitor."""
    if not (cfg.train.progress and (sys.stderr.isatty() if show is None else show)):
        yield None
        return
    bar = tqdm(
        total=cfg.train.epochs, desc="training", unit="epoch", leave=False, dynamic_ncols=True
    )

    def monitor(progress: Progress) -> None:
        bar.update(progress.epoch - bar.n)
        rmse = progress.history.data["train_rmse"][progress.epoch - 1, progress.active[0]]
        bar.set_postfix_str(f"rmse={rmse:.5f}", refresh=False)

    try:
        yield monitor
    finally:
        bar.close()


def history_stride(planned: int, max_points: int) -> int:
    """The epochs between logged points: 1 while a run of ``planned`` epochs fits in
    ``max_points``, else the even stride that leaves room for the last epoch."""
    if planned <= max_points:
        return 1
    return -(-(planned - 1) // max(max_points - 2, 1))  # ceil: grid 1, 1+s, ... ≤ max_points-1


def logged_steps(planned: int, ran: int, max_points: int) -> np.ndarray:
    """The epochs of a history that go to MLflow: every epoch of a run no longer than
    ``max_points``, else an even stride that keeps the first and the last epoch."""
    if ran <= max_points:
        return np.arange(1, ran + 1)
    grid = np.arange(1, ran + 1, history_stride(planned, max_points))
    return grid if grid[-1] == ran else np.append(grid, ran)


class LiveHistory:
    """Each run's history in MLflow while it trains, about once a second (through the run's
    sink: the helper writes it while training goes on), at most ``tracking.max_points``
    points per metric; :meth:`finish` sends the rest."""

    def __init__(self, jobs: Sequence[Job], recs: Sequence[Recorder], every: float = 1.0) -> None:
        self.recs, self.every, self.last = list(recs), every, time.monotonic()
        self.stride = [history_stride(j.cfg.train.epochs, j.cfg.tracking.max_points) for j in jobs]
        self.max_points = [j.cfg.tracking.max_points for j in jobs]
        self.sent = [0] * len(jobs)  # epochs already covered, per member
        self.last_sent = [0] * len(jobs)  # the last epoch actually sent, per member

    def __call__(self, progress: Progress) -> None:
        if time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        with deferred_interrupts():  # else Ctrl-C here could make finish send points again
            for member in progress.active:
                upto = int(progress.history.length[member])
                steps = np.arange(self.sent[member] + 1, upto + 1)
                steps = steps[(steps - 1) % self.stride[member] == 0]
                if steps.size:
                    rows = {k: t[steps - 1, member] for k, t in progress.history.data.items()}
                    self.recs[member].log_history(rows, steps.tolist())
                    self.last_sent[member] = int(steps[-1])
                self.sent[member] = upto

    def finish(self, member: int, result: TrainResult, planned: int) -> None:
        """The points not sent yet, once the member has stopped."""
        steps = logged_steps(planned, result.epochs_run, self.max_points[member])
        live = steps <= self.sent[member]
        if self.stride[member] > 1 and result.epochs_run <= self.max_points[member]:
            live &= (steps - 1) % self.stride[member] == 0  # a short run gets every epoch
        if steps.size and steps[-1] != self.last_sent[member]:
            live[-1] = False  # the last epoch, covered but off the stride (stopped right there)
        steps = steps[~live]
        if steps.size:
            rows = {k: v[steps - 1] for k, v in result.history.items()}
            self.recs[member].log_history(rows, steps.tolist())


def monitors(*calls: Monitor | None) -> Monitor:
    """One training monitor calling each of ``calls``."""

    def monitor(progress: Progress) -> None:
        for call in calls:
            if call is not None:
                call(progress)

    return monitor


# -- evaluate, plot --------------------------------------------------------------------------
def evaluate(net: MLP, data: Dataset) -> dict[str, float]:
    """Metrics of the final weights: ``test_*``, ``final_train_*`` and ``final_val_*``."""
    out: dict[str, float] = {}
    splits = (data.X_train, data.Y_train), (data.X_val, data.Y_val), (data.X_test, data.Y_test)
    for split, (X, Y) in zip(SPLITS, splits, strict=True):
        if X.shape[0]:
            metrics = evaluate_split(Y, net.predict(X), data.task == "classification")
            out.update({f"{split}_{key}": value for key, value in metrics.items()})
    return out


def animation_frames(snapshots: dict[int, list[Array]], frames: int) -> dict[int, list[Array]]:
    """At most ``frames`` of the captured snapshots, evenly spread, first and last kept."""
    epochs = sorted(snapshots)
    idx = np.unique(np.linspace(0, len(epochs) - 1, min(frames, len(epochs))).round())
    return {epochs[int(i)]: snapshots[epochs[int(i)]] for i in idx}


def rmse_text(value: float) -> str:
    """An RMSE as the summary prints it: 6 decimals (``0.002074``), or 6 significant digits
    when that is far too long (``2.20925e+143``: a net that blew up without reaching inf)."""
    return f"{value:.6f}" if abs(value) < 1e6 else f"{value:.6g}"


def kept_epoch(result: TrainResult) -> int | None:
    """The epoch whose weights early stopping kept, when it is not the last one run."""
    best = result.best_epoch
    if best is None or best == result.epochs_run or result.interrupted:
        return None
    return best


def network_subtitle(result: TrainResult, metrics: dict[str, float]) -> str:
    """The network figure's subtitle: the train RMSE of the final weights, the number the
    run's summary prints (the last epoch's running RMSE is taken during its updates), or
    why the run failed (it is not evaluated)."""
    if result.failure is not None:
        return f"{result.epochs_run} epochs, then {result.failure}"
    best = kept_epoch(result)
    if best is not None:
        return (
            f"{result.epochs_run} epochs, the weights of epoch {best} (best "
            f"validation RMSE): train RMSE {rmse_text(metrics['final_train_rmse'])}"
        )
    train = rmse_text(metrics["final_train_rmse"])
    return f"{result.epochs_run} epochs, train RMSE {train} (final weights)"


def rmse_title(result: TrainResult) -> str:
    """The RMSE figure's title: the epoch whose weights were kept, if not the last."""
    best = kept_epoch(result)
    title = "RMSE across epochs"
    return title if best is None else f"{title} (weights kept: epoch {best}, best validation)"


def plot(
    job: Job, net: MLP, result: TrainResult, metrics: dict[str, float], painter: Any
) -> list[Path]:
    """The figures: RMSE curve, predictions, network (and boundary, animations).

    ``painter`` (a :class:`mlplab.plots.Painter`) draws the still figures, reusing its
    figures from one member of a population to the next.
    """
    cfg, data, pdir = job.cfg, job.data, job.out_dir / "plots"
    dpi = cfg.plot.dpi
    classification = data.task == "classification"
    X = np.concatenate([data.X_train, data.X_test])
    Y = np.concatenate([data.Y_train, data.Y_test])
    subtitle = network_subtitle(result, metrics)
    names = data.feature_names, data.target_names
    paths = [
        painter.rmse(
            result.history, pdir / "rmse.png", rmse_title(result), dpi, kept_epoch(result)
        ),
        painter.predictions(
            X, Y, net.predict(X), pdir / "predictions.png", *names, classification, dpi=dpi
        ),
        painter.network(result.weights, pdir / "network.png", subtitle=subtitle, dpi=dpi),
    ]
    two_d = classification and data.n_features == 2
    if two_d:
        boundary = pdir / "decision_boundary.png"
        paths.append(plots.plot_decision_boundary(net.predict, X, Y, boundary, dpi=dpi))
    if cfg.plot.animate:
        paths += animate(job, net, result, X, Y, two_d)
    return paths


def animate(job: Job, net: MLP, result: TrainResult, X: Array, Y: Array, two_d: bool) -> list[Path]:
    """The animations: the network as it learns (and the decision boundary, in 2-D)."""
    cfg, pdir = job.cfg, job.out_dir / "plots"
    snapshots = dict(result.snapshots)
    if snapshots and result.epochs_run > 0:
        snapshots.setdefault(result.epochs_run, result.weights)
    frames = animation_frames(snapshots, cfg.plot.frames)
    if len(frames) < 2:
        return []
    rmse = result.history["train_rmse"]
    paths = [plots.animate_network(frames, rmse, pdir / "network.gif", dpi=cfg.plot.dpi)]
    if two_d:
        probe = net.like(dtype="float64")

        def predict_with(weights: list[Array], Xq: Array) -> Array:
            probe.set_weights(weights)
            return probe.predict(Xq)

        gif = pdir / "decision_boundary.gif"
        paths.append(
            plots.animate_decision_boundary(frames, predict_with, X, Y, gif, dpi=cfg.plot.dpi)
        )
    return paths


# -- record ----------------------------------------------------------------------------------
def write_data_csv(data: Dataset, out_dir: Path, max_rows: int) -> list[Path]:
    """``data/{train,val,test}.csv`` (columns x1..xn, y1..ym) at full precision, if small."""
    total = data.X_train.shape[0] + data.X_val.shape[0] + data.X_test.shape[0]
    if total > max_rows:
        return []
    ddir = out_dir / "data"
    ddir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, X, Y in (
        ("train", data.X_train, data.Y_train),
        ("val", data.X_val, data.Y_val),
        ("test", data.X_test, data.Y_test),
    ):
        if split == "val" and X.shape[0] == 0:
            continue
        cols = [f"x{i + 1}" for i in range(X.shape[1])] + [f"y{i + 1}" for i in range(Y.shape[1])]
        path = ddir / f"{split}.csv"
        np.savetxt(path, np.hstack([X, Y]), "%.17g", ",", header=",".join(cols), comments="")
        paths.append(path)
    return paths


def model_request(job: Job, net: MLP, weights_file: Path | None = None) -> ModelRequest:
    """What the store needs to build the MLflow model: weights, network, an input example."""
    data = job.data
    raw = data.X_train[:5].astype(np.float64)
    if data.scaling:
        raw = raw * np.asarray(data.scaling["std"]) + np.asarray(data.scaling["mean"])
    spec = build.network_spec(
        job.cfg, job.sizes, data.feature_names, data.target_names, data.scaling
    )
    weights = weights_file or job.out_dir / "weights" / "final.npz"
    return ModelRequest(weights, spec, raw, net.predict(data.X_train[:5]))


def save_history(history: dict[str, Array], out_dir: Path) -> None:
    """The whole history, every epoch, as ``history/<metric>.npy``."""
    (out_dir / "history").mkdir(parents=True, exist_ok=True)
    for key, values in history.items():
        np.save(out_dir / "history" / f"{key}.npy", values)


Drawer = Callable[[Job, TrainResult, dict[str, float]], "Future[list[Path]]"]


def record(
    job: Job,
    result: TrainResult,
    rec: Recorder,
    metrics: dict[str, float],
    draw: Drawer,
    killed: str | None = None,
) -> tuple[RunOutcome, Future[list[Path]] | None]:
    """Evaluate, hand everything to the run, start the figures; the run's status follows the
    result. The figures (``draw``, maybe in another process) go to the run with its other
    files in :func:`finish`. An interrupted member (``result.interrupted``, or ``killed``:
    the reason it was stopped after its training) is recorded KILLED with its history and
    weights, neither evaluated nor drawn."""
    cfg, out = job.cfg, job.out_dir
    if killed is None and result.interrupted:
        killed = f"interrupted at epoch {result.epochs_run + 1}"
    save_history(result.history, out)
    save_weights(out / "weights" / "final.npz", result.weights)
    sha = weights_sha256(result.weights)
    metrics = {**metrics, "epochs_run": float(result.epochs_run), "train_seconds": result.seconds}
    figures = None
    if killed is None:  # a diverged run is drawn too (its RMSE curve says how), not evaluated
        if result.failure is None:
            net = build.network(cfg, job.sizes)
            net.set_weights(result.weights)
            metrics.update(evaluate(net, job.data))
            if cfg.tracking.enabled and cfg.tracking.log_model:  # built while we plot
                rec.log_model(model_request(job, net))
        if cfg.plot.enabled:
            figures = draw(job, result, metrics)
    rec.log_metrics(metrics)
    rec.set_tags({"weights_sha256": sha, "stop_reason": result.stop_reason})
    if killed is not None:
        rec.end_as("KILLED", killed)
    elif result.failure is not None:
        rec.end_as("FAILED", result.failure)
    return RunOutcome(rec, metrics, result.epochs_run, sha, out), figures


def finish(outcome: RunOutcome, figures: Future[list[Path]] | None) -> None:
    """Once its figures are drawn, every file of the run's folder goes to the run."""
    if figures is not None:
        try:
            figures.result()
        except Exception as exc:  # the record stands without its figures
            log.exception("drawing %s failed", outcome.out_dir)
            if outcome.recorder.status == "FINISHED":  # a failed run keeps its reason
                outcome.recorder.end_as("FAILED", f"figures: {type(exc).__name__}: {exc}")
    outcome.recorder.log_artifacts(outcome.out_dir)


def draw_figures(job: Job, result: TrainResult, metrics: dict[str, float]) -> list[Path]:
    """A run's figures, with this process's :class:`~mlplab.plots.Painter`."""
    net = build.network(job.cfg, job.sizes)
    net.set_weights(result.weights)
    with blas_threads(job.cfg):
        return plot(job, net, result, metrics, _painter())


@functools.cache
def _painter() -> Any:
    """This process's painter: it reuses its figures from one run to the next."""
    return plots.Painter()


def _start_worker(setup: Callable[..., object] | None, args: Sequence[object]) -> None:
    """A worker leaves Ctrl-C and SIGTERM to the process that runs the population (which
    ends the workers), exits when that process is gone (killed outright: nothing else
    would end it), then runs ``setup``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    if setup is not None:
        setup(*args)


def _exit_with(parent: int, every: float = 1.0) -> None:
    """Exit this process once ``parent`` is no longer its parent (it has died)."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _warm_up() -> None:
    """A figure worker's imports and painter."""
    _painter()


def warm_up(pool: ProcessPoolExecutor) -> None:
    """Have ``pool``'s workers import Matplotlib and make their painters (submitted after
    the jobs they prepare: done while this process trains, before the first figure)."""
    for _ in range(WORKERS):
        pool.submit(_warm_up)


@contextlib.contextmanager
def population_workers(
    setup: Callable[..., object] | None = None, *args: object
) -> Iterator[ProcessPoolExecutor]:
    """The processes that help a sweep's process: they prepare jobs (``setup(*args)`` first
    makes each ready: the launcher hands it Hydra's state) and draw the populations' figures,
    each with its own painter (:func:`warm_up`). An interrupt drops the tasks not started
    yet."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        WORKERS, mp_context=spawn, initializer=_start_worker, initargs=(setup, args)
    ) as pool:
        try:
            yield pool
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def drawer(jobs: Sequence[Job], pool: ProcessPoolExecutor | None) -> Drawer:
    """Where the figures are drawn: in ``pool``'s workers while this process records the
    next members; here for one run, or without workers."""
    if pool is not None and len(jobs) > 1 and any(job.cfg.plot.enabled for job in jobs):
        workers = pool

        def there(job: Job, result: TrainResult, metrics: dict[str, float]) -> Future[list[Path]]:
            return workers.submit(draw_figures, job, result, metrics)

        return there

    def here(job: Job, result: TrainResult, metrics: dict[str, float]) -> Future[list[Path]]:
        done: Future[list[Path]] = Future()
        done.set_result(draw_figures(job, result, metrics))
        return done

    return here


# -- the whole run ---------------------------------------------------------------------------
@dataclass(eq=False)
class _Member:
    """One job of a group on its way through its run: what it has so far."""

    job: Job
    rec: Recorder
    run: contextlib.ExitStack  # ends the run (:func:`tracked_run`)
    metrics: dict[str, float] = field(default_factory=dict)
    result: TrainResult | None = None
    outcome: RunOutcome | None = None
    figures: Future[list[Path]] | None = None
    closed: bool = False

    def close(self, outcome: RunOutcome | None = None) -> None:
        """End the run (with its recorder's status): an interrupt waits until it has ended."""
        self.outcome = outcome or self.outcome
        with deferred_interrupts():
            self.run.close()
            self.closed = True

    def close_untrained(self) -> None:
        """End a run that did not train (refused by its gradient check, or interrupted before
        training): its inputs and its gradient check go to it, so that it can be rerun."""
        self.outcome = RunOutcome(self.rec, self.metrics, 0, "", self.job.out_dir)
        if self.metrics:
            self.rec.log_metrics(self.metrics)
        if self.job.out_dir.is_dir():
            finish(self.outcome, None)
        self.close()


class _Group:
    """The runs of jobs whose networks stack: prepared, trained as one population, recorded."""

    def __init__(self, members: list[_Member], pool: ProcessPoolExecutor | None) -> None:
        self.members, self.pool = members, pool
        self.ready: list[_Member] = []  # those that train (set by run, with what follows)
        self.live = LiveHistory([], [])
        self.draw = drawer([], None)

    def run(self, progress: bool | None) -> None:
        """Inputs and gradient checks, training, then each member recorded and closed."""
        for m in self.members:
            m.metrics = _before_training(m.job, m.rec)
        self.ready = [m for m in self.members if m.rec.status == "FINISHED"]
        for m in self.members:
            if m.rec.status != "FINISHED":
                m.close_untrained()
        jobs = [m.job for m in self.ready]
        self.live = LiveHistory(jobs, [m.rec for m in self.ready])
        with progress_bar(self.members[0].job.cfg, progress) as bar:
            results = train(jobs, monitors(bar, self.live)) if jobs else []
        for m, result in zip(self.ready, results, strict=True):
            m.result = result
        self.draw = drawer(jobs, self.pool)
        for k, m in enumerate(self.ready):
            with deferred_interrupts():  # a member is recorded whole, or not at all
                self._record(k, m)
        for m in self.ready:
            if not m.closed:
                finish(m.outcome, m.figures)  # type: ignore[arg-type]
                m.close()

    def _record(self, k: int, m: _Member, killed: str | None = None) -> None:
        """Member ``k`` of the population: the rest of its history, its record (a failure
        to record ends its run FAILED; the others go on)."""
        assert m.result is not None
        try:
            self.live.finish(k, m.result, m.job.cfg.train.epochs)
            m.outcome, m.figures = record(m.job, m.result, m.rec, m.metrics, self.draw, killed)
        except Exception as exc:
            log.exception("recording %s failed", m.job.out_dir)
            m.rec.end_as("FAILED", f"{type(exc).__name__}: {exc}")
            m.close(RunOutcome(m.rec, m.metrics, m.result.epochs_run, "", m.job.out_dir))

    def stop(self) -> None:
        """After an interrupt outside training, every run still open is closed: a member
        recorded whole as it would have been, the others KILLED with what they have (inputs;
        history and weights if they trained), neither evaluated nor drawn."""
        for m in self.members:
            if m.closed:
                continue
            if m.result is None:
                m.rec.end_as("KILLED", "interrupted before training")
                m.close_untrained()
            elif m.outcome is None:  # trained (a failed or interrupted training says so)
                done = m.result.failure is None and not m.result.interrupted
                why = f"interrupted while recording, after training ({m.result.stop_reason})"
                self._record(self.ready.index(m), m, why if done else None)
            elif m.figures is not None and m.figures.cancel():
                m.rec.end_as("KILLED", "interrupted before its figures were drawn")
                m.figures = None
            if not m.closed:
                if m.job.out_dir.is_dir():
                    finish(m.outcome, m.figures)  # type: ignore[arg-type]
                m.close()


def run_group(
    jobs: Sequence[Job],
    sinks: Sequence[Sink],
    extra_tags: dict[str, str] | None = None,
    progress: bool | None = None,
    pool: ProcessPoolExecutor | None = None,
) -> list[RunOutcome]:
    """Jobs whose networks stack, each a tracked run of its own, trained as one population
    (its figures drawn by ``pool``'s workers, if given: :func:`population_workers`).

    Every run is opened before training and closed as soon as it is recorded. A member's
    failed gradient check or crash ends that member's run FAILED; the others go on. An
    interrupt during training ends the members KILLED with their history so far (their
    outcomes say so); one anywhere else is raised once every run is closed
    (:meth:`_Group.stop`), as :class:`~mlplab.errors.Interrupted` with their outcomes.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(blas_threads(jobs[0].cfg))
        members = []
        for job, sink in zip(jobs, sinks, strict=True):
            run = stack.enter_context(contextlib.ExitStack())
            rec = run.enter_context(tracked_run(sink, run_spec(job, extra_tags)))
            members.append(_Member(job, rec, run))
        group = _Group(members, pool)
        try:
            group.run(progress)
        except KeyboardInterrupt as exc:
            with deferred_interrupts():  # another signal waits until every run is closed
                group.stop()
            raise Interrupted([m.outcome for m in members if m.outcome is not None]) from exc
    return [m.outcome for m in members if m.outcome is not None]


def _before_training(job: Job, rec: Recorder) -> dict[str, float]:
    """The inputs written and logged, the gradients checked (a failed check ends the run
    FAILED). The input files go to the run now: one killed outright (SIGKILL, a launcher
    that kills its workers on Ctrl-C) keeps its config and can be rerun."""
    try:
        write_inputs(job)
        rec.log_inputs(data_splits(job))
        rec.log_artifacts(job.out_dir)
        return check_gradients(job, rec)
    except Exception as exc:
        log.exception("preparing %s failed", job.out_dir)
        rec.end_as("FAILED", f"{type(exc).__name__}: {exc}")
        return {}


def run(
    cfg: Config,
    out_dir: Path,
    overrides: Sequence[str] = (),
    sink: Sink | None = None,
    extra_tags: dict[str, str] | None = None,
    progress: bool | None = None,
) -> RunOutcome:
    """One run: validate → generate → build → train → evaluate → plot → record.

    A user error (:class:`~mlplab.errors.UserError`) is raised before a run is opened.
    The outcome's status says how the run ended (a diverged run is FAILED, an interrupted
    one KILLED with its history and weights so far); its ``fallback`` says whether the store
    failed on the way.
    """
    job = prepare(cfg, out_dir, overrides)
    (outcome,) = run_group([job], [sink or make_sink(cfg.tracking)], extra_tags, progress)
    return outcome

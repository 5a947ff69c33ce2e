"""The pipeline: generate → train → evaluate → plot, each a plain function, and ``run``.

Stages take plain inputs (the typed config, arrays) and return plain outputs. ``run``
strings them together and hands what they produce to a tracking :class:`~mlplab.tracking.Sink`;
nothing here imports MLflow.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import mlplab
from mlplab.config import Config, validate
from mlplab.data import Dataset, generate
from mlplab.errors import RunFailed, StoreFailed
from mlplab.metrics import evaluate_split
from mlplab.nn import MLP, TrainResult, TrainSettings, fit, init_weights, make_optimizer
from mlplab.nn.optimizers import Optimizer
from mlplab.tracking import ModelRequest
from mlplab.weights import check_shapes, load_weights, save_weights, weights_sha256

log = logging.getLogger("mlplab")
Array = np.ndarray


@dataclass
class RunOutcome:
    """What one run produced, for the caller to print."""

    run_id: str | None
    status: str
    metrics: dict[str, float]
    epochs_run: int
    weights_sha256: str
    out_dir: Path
    failure: str | None = None
    artifacts: list[Path] = field(default_factory=list)


# -- stage 0: randomness -----------------------------------------------------------------
def make_rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent streams for data, init and shuffling, all derived from ``seed``."""
    data, init, shuffle = np.random.default_rng(seed).spawn(3)
    return {"data": data, "init": init, "shuffle": shuffle}


# -- stage 1: generate -------------------------------------------------------------------
def generate_data(cfg: Config, rng: np.random.Generator) -> Dataset:
    """Make or read the data and split it, in the run's dtype."""
    return generate(cfg.data, rng, cfg.train.dtype)


# -- stage 2: train ----------------------------------------------------------------------
def layer_sizes(cfg: Config, data: Dataset) -> list[int]:
    """Input width, hidden widths, output width."""
    return [data.n_features, *cfg.model.hidden, data.n_outputs]


def build_network(cfg: Config, data: Dataset, rng: np.random.Generator) -> MLP:
    """The network with its initial weights (drawn from ``rng`` or read from a file)."""
    m = cfg.model
    net = MLP(
        layer_sizes(cfg, data), m.activation, m.output_activation, m.negative_slope, cfg.train.dtype
    )
    if m.init == "file":
        weights = load_weights(str(m.init_file))
        check_shapes(weights, net.sizes, f"model.init_file={m.init_file!r}")
    else:
        weights = init_weights(net.sizes, m.init, rng, m.init_scale)
    net.set_weights(weights)
    return net


def build_optimizer(cfg: Config, net: MLP) -> Optimizer:
    """The optimiser over the network's weights."""
    o = cfg.optimizer
    return make_optimizer(
        o.name,
        net.weights,
        o.lr,
        momentum=o.momentum,
        nesterov=o.nesterov,
        beta1=o.beta1,
        beta2=o.beta2,
        eps=o.eps,
        weight_decay=o.weight_decay,
    )


def train_settings(cfg: Config, snapshot_epochs: Sequence[int] = ()) -> TrainSettings:
    """The engine's settings from the config."""
    t, o = cfg.train, cfg.optimizer
    return TrainSettings(
        epochs=t.epochs,
        batch_size=t.batch_size,
        shuffle=t.shuffle,
        loss=t.loss,
        reduction=t.reduction,
        tol=t.tol,
        patience=t.patience,
        schedule=o.schedule,
        step_size=o.step_size,
        gamma=o.gamma,
        classification=cfg.data.task == "classification",
        snapshot_epochs=snapshot_epochs,
    )


def snapshot_epochs(cfg: Config) -> list[int]:
    """Epochs at which the animation captures weights (0 = initial).

    Evenly spaced and geometrically spaced candidates, so that a run stopping early (by
    ``train.tol``) still has many frames; :func:`animation_frames` picks ``plot.frames``.
    """
    if not (cfg.plot.enabled and cfg.plot.animate):
        return []
    E, n = cfg.train.epochs, min(cfg.plot.frames, cfg.train.epochs + 1)
    candidates = (*np.linspace(0, E, n), *np.geomspace(1, E, 3 * n))
    return sorted({round(float(e)) for e in candidates})


def animation_frames(snapshots: dict[int, list[Array]], frames: int) -> dict[int, list[Array]]:
    """At most ``frames`` of the captured snapshots, evenly spread, first and last kept."""
    epochs = sorted(snapshots)
    idx = np.unique(np.linspace(0, len(epochs) - 1, min(frames, len(epochs))).round())
    return {epochs[int(i)]: snapshots[epochs[int(i)]] for i in idx}


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


def train(
    cfg: Config,
    net: MLP,
    data: Dataset,
    rng: np.random.Generator,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``net`` in place on the training split (validation split for early stopping).

    NumPy's overflow warnings are silenced: a diverging run is reported once, by the
    engine (``TrainResult.failure``), not by a screen of RuntimeWarnings.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return fit(
            net,
            data.X_train,
            data.Y_train,
            build_optimizer(cfg, net),
            train_settings(cfg, snapshot_epochs(cfg)),
            rng,
            data.X_val,
            data.Y_val,
            on_epoch,
        )


def gradcheck(cfg: Config, net: MLP, data: Dataset, n_samples: int = 5) -> float:
    """Backprop vs central differences on the first few training samples."""
    from mlplab.nn.gradcheck import gradient_check

    k = min(n_samples, data.X_train.shape[0])
    return gradient_check(
        net, data.X_train[:k], data.Y_train[:k], cfg.train.loss, cfg.train.reduction
    )


# -- stage 3: evaluate -------------------------------------------------------------------
def evaluate(net: MLP, data: Dataset) -> dict[str, float]:
    """Metrics of the final weights: ``test_*``, ``final_train_*`` and ``final_val_*``."""
    classification = data.task == "classification"
    out: dict[str, float] = {}
    for split, X, Y in (
        ("final_train", data.X_train, data.Y_train),
        ("final_val", data.X_val, data.Y_val),
        ("test", data.X_test, data.Y_test),
    ):
        if X.shape[0] == 0:
            continue
        for key, value in evaluate_split(Y, net.predict(X), classification).items():
            out[f"{split}_{key}"] = value
    return out


# -- stage 4: plot -----------------------------------------------------------------------
def plot(cfg: Config, net: MLP, data: Dataset, result: TrainResult, out_dir: Path) -> list[Path]:
    """The figures: RMSE curve, predictions, network (and boundary, animations)."""
    from mlplab import plots

    pdir = out_dir / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    classification = data.task == "classification"
    X = np.concatenate([data.X_train, data.X_test])
    Y = np.concatenate([data.Y_train, data.Y_test])
    paths = [
        plots.plot_rmse(result.history, pdir / "rmse.png"),
        plots.plot_predictions(
            X,
            Y,
            net.predict(X),
            pdir / "predictions.png",
            data.feature_names,
            data.target_names,
            classification,
        ),
        plots.plot_network(
            result.weights,
            pdir / "network.png",
            subtitle=f"{result.epochs_run} epochs, final train RMSE "
            f"{result.history['train_rmse'][-1]:.4f}"
            if result.epochs_run
            else None,
        ),
    ]
    two_d = classification and data.n_features == 2
    if two_d:
        paths.append(
            plots.plot_decision_boundary(net.predict, X, Y, pdir / "decision_boundary.png")
        )
    frames = animation_frames(result.snapshots, cfg.plot.frames)
    if cfg.plot.animate and len(frames) >= 2:
        rmse = result.history["train_rmse"]
        paths.append(plots.animate_network(frames, rmse, pdir / "network.gif"))
        if two_d:
            probe = MLP(
                net.sizes,
                cfg.model.activation,
                cfg.model.output_activation,
                cfg.model.negative_slope,
                "float64",
            )

            def predict_with(weights: list[Array], Xq: Array) -> Array:
                probe.set_weights(weights)
                return probe.predict(Xq)

            paths.append(
                plots.animate_decision_boundary(
                    frames, predict_with, X, Y, pdir / "decision_boundary.gif"
                )
            )
    return paths


# -- artifacts ---------------------------------------------------------------------------
def write_data_csv(data: Dataset, out_dir: Path, max_rows: int) -> list[Path]:
    """``data/{train,val,test}.csv`` (columns x1..xn, y1..ym) at full precision, if small.

    Written with ``np.savetxt`` (the same text as pandas' ``to_csv(float_format="%.17g")``,
    without importing pandas into every job).
    """
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


def config_yaml(cfg: Config) -> str:
    """The composed, resolved config as YAML."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def network_spec(cfg: Config, net: MLP, data: Dataset) -> dict[str, Any]:
    """What the served model needs to rebuild the network."""
    return {
        "sizes": net.sizes,
        "activation": cfg.model.activation,
        "output_activation": cfg.model.output_activation,
        "negative_slope": cfg.model.negative_slope,
        "dtype": cfg.train.dtype,
        "features": data.feature_names,
        "targets": data.target_names,
        "scaling": data.scaling,
    }


def model_request(cfg: Config, net: MLP, data: Dataset, weights_file: Path) -> ModelRequest:
    """What the sink needs to build the MLflow model: weights, network, an input example."""
    raw = data.X_train[:5].astype(np.float64)
    if data.scaling:
        raw = raw * np.asarray(data.scaling["std"]) + np.asarray(data.scaling["mean"])
    return ModelRequest(
        weights_file, network_spec(cfg, net, data), raw, net.predict(data.X_train[:5])
    )


def git_commit() -> str:
    """The project's current commit, or ``unknown``."""
    from mlplab.tracking import repo_root

    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_name_from_overrides(overrides: Sequence[str]) -> str | None:
    """A readable run name from a job's overrides: last key component=value."""
    parts = []
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key.startswith(("tracking.", "hydra.")):
            continue
        parts.append(f"{key.split('.')[-1]}={value}")
    return " ".join(parts) or None


# -- the whole run -----------------------------------------------------------------------
def run(
    cfg: Config,
    sink_factory: Callable[[Config], Any],
    out_dir: Path,
    overrides: Sequence[str] = (),
    extra_tags: dict[str, str] | None = None,
    progress: bool | None = None,
) -> RunOutcome:
    """Validate, generate, train, evaluate, plot; hand everything to the sink.

    User errors (:class:`~mlplab.errors.UserError`) are raised before a run is opened.
    Divergence and failed gradient checks end the run FAILED and raise :class:`RunFailed`;
    an interrupt ends it KILLED (history and weights so far logged) and re-raises.
    """
    validate(cfg)
    rngs = make_rngs(cfg.seed)
    data = generate_data(cfg, rngs["data"])
    net = build_network(cfg, data, rngs["init"])
    initial = net.get_weights()
    sink = sink_factory(cfg)  # connects to the store: a TrackingError is a user error
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.tracking.enabled:  # a store that fails mid-run: the record goes to a local folder
        from mlplab.fallback import FOLDER_NAME, FallbackSink

        sink = FallbackSink(
            sink,
            out_dir / FOLDER_NAME,
            str(cfg.tracking.uri),
            cfg.tracking.experiment,
            cfg.tracking.parent_run_id,
        )
    from mlplab.tracking import flatten

    params = flatten(asdict(cfg))
    tags = {"mlplab_version": mlplab.__version__, "git_commit": git_commit(), **(extra_tags or {})}
    name = cfg.tracking.run_name or run_name_from_overrides(overrides)
    try:
        sink.start(params, tags, name)
    except KeyboardInterrupt:
        if sink.run_id is not None:
            _safe(lambda: sink.end("KILLED"))
        raise
    status, failure = "FAILED", None
    outcome: RunOutcome | None = None
    try:
        (out_dir / "config.yaml").write_text(config_yaml(cfg))
        (out_dir / "overrides.yaml").write_text(
            "".join(f"- {json.dumps(o)}\n" for o in overrides) or "[]\n"
        )
        save_weights(out_dir / "weights" / "initial.npz", initial)
        metrics: dict[str, float] = {}
        if cfg.train.gradcheck:
            err = gradcheck(cfg, net, data)
            metrics["gradcheck_max_rel_error"] = err
            sink.log_metrics({"gradcheck_max_rel_error": err})
            if not err <= cfg.train.gradcheck_threshold:
                raise RunFailed(
                    f"gradient check failed: max relative error {err:.3e} > "
                    f"train.gradcheck_threshold={cfg.train.gradcheck_threshold}"
                )
        if cfg.trace.enabled:
            from mlplab.trace import build_trace, write_trace

            Xb, Tb = first_batch(cfg, data, rngs["shuffle"])
            write_trace(build_trace(cfg, initial, Xb, Tb), out_dir / "trace", cfg.trace.max_rows)
        result = _train_with_progress(cfg, net, data, rngs["shuffle"], progress)
        sink.log_history(result.history)
        save_weights(out_dir / "weights" / "final.npz", result.weights)
        sha = weights_sha256(result.weights)
        metrics.update({"epochs_run": float(result.epochs_run), "train_seconds": result.seconds})
        if result.epochs_run > 0 and result.snapshots:
            result.snapshots.setdefault(result.epochs_run, result.weights)
        if result.failure is None and not result.interrupted:
            metrics.update(evaluate(net, data))
            if cfg.tracking.enabled and cfg.tracking.log_model:  # built while we plot
                sink.log_model(model_request(cfg, net, data, out_dir / "weights" / "final.npz"))
            write_data_csv(data, out_dir, cfg.tracking.data_max_rows)
            if cfg.plot.enabled:
                plot(cfg, net, data, result, out_dir)
        sink.log_metrics(metrics)
        sink.set_tags(
            {
                "weights_sha256": sha,
                "stop_reason": result.stop_reason,
                **({"failure_reason": result.failure} if result.failure else {}),
            }
        )
        sink.log_artifacts(out_dir)
        if result.interrupted:
            status = "KILLED"
            raise KeyboardInterrupt
        if result.failure is not None:
            failure = result.failure
            raise RunFailed(result.failure)
        status = "FINISHED"
        outcome = RunOutcome(sink.run_id, status, metrics, result.epochs_run, sha, out_dir)
    except RunFailed as exc:
        failure = str(exc)
        sink.set_tags({"failure_reason": failure})
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        failure = f"{type(exc).__name__}: {exc}"
        _safe(lambda: sink.set_tags({"failure_reason": failure[:5000]}))
        raise
    finally:
        _safe(lambda: sink.end(status))
        if outcome is not None:  # a background sink knows the run's id once it has ended
            outcome.run_id = sink.run_id
        fell_back = getattr(sink, "active", False)
        if fell_back and outcome is None:  # an error or interrupt is on its way up: say it now
            print(f"error: {sink.notice()}", file=sys.stderr, flush=True)
    if fell_back:
        raise StoreFailed(
            f"training ended {status} ({outcome.epochs_run} epochs, weights "
            f"sha256 {outcome.weights_sha256[:12]}), but {sink.notice()}",
            outcome,
        )
    return outcome


def _safe(action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception as exc:
        log.warning("could not update the tracking store: %s", exc)


def _train_with_progress(
    cfg: Config, net: MLP, data: Dataset, rng: np.random.Generator, progress: bool | None
) -> TrainResult:
    """Train with a progress bar on a terminal (quiet otherwise)."""
    show = cfg.train.progress and (sys.stderr.isatty() if progress is None else progress)
    if not show:
        return train(cfg, net, data, rng)
    from tqdm import tqdm

    bar = tqdm(
        total=cfg.train.epochs, desc="training", unit="epoch", leave=False, dynamic_ncols=True
    )
    last = [0]

    def on_epoch(epoch: int, rmse: float) -> None:
        bar.update(epoch - last[0])
        last[0] = epoch
        bar.set_postfix_str(f"rmse={rmse:.5f}", refresh=False)

    try:
        return train(cfg, net, data, rng, on_epoch)
    finally:
        bar.close()

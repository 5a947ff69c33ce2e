"""The one config schema: structured configs registered with Hydra, and their validation.

Every key a run reads is declared here with its type and default. ``conf/config.yaml``
puts ``config_schema`` first in its defaults list, so every YAML file and every
override is merged into these typed nodes (an unknown key or a wrong type is refused by
Hydra). :func:`validate` then checks values and combinations before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplab.errors import ConfigError, UserError

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "identity")
OUTPUT_ACTIVATIONS = (*ACTIVATIONS, "softmax")
INITS = ("normal", "xavier", "he", "file")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "step", "exponential")
LOSSES = ("mse", "cross_entropy")
REDUCTIONS = ("sum", "mean")
DTYPES = ("float64", "float32")
TASKS = ("regression", "classification")
DATASETS = ("tutorial", "xor", "sine", "spiral", "moons", "regression", "csv")
CLASSIFICATION_DATASETS = ("spiral", "moons", "csv")
#: Generators whose inputs and outputs have a fixed width (spiral/moons: n_classes outputs).
FIXED_SHAPES: dict[str, dict[str, int]] = {
    "xor": {"n_features": 2, "n_outputs": 1},
    "sine": {"n_features": 1, "n_outputs": 1},
    "spiral": {"n_features": 2},
    "moons": {"n_features": 2},
}


@dataclass
class DataConfig:
    """Where the samples come from and how they are split."""

    name: str = "tutorial"
    task: str = "regression"
    n_samples: int = 50
    n_features: int = 2
    n_outputs: int = 2
    n_classes: int = 2
    noise: float = 0.1
    teacher_hidden: int = 32
    test_fraction: float = 0.2
    val_fraction: float = 0.0
    standardize: bool = False
    path: str | None = None
    features: list[str] | None = None
    targets: list[str] | None = None


@dataclass
class ModelConfig:
    """The network: hidden widths, activations and initial weights."""

    hidden: list[int] = field(default_factory=lambda: [2])
    activation: str = "sigmoid"
    output_activation: str = "sigmoid"
    negative_slope: float = 0.01
    init: str = "normal"
    init_scale: float = 1.0
    init_file: str | None = None


@dataclass
class OptimizerConfig:
    """Update rule (PyTorch conventions) and learning-rate schedule."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"
    step_size: int = 1000
    gamma: float = 0.5


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 10000
    batch_size: int | None = None
    shuffle: bool = True
    loss: str = "mse"
    reduction: str = "sum"
    tol: float = 1e-6
    patience: int | None = None
    dtype: str = "float64"
    gradcheck: bool = False
    gradcheck_threshold: float = 1e-5
    progress: bool = True


@dataclass
class TrackingConfig:
    """MLflow: where runs go. ``uri: null`` is the SQLite store at the repository root."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "mlplab"
    run_name: str | None = None
    parent_run_id: str | None = None
    timeout: int = 5
    retries: int = 1
    log_model: bool = True
    data_max_rows: int = 10000
    background: bool = True


@dataclass
class PlotConfig:
    """Figures written after training."""

    enabled: bool = True
    animate: bool = True
    frames: int = 30
    dpi: int = 100


@dataclass
class TraceConfig:
    """The step-by-step trace of the first update."""

    enabled: bool = False
    max_rows: int = 5


@dataclass
class Config:
    """A whole run."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore as ``config_schema``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="config_schema", node=Config)


def to_config(cfg: Any) -> Config:
    """Turn a composed DictConfig (possibly with a ``hydra`` node) into a typed :class:`Config`."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, Config):
        return cfg
    try:
        if isinstance(cfg, DictConfig):
            container = OmegaConf.to_container(cfg, resolve=True)
        else:
            container = dict(cfg)
        assert isinstance(container, dict)
        container.pop("hydra", None)
        merged = OmegaConf.merge(OmegaConf.structured(Config), container)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:  # e.g. +model.depth=3 passes Hydra, not the schema
        raise _schema_error(exc) from None
    assert isinstance(obj, Config)
    return obj


def _schema_error(exc: Exception) -> UserError:
    """One line for a value or key the typed schema refuses."""
    key = str(getattr(exc, "full_key", "") or "")
    hint = unknown_key_hint([f"{key}=?"]) if key else None
    if hint:
        return UserError(hint)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return UserError(f"{key or 'the config'}: {first}")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, "one of " + ", ".join(allowed))


def _positive(key: str, value: float | int, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        raise ConfigError(key, value, "a number >= 0" if allow_zero else "a number > 0")


def _fraction(key: str, value: float) -> None:
    if not (0.0 <= value < 1.0):
        raise ConfigError(key, value, "a fraction with 0 <= value < 1")


def validate(cfg: Config) -> None:
    """Check every value and combination; raise :class:`ConfigError` on the first bad one."""
    d, m, o, t = cfg.data, cfg.model, cfg.optimizer, cfg.train
    if cfg.seed < 0:
        raise ConfigError("seed", cfg.seed, "an integer >= 0")
    _choice("data.name", d.name, DATASETS)
    _choice("data.task", d.task, TASKS)
    for key in ("n_samples", "n_features", "n_outputs", "teacher_hidden"):
        if getattr(d, key) < 1:
            raise ConfigError(f"data.{key}", getattr(d, key), "an integer >= 1")
    if d.n_classes < 2:
        raise ConfigError("data.n_classes", d.n_classes, "an integer >= 2")
    _positive("data.noise", d.noise, allow_zero=True)
    _fraction("data.test_fraction", d.test_fraction)
    _fraction("data.val_fraction", d.val_fraction)
    if d.test_fraction + d.val_fraction >= 1.0:
        raise ConfigError(
            "data.val_fraction",
            d.val_fraction,
            f"test_fraction + val_fraction < 1 (test_fraction is {d.test_fraction})",
        )
    if d.name == "csv":
        if not d.path:
            raise ConfigError("data.path", d.path, "the path of a CSV file (data.name=csv)")
        if not Path(d.path).is_file():
            raise ConfigError("data.path", d.path, "an existing, readable CSV file")
    if d.name in ("spiral", "moons") and d.task != "classification":
        raise ConfigError("data.task", d.task, f"classification (data.name={d.name})")
    if d.task == "classification" and d.name not in CLASSIFICATION_DATASETS:
        raise ConfigError(
            "data.task", d.task, f"regression (data.name={d.name} makes continuous targets)"
        )
    if d.name == "moons" and d.n_classes != 2:
        raise ConfigError("data.n_classes", d.n_classes, "2 (data.name=moons: two half circles)")
    for key, fixed in FIXED_SHAPES.get(d.name, {}).items():
        if getattr(d, key) != fixed:
            raise ConfigError(
                f"data.{key}",
                getattr(d, key),
                f"{fixed}: data.name={d.name} has a fixed shape (choose it with data={d.name}, "
                "which sets the shape)",
            )
    if d.name == "tutorial" and d.n_outputs != d.n_features:
        raise ConfigError(
            "data.n_outputs",
            d.n_outputs,
            f"data.n_features ({d.n_features}): the tutorial maps each input to one output",
        )

    for i, width in enumerate(m.hidden):
        if width < 1:
            raise ConfigError(f"model.hidden[{i}]", width, "layer widths >= 1")
    _choice("model.activation", m.activation, ACTIVATIONS)
    _choice("model.output_activation", m.output_activation, OUTPUT_ACTIVATIONS)
    if not 0.0 <= m.negative_slope < 1.0:
        # leaky_relu is computed as max(z, slope·z): only right for 0 <= slope < 1
        raise ConfigError("model.negative_slope", m.negative_slope, "0 <= negative_slope < 1")
    _choice("model.init", m.init, INITS)
    _positive("model.init_scale", m.init_scale)
    if m.init == "file":
        if not m.init_file:
            raise ConfigError(
                "model.init_file", m.init_file, "the path of an .npz (model.init=file)"
            )
        if not Path(m.init_file).is_file():
            raise ConfigError("model.init_file", m.init_file, "an existing .npz weight file")

    _choice("optimizer.name", o.name, OPTIMIZERS)
    _positive("optimizer.lr", o.lr)
    if not 0.0 <= o.momentum < 1.0:
        raise ConfigError("optimizer.momentum", o.momentum, "0 <= momentum < 1")
    if o.nesterov and o.momentum <= 0:
        raise ConfigError("optimizer.nesterov", o.nesterov, "false unless optimizer.momentum > 0")
    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(o, key) < 1.0:
            raise ConfigError(f"optimizer.{key}", getattr(o, key), "0 <= value < 1")
    _positive("optimizer.eps", o.eps)
    _positive("optimizer.weight_decay", o.weight_decay, allow_zero=True)
    _choice("optimizer.schedule", o.schedule, SCHEDULES)
    if o.step_size < 1:
        raise ConfigError("optimizer.step_size", o.step_size, "an integer >= 1")
    _positive("optimizer.gamma", o.gamma)

    if t.epochs < 1:
        raise ConfigError("train.epochs", t.epochs, "an integer >= 1")
    if t.batch_size is not None and t.batch_size < 1:
        raise ConfigError("train.batch_size", t.batch_size, "an integer >= 1, or null (full batch)")
    _choice("train.loss", t.loss, LOSSES)
    _choice("train.reduction", t.reduction, REDUCTIONS)
    _positive("train.tol", t.tol, allow_zero=True)
    if t.patience is not None:
        if t.patience < 1:
            raise ConfigError("train.patience", t.patience, "an integer >= 1, or null (off)")
        if d.val_fraction <= 0:
            raise ConfigError(
                "train.patience", t.patience, "null unless data.val_fraction > 0 (early stopping)"
            )
    _choice("train.dtype", t.dtype, DTYPES)
    _positive("train.gradcheck_threshold", t.gradcheck_threshold)
    if (m.output_activation == "softmax") != (t.loss == "cross_entropy"):
        raise ConfigError(
            "train.loss",
            t.loss,
            "cross_entropy together with model.output_activation=softmax, "
            "and mse with any other output activation",
        )
    if t.loss == "cross_entropy" and d.task != "classification":
        raise ConfigError("train.loss", t.loss, "mse unless data.task=classification")
    if d.task == "classification" and t.loss != "cross_entropy":
        raise ConfigError("train.loss", t.loss, "cross_entropy when data.task=classification")

    if cfg.tracking.timeout < 1:
        raise ConfigError("tracking.timeout", cfg.tracking.timeout, "seconds >= 1")
    if cfg.tracking.retries < 0:
        raise ConfigError("tracking.retries", cfg.tracking.retries, "an integer >= 0")
    if not cfg.tracking.experiment:
        raise ConfigError("tracking.experiment", cfg.tracking.experiment, "a non-empty name")
    if cfg.tracking.data_max_rows < 0:
        raise ConfigError(
            "tracking.data_max_rows", cfg.tracking.data_max_rows, "an integer >= 0 (0 = never)"
        )
    if cfg.plot.dpi < 1:
        raise ConfigError("plot.dpi", cfg.plot.dpi, "an integer >= 1")
    if cfg.plot.frames < 2:
        raise ConfigError("plot.frames", cfg.plot.frames, "an integer >= 2")
    if cfg.trace.max_rows < 1:
        raise ConfigError("trace.max_rows", cfg.trace.max_rows, "an integer >= 1")


def unknown_key_hint(overrides: list[str], groups: tuple[str, ...] = ()) -> str | None:
    """For a command line Hydra refused: name the first unknown key and the keys allowed there.

    Hydra's own message names the unknown key but not what is allowed; ``groups`` are the
    config group names (``data``, ``experiment``, ``sweep`` ...) that may appear as keys.
    """
    import dataclasses
    import typing

    for item in overrides:
        key, sep, _ = item.partition("=")
        key = key.lstrip("+~")
        if not sep or item.startswith("-") or not key or key.startswith("hydra"):
            continue
        if "/" in key or "@" in key or ("." not in key and key in groups):
            continue  # a group choice (data=csv, +sweep=base)
        node: Any = Config
        parts = key.split(".")
        for i, part in enumerate(parts):
            hints = typing.get_type_hints(node)
            name = part.split("[")[0]
            if name not in hints:
                where = ".".join(parts[:i]) or "the config"
                allowed = ", ".join(f.name for f in dataclasses.fields(node))
                return f"{key} is not a config key: {where} has {allowed}"
            if not dataclasses.is_dataclass(hints[name]):
                if i < len(parts) - 1:
                    return f"{key} is not a config key: {'.'.join(parts[: i + 1])} is a value"
                break
            node = hints[name]
    return None

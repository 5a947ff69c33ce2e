"""The one config schema: structured configs registered with Hydra, and their validation.

Every key a run reads is declared here with its type and default. ``conf/config.yaml``
puts ``config_schema`` first in its defaults list, so every YAML file and every override is
merged into these typed nodes: Hydra refuses an unknown key, a wrong type, and a choice
that is not one of its Enum's members (naming the key and listing the members). The
choices come from where they are implemented: activations and losses from the engine's
tables, data sources from :data:`mlplab.data.SOURCES`. :func:`validate` then checks
ranges and combinations before any work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import math
import os
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError
from yaml import YAMLError

from mlplab.data import SOURCES, TASKS
from mlplab.errors import ConfigError, UserError
from mlplab.nn.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from mlplab.nn.losses import LOSSES, REDUCTIONS
from mlplab.nn.network import INITS
from mlplab.nn.optimizers import OPTIMIZERS, SCHEDULES, OptimizerSpec

DTYPES = ("float64", "float32")


def _choices(name: str, values: Iterable[str]) -> type[StrEnum]:
    """An Enum of config choices (member name = value = the text in YAML and overrides)."""
    return StrEnum(name, {v: v for v in values}, module=__name__)  # type: ignore[return-value]


if TYPE_CHECKING:  # to the type checker a choice is its text
    DataName: TypeAlias = str
    Task: TypeAlias = str
    HiddenActivation: TypeAlias = str
    OutputActivation: TypeAlias = str
    InitMethod: TypeAlias = str
    OptimizerName: TypeAlias = str
    Schedule: TypeAlias = str
    LossName: TypeAlias = str
    Reduction: TypeAlias = str
    DType: TypeAlias = str
else:
    DataName = _choices("DataName", SOURCES)
    Task = _choices("Task", TASKS)
    HiddenActivation = _choices("HiddenActivation", HIDDEN_ACTIVATIONS)
    OutputActivation = _choices("OutputActivation", OUTPUT_ACTIVATIONS)
    InitMethod = _choices("InitMethod", (*INITS, "file"))
    OptimizerName = _choices("OptimizerName", OPTIMIZERS)
    Schedule = _choices("Schedule", SCHEDULES)
    LossName = _choices("LossName", LOSSES)
    Reduction = _choices("Reduction", REDUCTIONS)
    DType = _choices("DType", DTYPES)


@dataclass
class DataConfig:
    """Where the samples come from and how they are split."""

    name: DataName = "tutorial"
    task: Task = "regression"
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
    activation: HiddenActivation = "sigmoid"
    output_activation: OutputActivation = "sigmoid"
    negative_slope: float = 0.01
    init: InitMethod = "normal"
    init_scale: float = 1.0
    init_file: str | None = None


@dataclass
class OptimizerConfig(OptimizerSpec):
    """Update rule (PyTorch conventions: the engine's spec) and learning-rate schedule."""

    name: OptimizerName = "sgd"
    schedule: Schedule = "constant"
    step_size: int = 1000
    gamma: float = 0.5


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 10000
    batch_size: int | None = None
    shuffle: bool = True
    loss: LossName = "mse"
    reduction: Reduction = "sum"
    tol: float = 1e-6
    patience: int | None = None
    dtype: DType = "float64"
    gradcheck: bool = False
    gradcheck_threshold: float = 1e-5
    progress: bool = True
    #: BLAS threads while a run computes: pinned, so that its weights do not depend on how
    #: many threads the process happens to have (a sweep worker has one, a laptop sixteen)
    blas_threads: int = 2


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
    #: a sweep's best child: its model registered under the experiment's name, alias ``best``
    register_best: bool = False
    #: at most this many points per metric history in MLflow (the whole history is an artifact)
    max_points: int = 10000


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


def hydra_job_context() -> tuple[list[str], Path, bool]:
    """The running Hydra job's overrides (as typed), output folder, and whether it is a sweep's."""
    hc = HydraConfig.get()
    # unresolved: an override holding ${...} is the user's text, not an interpolation to run
    task = OmegaConf.to_container(hc.overrides.task, resolve=False)
    overrides = [str(o) for o in task] if isinstance(task, list) else []
    return overrides, Path(hc.runtime.output_dir), hc.mode == RunMode.MULTIRUN


#: The longest job folder name kept as it is (file systems refuse names over 255 bytes).
MAX_JOB_DIR = 120


def job_dir(num: int, override_dirname: str) -> str:
    """A sweep job's folder: ``<num>-<its overrides>``, or, when that is too long, the start
    of the overrides and a hash of all of them (the run name and ``overrides.yaml`` keep
    them whole). A ``/`` (a swept file's path) becomes ``_``: one folder per job, not a tree."""
    override_dirname = override_dirname.replace("/", "_")
    name = f"{num}-{override_dirname}" if override_dirname else str(num)
    if len(name.encode()) <= MAX_JOB_DIR:
        return name
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:12]
    return f"{num}-{override_dirname.encode()[:80].decode(errors='ignore')}-{digest}"


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore as ``config_schema``, and the resolvers
    ``mlplab.job_dir``, which names a sweep's job folders (conf/sweep/base.yaml), and
    ``mlplab.env``, an environment variable or a default (conf/tracking/)."""
    ConfigStore.instance().store(name="config_schema", node=Config)
    OmegaConf.register_new_resolver("mlplab.job_dir", job_dir, replace=True)
    OmegaConf.register_new_resolver("mlplab.env", env_or, replace=True)


def env_or(name: str, default: str) -> str:
    """``$name``, or ``default`` when it is unset or empty (as MLflow reads its variables;
    OmegaConf's ``oc.env`` would give an empty value)."""
    return os.environ.get(name) or default


@functools.cache
def _schema() -> DictConfig:
    """The schema as an empty structured config, made once (20 ms): merges copy it."""
    return OmegaConf.structured(Config)


def _plain(value: Any) -> Any:
    """``value`` with every choice (a StrEnum) as its text, for YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, StrEnum) else value


def config_yaml(cfg: Config) -> str:
    """The YAML of ``cfg`` that :func:`recorded_config` reads back (a run's config.yaml)."""
    return OmegaConf.to_yaml(_plain(dataclasses.asdict(cfg)))


def to_config(cfg: Any) -> Config:
    """Turn a composed DictConfig (possibly with a ``hydra`` node) into a typed :class:`Config`."""
    if isinstance(cfg, Config):
        return cfg
    try:
        if isinstance(cfg, DictConfig):
            container = OmegaConf.to_container(cfg, resolve=True)
        else:
            container = dict(cfg)
        assert isinstance(container, dict)
        container.pop("hydra", None)
        obj = OmegaConf.to_object(OmegaConf.merge(_schema(), container))
    except OmegaConfBaseException as exc:  # e.g. +model.depth=3 passes Hydra, not the schema
        raise schema_error(exc) from None
    assert isinstance(obj, Config)
    return obj


def recorded_config(text: str, dotlist: Sequence[str] = ()) -> Config:
    """A run's recorded ``config.yaml`` merged into the schema, ``key=value`` items on top."""
    try:
        merged = OmegaConf.merge(
            _schema(),
            OmegaConf.create(text),
            OmegaConf.from_dotlist(list(dotlist)),
        )
        cfg = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, YAMLError) as exc:  # YAMLError: a value such as [2
        msg = str(exc).strip().splitlines()[0]
        raise UserError(
            f"the recorded config with {' '.join(dotlist) or 'no overrides'} is not valid: {msg}"
        ) from None
    assert isinstance(cfg, Config)
    return cfg


#: Hydra's parser of command-line overrides (its grammar: sweeps, range(), quotes).
OVERRIDES = OverridesParser.create()


def value_error(overrides: Iterable[Override], cfg: DictConfig | None = None) -> UserError | None:
    """The first value of ``overrides`` (each of a sweep's values) that the schema cannot
    hold, a type or a choice, put in ``cfg`` (default: the bare schema) as Hydra puts it;
    its one line. Hydra's own message is several lines (and a sweep's stops mid-way)."""
    work = copy.deepcopy(_schema() if cfg is None else cfg)  # each value replaces the last
    for o in overrides:
        if o.is_hydra_override() or (o.is_sweep_override() and not o.is_discrete_sweep()):
            continue
        try:
            values = (
                list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_string()]
            )
        except ValueError as exc:  # range(0,4,0)
            return UserError(f"{o.input_line}: {exc}")
        if not values:  # range(4,0)
            return UserError(f"{o.input_line}: sweeps no value; a sweep needs at least one")
        for value in values:
            item = OVERRIDES.parse_overrides([f"{o.get_key_element()}={value}"])
            try:
                ConfigLoaderImpl._apply_overrides_to_config(item, work)
            except HydraException as exc:
                if isinstance(exc.__cause__, ValidationError):
                    return schema_error(exc.__cause__)
    return None


def choice_error(
    overrides: Iterable[Override], options: typing.Callable[[str], list[str]]
) -> UserError | None:
    """The first option of ``overrides`` (each of a sweep's values) that its config group
    lacks, in one line with the group's ``options(group)`` (empty for a key, not a group);
    Hydra's message is a dozen lines."""
    for o in overrides:
        if o.package or o.is_delete() or (o.is_sweep_override() and not o.is_discrete_sweep()):
            continue
        found = options(o.key_or_group)
        if not found:
            continue
        try:
            chosen = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        except HydraException:  # glob(...): Hydra lists the options itself
            continue
        for value in map(str, chosen):
            if value not in found:
                return UserError(
                    f"{o.key_or_group}={value} is not an option: "
                    f"{o.key_or_group} has {', '.join(found)}"
                )
    return None


def schema_error(exc: Exception) -> UserError:
    """One line for a value or key the typed schema refuses."""
    key = str(getattr(exc, "full_key", "") or "")
    hint = unknown_key_hint([f"{key}=?"]) if key else None
    if hint:
        return UserError(hint)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return UserError(f"{key or 'the config'}: {first}")


# -- validation: ranges and combinations (choices are the schema's Enums) ----------------
def _at_least(key: str, value: int, low: int, note: str = "") -> None:
    if value < low:
        raise ConfigError(key, value, f"an integer >= {low}{note}")


def _positive(key: str, value: float | int, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        raise ConfigError(key, value, "a number >= 0" if allow_zero else "a number > 0")


def _unit_interval(key: str, value: float, what: str = "0 <= value < 1") -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(key, value, what)


def _existing_file(key: str, path: str | None, what: str) -> None:
    if not path:
        raise ConfigError(key, path, f"the path of {what}")
    if not Path(path).is_file():
        raise ConfigError(key, path, f"an existing {what}")


def _validate_data(d: DataConfig) -> None:
    for key in ("n_samples", "n_features", "n_outputs", "teacher_hidden"):
        _at_least(f"data.{key}", getattr(d, key), 1)
    _at_least("data.n_classes", d.n_classes, 2)
    _positive("data.noise", d.noise, allow_zero=True)
    _unit_interval("data.test_fraction", d.test_fraction, "a fraction with 0 <= value < 1")
    _unit_interval("data.val_fraction", d.val_fraction, "a fraction with 0 <= value < 1")
    if d.test_fraction + d.val_fraction >= 1.0:
        raise ConfigError(
            "data.val_fraction",
            d.val_fraction,
            f"test_fraction + val_fraction < 1 (test_fraction is {d.test_fraction})",
        )
    if d.name == "csv":
        _existing_file("data.path", d.path, "CSV file (data.name=csv)")
    source = SOURCES[d.name]
    if d.task not in source.tasks:
        raise ConfigError("data.task", d.task, f"{' or '.join(source.tasks)} (data.name={d.name})")
    if d.name == "moons" and d.n_classes != 2:
        raise ConfigError("data.n_classes", d.n_classes, "2 (data.name=moons: two half circles)")
    for key, fixed in source.fixed.items():
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


def _validate_model(m: ModelConfig) -> None:
    for i, width in enumerate(m.hidden):
        if width < 1:
            raise ConfigError(f"model.hidden[{i}]", width, "layer widths >= 1")
    # leaky_relu is computed as max(z, slope·z): only right for 0 <= slope < 1
    _unit_interval("model.negative_slope", m.negative_slope, "0 <= negative_slope < 1")
    _positive("model.init_scale", m.init_scale)
    if m.init == "file":
        _existing_file("model.init_file", m.init_file, ".npz weight file (model.init=file)")
    elif m.init_file:  # it would be ignored: the weights are drawn
        raise ConfigError(
            "model.init_file",
            m.init_file,
            f"null with model.init={m.init} (set model.init=file to start from the file)",
        )


def _validate_optimizer(o: OptimizerConfig) -> None:
    _positive("optimizer.lr", o.lr)
    _unit_interval("optimizer.momentum", o.momentum, "0 <= momentum < 1")
    if o.nesterov and o.momentum <= 0:
        raise ConfigError("optimizer.nesterov", o.nesterov, "false unless optimizer.momentum > 0")
    if o.name == "adam" and o.momentum:  # it would be logged as a param and do nothing
        raise ConfigError(
            "optimizer.momentum", o.momentum, "0 with adam (its momentum is optimizer.beta1)"
        )
    _unit_interval("optimizer.beta1", o.beta1)
    _unit_interval("optimizer.beta2", o.beta2)
    _positive("optimizer.eps", o.eps)
    _positive("optimizer.weight_decay", o.weight_decay, allow_zero=True)
    _at_least("optimizer.step_size", o.step_size, 1)
    _positive("optimizer.gamma", o.gamma)


def _validate_train(cfg: Config) -> None:
    t, d, m = cfg.train, cfg.data, cfg.model
    _at_least("train.epochs", t.epochs, 1)
    if t.batch_size is not None:
        _at_least("train.batch_size", t.batch_size, 1, ", or null (full batch)")
    _positive("train.tol", t.tol, allow_zero=True)
    if t.patience is not None:
        _at_least("train.patience", t.patience, 1, ", or null (off)")
        if d.val_fraction <= 0:
            raise ConfigError(
                "train.patience", t.patience, "null unless data.val_fraction > 0 (early stopping)"
            )
    _positive("train.gradcheck_threshold", t.gradcheck_threshold)
    _at_least("train.blas_threads", t.blas_threads, 1)
    if (m.output_activation == "softmax") != (t.loss == "cross_entropy"):
        raise ConfigError(
            "train.loss",
            t.loss,
            "cross_entropy together with model.output_activation=softmax, "
            "and mse with any other output activation",
        )
    if (t.loss == "cross_entropy") != (d.task == "classification"):
        if d.task == "classification":  # e.g. data=spiral alone: its experiment sets both
            wanted = (
                "cross_entropy when data.task=classification, with "
                "model.output_activation=softmax (experiment=spiral and experiment=iris set both)"
            )
        else:
            wanted = "mse unless data.task=classification"
        raise ConfigError("train.loss", t.loss, wanted)


def _validate_output(cfg: Config) -> None:
    tr = cfg.tracking
    _at_least("tracking.timeout", tr.timeout, 1, " (seconds)")
    _at_least("tracking.retries", tr.retries, 0)
    if not tr.experiment:
        raise ConfigError("tracking.experiment", tr.experiment, "a non-empty name")
    _at_least("tracking.data_max_rows", tr.data_max_rows, 0, " (0 = never)")
    _at_least("tracking.max_points", tr.max_points, 2)
    _at_least("plot.dpi", cfg.plot.dpi, 1)
    _at_least("plot.frames", cfg.plot.frames, 2)
    _at_least("trace.max_rows", cfg.trace.max_rows, 1)


def validate(cfg: Config) -> None:
    """Check ranges and combinations; raise :class:`ConfigError` on the first bad one."""
    _at_least("seed", cfg.seed, 0)
    _validate_data(cfg.data)
    _validate_model(cfg.model)
    _validate_optimizer(cfg.optimizer)
    _validate_train(cfg)
    _validate_output(cfg)


#: Keys a sweep or a study sets on its jobs: never part of a run's name or a job's label.
INJECTED_PREFIXES = ("tracking.", "hydra.")
#: What a sweep hands its jobs through the environment (Hydra's ``hydra.job.env_set``), so
#: that Hydra's job lines show the user's own overrides only.
SWEEP_ENV = {
    "tracking.uri": "MLPLAB_TRACKING_URI",
    "tracking.experiment": "MLPLAB_TRACKING_EXPERIMENT",
    "tracking.parent_run_id": "MLPLAB_PARENT_RUN_ID",
    "tracking.run_name": "MLPLAB_RUN_NAME",
}
#: The script that launched a sweep, handed to its jobs the same way: a job run by Ray's or
#: submitit's worker records it as its source (``mlflow.source.name``), not the worker's.
ENTRY_POINT_ENV = "MLPLAB_ENTRY_POINT"
#: The process id of the process that launches a multirun, in its environment (and its
#: workers', who are other processes): a job run in it (Hydra's basic launcher) stops the
#: sweep when it is interrupted; a job in a launcher's worker stops only itself.
SWEEP_PROCESS_ENV = "MLPLAB_SWEEP_PROCESS"


def in_sweep_process() -> bool:
    """This job runs in the process that launched its multirun."""
    return os.environ.get(SWEEP_PROCESS_ENV) == str(os.getpid())


def override_key(item: str) -> str:
    """``+model.hidden=[4]`` → ``model.hidden``."""
    return item.partition("=")[0].lstrip("+~")


def user_overrides(overrides: Iterable[str]) -> list[str]:
    """The overrides the user gave, without the ones sweeps and Hydra add."""
    return [o for o in overrides if not override_key(o).startswith(INJECTED_PREFIXES)]


def unknown_key_hint(overrides: list[str], groups: tuple[str, ...] = ()) -> str | None:
    """The first unknown key of a command line, named with the keys allowed there (checked
    before Hydra composes: its message names the key, not what is allowed, and advises
    ``+key=``, which the schema refuses too); ``groups`` are the config group names
    (``data``, ``experiment``, ``sweep`` ...) that may appear as keys.
    """
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

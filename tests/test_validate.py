"""``mlplab.config``: every range and combination ``validate`` checks, with its message and
its edge, and the helpers that turn Hydra's input into a typed config (in this process;
``test_validation.py`` runs the same refusals through the CLI).

Each refusal names the key, the bad value and what is allowed (SPEC §8), as
``key=value is not allowed: expected ...``; each edge value just inside a range passes.
"""

from __future__ import annotations

import hashlib
import math
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from conftest import CONF, compose_config
from mlplab import config as config_module
from mlplab.config import (
    MAX_JOB_DIR,
    Config,
    config_yaml,
    hydra_job_context,
    job_dir,
    override_key,
    recorded_config,
    register_configs,
    schema_error,
    to_config,
    unknown_key_hint,
    user_overrides,
    validate,
)
from mlplab.errors import ConfigError, UserError
from mlplab.nn.activations import HIDDEN_ACTIVATIONS

IRIS = str(Path(__file__).resolve().parents[1] / "data" / "iris.csv")
INF, NAN = math.inf, math.nan
CLASSIFIER = {
    "data.name": "spiral",
    "data.task": "classification",
    "model.output_activation": "softmax",
    "train.loss": "cross_entropy",
}


def configured(changes: dict[str, Any]) -> Config:
    """The default config (the tutorial) with dotted keys set."""
    cfg = Config()
    for key, value in changes.items():
        node_name, _, attr = key.rpartition(".")
        setattr(getattr(cfg, node_name) if node_name else cfg, attr, value)
    return cfg


def refusal(changes: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(configured(changes))
    return info.value


def test_the_defaults_pass() -> None:
    validate(Config())


# (the changes, the key named, what is allowed); the value named is the changed key's
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"seed": -1}, "seed", "an integer >= 0"),
    ({"data.n_samples": 0}, "data.n_samples", "an integer >= 1"),
    ({"data.n_features": 0}, "data.n_features", "an integer >= 1"),
    ({"data.n_outputs": 0}, "data.n_outputs", "an integer >= 1"),
    ({"data.teacher_hidden": 0}, "data.teacher_hidden", "an integer >= 1"),
    ({"data.n_classes": 1}, "data.n_classes", "an integer >= 2"),
    ({"data.noise": -0.1}, "data.noise", "a number >= 0"),
    ({"data.noise": INF}, "data.noise", "a number >= 0"),
    ({"data.test_fraction": 1.0}, "data.test_fraction", "a fraction with 0 <= value < 1"),
    ({"data.test_fraction": -0.1}, "data.test_fraction", "a fraction with 0 <= value < 1"),
    ({"data.val_fraction": 1.0}, "data.val_fraction", "a fraction with 0 <= value < 1"),
    (
        {"data.test_fraction": 0.5, "data.val_fraction": 0.5},
        "data.val_fraction",
        "test_fraction + val_fraction < 1 (test_fraction is 0.5)",
    ),
    ({"data.name": "csv"}, "data.path", "the path of CSV file (data.name=csv)"),
    ({"data.name": "csv", "data.path": ""}, "data.path", "the path of CSV file (data.name=csv)"),
    (
        {"data.name": "csv", "data.path": "/nonexistent/d.csv"},
        "data.path",
        "an existing CSV file (data.name=csv)",
    ),
    ({"data.name": "spiral"}, "data.task", "classification (data.name=spiral)"),
    (
        {**CLASSIFIER, "data.name": "moons", "data.n_classes": 3},
        "data.n_classes",
        "2 (data.name=moons: two half circles)",
    ),
    (
        {"data.name": "xor", "data.n_features": 3},
        "data.n_features",
        "2: data.name=xor has a fixed shape (choose it with data=xor, which sets the shape)",
    ),
    (
        {"data.name": "sine", "data.n_features": 1},
        "data.n_outputs",
        "1: data.name=sine has a fixed shape (choose it with data=sine, which sets the shape)",
    ),
    (
        {"data.n_outputs": 3},
        "data.n_outputs",
        "data.n_features (2): the tutorial maps each input to one output",
    ),
    ({"model.hidden": [4, 0]}, "model.hidden[1]", "layer widths >= 1"),
    ({"model.hidden": [-3]}, "model.hidden[0]", "layer widths >= 1"),
    ({"model.negative_slope": 1.0}, "model.negative_slope", "0 <= negative_slope < 1"),
    ({"model.negative_slope": -0.01}, "model.negative_slope", "0 <= negative_slope < 1"),
    ({"model.init_scale": 0.0}, "model.init_scale", "a number > 0"),
    ({"model.init_scale": NAN}, "model.init_scale", "a number > 0"),
    ({"model.init": "file"}, "model.init_file", "the path of .npz weight file (model.init=file)"),
    (
        {"model.init": "file", "model.init_file": "/nonexistent/w.npz"},
        "model.init_file",
        "an existing .npz weight file (model.init=file)",
    ),
    (
        {"model.init_file": "weights/textbook.npz"},
        "model.init_file",
        "null with model.init=normal (set model.init=file to start from the file)",
    ),
    ({"optimizer.lr": 0.0}, "optimizer.lr", "a number > 0"),
    ({"optimizer.lr": -0.1}, "optimizer.lr", "a number > 0"),
    ({"optimizer.lr": INF}, "optimizer.lr", "a number > 0"),
    ({"optimizer.momentum": 1.0}, "optimizer.momentum", "0 <= momentum < 1"),
    ({"optimizer.momentum": -0.5}, "optimizer.momentum", "0 <= momentum < 1"),
    (
        {"optimizer.nesterov": True},
        "optimizer.nesterov",
        "false unless optimizer.momentum > 0",
    ),
    (
        {"optimizer.name": "adam", "optimizer.momentum": 0.9},
        "optimizer.momentum",
        "0 with adam (its momentum is optimizer.beta1)",
    ),
    ({"optimizer.beta1": 1.0}, "optimizer.beta1", "0 <= value < 1"),
    ({"optimizer.beta2": 1.0}, "optimizer.beta2", "0 <= value < 1"),
    ({"optimizer.beta2": -0.1}, "optimizer.beta2", "0 <= value < 1"),
    ({"optimizer.eps": 0.0}, "optimizer.eps", "a number > 0"),
    ({"optimizer.weight_decay": -1e-3}, "optimizer.weight_decay", "a number >= 0"),
    ({"optimizer.weight_decay": NAN}, "optimizer.weight_decay", "a number >= 0"),
    ({"optimizer.step_size": 0}, "optimizer.step_size", "an integer >= 1"),
    ({"optimizer.gamma": 0.0}, "optimizer.gamma", "a number > 0"),
    ({"train.epochs": 0}, "train.epochs", "an integer >= 1"),
    ({"train.batch_size": 0}, "train.batch_size", "an integer >= 1, or null (full batch)"),
    ({"train.tol": -1e-9}, "train.tol", "a number >= 0"),
    (
        {"train.patience": 0, "data.val_fraction": 0.2},
        "train.patience",
        "an integer >= 1, or null (off)",
    ),
    (
        {"train.patience": 5},
        "train.patience",
        "null unless data.val_fraction > 0 (early stopping)",
    ),
    ({"train.gradcheck_threshold": 0.0}, "train.gradcheck_threshold", "a number > 0"),
    ({"train.blas_threads": 0}, "train.blas_threads", "an integer >= 1"),
    (
        {"model.output_activation": "softmax"},
        "train.loss",
        "cross_entropy together with model.output_activation=softmax, "
        "and mse with any other output activation",
    ),
    (
        {"train.loss": "cross_entropy"},
        "train.loss",
        "cross_entropy together with model.output_activation=softmax, "
        "and mse with any other output activation",
    ),
    (
        {"model.output_activation": "softmax", "train.loss": "cross_entropy"},
        "train.loss",
        "mse unless data.task=classification",
    ),
    (
        {"data.name": "spiral", "data.task": "classification"},
        "train.loss",
        "cross_entropy when data.task=classification, with model.output_activation=softmax "
        "(experiment=spiral and experiment=iris set both)",
    ),
    ({"tracking.timeout": 0}, "tracking.timeout", "an integer >= 1 (seconds)"),
    ({"tracking.retries": -1}, "tracking.retries", "an integer >= 0"),
    ({"tracking.experiment": ""}, "tracking.experiment", "a non-empty name"),
    ({"tracking.data_max_rows": -1}, "tracking.data_max_rows", "an integer >= 0 (0 = never)"),
    ({"tracking.max_points": 1}, "tracking.max_points", "an integer >= 2"),
    ({"plot.dpi": 0}, "plot.dpi", "an integer >= 1"),
    ({"plot.frames": 1}, "plot.frames", "an integer >= 2"),
    ({"trace.max_rows": 0}, "trace.max_rows", "an integer >= 1"),
]


def _value(cfg: Config, key: str) -> Any:
    node_name, _, attr = key.rpartition(".")
    name, _, index = attr.partition("[")
    value = getattr(getattr(cfg, node_name) if node_name else cfg, name)
    return value[int(index[:-1])] if index else value


@pytest.mark.parametrize(
    ("changes", "key", "allowed"), REFUSED, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(REFUSED)]
)
def test_a_bad_value_is_refused_naming_key_value_and_what_is_allowed(
    changes: dict[str, Any], key: str, allowed: str
) -> None:
    err = refusal(changes)
    value = _value(configured(changes), key)
    assert str(err) == f"{key}={value!r} is not allowed: expected {allowed}"
    assert (err.key, err.allowed) == (key, allowed)
    assert err.value is value or (err.value != err.value and value != value)  # nan


# values at the edge of what is allowed
ACCEPTED: list[dict[str, Any]] = [
    {"seed": 0},
    {"data.n_samples": 1, "data.teacher_hidden": 1, "data.n_classes": 2},
    {"data.n_features": 1, "data.n_outputs": 1},
    {"data.noise": 0.0, "data.test_fraction": 0.0, "data.val_fraction": 0.0},
    {"data.test_fraction": 0.5, "data.val_fraction": 0.4999},
    {"data.test_fraction": 0.9999},
    {"data.name": "csv", "data.path": IRIS},
    {"data.name": "regression", "data.n_features": 5, "data.n_outputs": 3},
    {**CLASSIFIER},
    {**CLASSIFIER, "data.name": "moons", "data.n_classes": 2},
    {"data.name": "xor", "data.n_outputs": 1},
    {"data.name": "sine", "data.n_features": 1, "data.n_outputs": 1},
    {"model.hidden": [1]},
    {"model.hidden": []},
    {"model.negative_slope": 0.0},
    {"model.negative_slope": 0.999},
    {"model.init_scale": 1e-300},
    {"model.init": "xavier"},
    {"optimizer.lr": 1e-300, "optimizer.eps": 1e-300, "optimizer.gamma": 1e-300},
    {"optimizer.momentum": 0.999, "optimizer.nesterov": True},
    {"optimizer.beta1": 0.0, "optimizer.beta2": 0.0, "optimizer.weight_decay": 0.0},
    {"optimizer.beta1": 0.9999, "optimizer.beta2": 0.9999, "optimizer.step_size": 1},
    {"train.epochs": 1, "train.batch_size": 1, "train.tol": 0.0, "train.blas_threads": 1},
    {"train.batch_size": None},
    {"train.patience": 1, "data.val_fraction": 0.01},
    {"train.gradcheck_threshold": 1e-300},
    {"tracking.timeout": 1, "tracking.retries": 0, "tracking.data_max_rows": 0},
    {"tracking.max_points": 2, "plot.dpi": 1, "plot.frames": 2, "trace.max_rows": 1},
]


@pytest.mark.parametrize("changes", ACCEPTED, ids=[",".join(c) for c in ACCEPTED])
def test_a_value_at_the_edge_is_accepted(changes: dict[str, Any]) -> None:
    validate(configured(changes))


def test_an_existing_weight_file_is_accepted(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", W0=np.zeros((3, 2)), W1=np.zeros((3, 2)))
    validate(configured({"model.init": "file", "model.init_file": str(tmp_path / "w.npz")}))


# -- the helpers -------------------------------------------------------------------------------
def test_a_sweep_job_folder_is_named_after_its_overrides() -> None:
    assert job_dir(3, "model.hidden=[4],seed=1") == "3-model.hidden=[4],seed=1"
    assert job_dir(0, "") == "0"
    assert job_dir(1, "data.path=/d/a.csv,seed=0") == "1-data.path=_d_a.csv,seed=0"  # no tree
    fits = "x" * (MAX_JOB_DIR - 3)
    assert job_dir(12, fits) == f"12-{fits}" and len(job_dir(12, fits)) == MAX_JOB_DIR
    long = "optimizer.lr=0.1," + "é" * 100  # 217 bytes: cut at 80 bytes, a hash of all
    name = job_dir(12, long)
    digest = hashlib.sha256(long.encode()).hexdigest()[:12]
    assert name == f"12-{long.encode()[:80].decode(errors='ignore')}-{digest}"
    assert name.startswith("12-optimizer.lr=0.1,éé") and len(name.encode()) <= MAX_JOB_DIR
    assert job_dir(12, fits + "y") != job_dir(12, fits + "z")  # the hash keeps them apart


def test_override_keys_and_the_users_own_overrides() -> None:
    assert override_key("+model.hidden=[4]") == "model.hidden"
    assert override_key("~seed") == "seed"
    assert override_key("++train.tol=0") == "train.tol"
    assert override_key("seed") == "seed"
    given = ["seed=1", "tracking.uri=sqlite:///x", "+hydra.job.num=2", "model.hidden=[2]"]
    assert user_overrides(given) == ["seed=1", "model.hidden=[2]"]


SCHEMA_FIELDS = "seed, data, model, optimizer, train, tracking, plot, trace"


@pytest.mark.parametrize(
    ("overrides", "hint"),
    [
        (["model.depth=3"], "model.depth is not a config key: model has "
         "hidden, activation, output_activation, negative_slope, init, init_scale, init_file"),
        (["seed=2", "sede=3"], f"sede is not a config key: the config has {SCHEMA_FIELDS}"),
        (["+optimizer.rho=0.9"], "optimizer.rho is not a config key: optimizer has name, lr, "
         "momentum, nesterov, beta1, beta2, eps, weight_decay, schedule, step_size, gamma"),
        (["seed.x=1"], "seed.x is not a config key: seed is a value"),
        (["model.hidden.x=1"], "model.hidden.x is not a config key: model.hidden is a value"),
        (["model.hidden[0]=3", "seed=1"], None),
        (["data=csv", "experiment=xor", "+sweep=base", "hydra/launcher=basic"], None),
        (["--cfg", "job", "hydra.verbose=true", "=3", "seed", "--config-dir=conf"], None),
        (["+data@x=csv", "model/x=1", "tracking.experiment=a=b"], None),
        (["hydra.verbose=true", "data=csv", "modle.hidden=[2]"],
         f"modle.hidden is not a config key: the config has {SCHEMA_FIELDS}"),
    ],
)  # fmt: skip
def test_an_unknown_key_is_named_with_the_keys_allowed_there(
    overrides: list[str], hint: str | None
) -> None:
    groups = ("data", "experiment", "sweep")
    assert unknown_key_hint(overrides, groups) == hint


def test_an_unknown_group_name_without_groups_is_a_key() -> None:
    assert unknown_key_hint(["sweep=base"]) == (
        f"sweep is not a config key: the config has {SCHEMA_FIELDS}"
    )


def test_schema_refusals_are_one_line_naming_the_key() -> None:
    with pytest.raises(UserError) as info:
        to_config({"optimizer": {"lr": "fast"}})
    assert str(info.value) == (
        "optimizer.lr: Value 'fast' of type 'str' could not be converted to Float"
    )
    with pytest.raises(UserError) as info:
        to_config({"model": {"depth": 3}})
    assert str(info.value).startswith("model.depth is not a config key: model has hidden,")
    assert str(schema_error(ValueError("first\nsecond"))) == "the config: first"
    assert str(schema_error(ValueError(""))) == "the config: ValueError"


def test_to_config_takes_a_composed_config_a_dict_or_a_config() -> None:
    cfg = Config()
    assert to_config(cfg) is cfg
    typed = to_config({"seed": 4, "hydra": {"run": {"dir": "x"}}, "model": {"hidden": [3]}})
    assert isinstance(typed, Config) and typed.seed == 4 and typed.model.hidden == [3]
    composed = OmegaConf.create({"seed": 5, "train": {"epochs": "${seed}"}})
    assert to_config(composed).train.epochs == 5  # interpolations resolved


def test_config_yaml_is_omegaconfs_yaml_and_reads_back() -> None:
    """A run's config.yaml: choices as their names, lists as lists, the same text OmegaConf
    writes for the structured config, and read back to the same config."""
    cfg = compose_config("optimizer=adam", "model.hidden=[3,4]", "model.activation=relu")
    text = config_yaml(cfg)
    assert text == OmegaConf.to_yaml(OmegaConf.structured(cfg))
    recorded = yaml.safe_load(text)
    assert recorded["optimizer"]["name"] == "adam" and recorded["model"]["hidden"] == [3, 4]
    assert recorded["model"]["activation"] == "relu"
    assert recorded_config(text) == cfg


def test_a_recorded_config_is_read_back_with_overrides() -> None:
    text = OmegaConf.to_yaml(OmegaConf.structured(Config(seed=7)))
    assert recorded_config(text) == Config(seed=7)
    again = recorded_config(text, ["optimizer.lr=0.25", "model.hidden=[3,3]"])
    assert (again.seed, again.optimizer.lr, again.model.hidden) == (7, 0.25, [3, 3])
    with pytest.raises(UserError) as info:
        recorded_config(text, ["optimizer.lr=fast"])
    assert str(info.value) == (
        "the recorded config with optimizer.lr=fast is not valid: "
        "Value 'fast' of type 'str' could not be converted to Float"
    )
    with pytest.raises(UserError, match=r"^the recorded config with seed=1 model.x=2 is not valid"):
        recorded_config(text, ["seed=1", "model.x=2"])
    with pytest.raises(UserError, match=r"^the recorded config with no overrides is not valid: "):
        recorded_config("model:\n  depth: 3\n")


def test_config_choices_are_enums_of_the_engines_names() -> None:
    choices = config_module._choices("Demo", ["a", "b_c"])
    assert [m.value for m in choices] == ["a", "b_c"] and choices("b_c") == "b_c"
    assert choices.__name__ == "Demo" and choices.__module__ == "mlplab.config"
    hidden = typing.get_type_hints(config_module.ModelConfig)["activation"]
    assert tuple(m.value for m in hidden) == HIDDEN_ACTIVATIONS


def test_register_configs_stores_the_schema_and_the_job_dir_resolver() -> None:
    register_configs()
    assert "config_schema.yaml" in ConfigStore.instance().list("/")
    node = OmegaConf.create({"d": "${mlplab.job_dir:4,'seed=2'}"})
    assert node.d == "4-seed=2"


@pytest.fixture
def hydra_job() -> Iterator[Config]:
    """A Hydra job context as ``@hydra.main`` sets it, for a composed run."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = ["seed=3", "tracking.experiment=run-${seed}"]
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/tmp/mlplab-job"
    HydraConfig.instance().set_config(cfg)
    yield cfg
    HydraConfig.instance().cfg = None


def test_hydra_job_context_gives_overrides_folder_and_mode(hydra_job: Any) -> None:
    overrides, out_dir, multirun = hydra_job_context()
    # as typed: an interpolation in an override is the user's text, not resolved
    assert overrides == ["seed=3", "tracking.experiment=run-${seed}"]
    assert (out_dir, multirun) == (Path("/tmp/mlplab-job"), False)
    assert yaml.safe_load(OmegaConf.to_yaml(hydra_job))["seed"] == 3

"""Every config in conf/ composes into the one schema and passes validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose
from omegaconf import OmegaConf

from mlplab.config import Config, to_config, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["data", "model", "optimizer", "train", "tracking", "plot", "trace"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_is_the_tutorial_experiment(make_cfg):
    """The defaults are SPEC §1's experiment (the default store: tests/test_defaults.py)."""
    cfg = make_cfg()
    validate(cfg)
    assert (cfg.data.name, cfg.data.n_samples, cfg.data.n_features, cfg.data.n_outputs) == (
        "tutorial",
        50,
        2,
        2,
    )
    assert (cfg.data.noise, cfg.data.test_fraction, cfg.seed) == (0.1, 0.2, 0)
    assert cfg.model.hidden == [2]
    assert (cfg.model.activation, cfg.model.output_activation, cfg.model.init) == (
        "sigmoid",
        "sigmoid",
        "normal",
    )
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.schedule) == (
        "sgd",
        0.5,
        "constant",
    )
    assert (cfg.train.batch_size, cfg.train.reduction, cfg.train.loss) == (None, "sum", "mse")
    assert (cfg.train.tol, cfg.train.epochs, cfg.trace.enabled) == (1e-6, 10000, True)


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes_and_validates(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}")
    validate(cfg)


#: What an option needs beside it to pass validation (a classifier needs classes, ...).
COMPANIONS = {
    ("data", "csv"): ["data.path=data/iris.csv"],
    ("data", "spiral"): ["model=classifier", "train.loss=cross_entropy"],
    ("data", "moons"): ["model=classifier", "train.loss=cross_entropy"],
    ("model", "classifier"): ["data=spiral", "train.loss=cross_entropy"],
}


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_to_its_values_and_validates(make_cfg, group, option):
    """``group=option`` puts every value of conf/<group>/<option>.yaml into the config, and
    the result passes validation."""
    overrides = [f"{group}={option}", *COMPANIONS.get((group, option), [])]
    cfg = make_cfg(*overrides)  # as a run prepares it (paths and the store resolved)
    validate(cfg)
    node = getattr(to_config(compose(config_name="config", overrides=overrides)), group)
    values = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"), resolve=True)
    for key, value in values.items():
        if value != "???":  # mandatory: given by the companion override
            assert getattr(node, key) == value, f"{group}={option}: {key}"
    if group == "optimizer":
        assert cfg.optimizer.name == option  # the group option chosen is the name


def test_every_yaml_key_is_in_the_schema():
    """No YAML file sets a key the schema does not declare (Hydra would refuse it)."""
    schema = OmegaConf.structured(Config)
    for group in GROUPS:
        for path in (CONF / group).glob("*.yaml"):
            node = OmegaConf.load(path)
            for key in node:
                assert key in schema[group], f"{path}: {key}"


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (CONF / "sweep").glob("*.yaml")))
def test_every_sweep_composes(make_cfg, sweep):
    cfg = make_cfg(f"+sweep={sweep}")
    validate(cfg)

"""Every config in conf/ composes into the one schema and passes validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mlplab.config import Config, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["data", "model", "optimizer", "train", "tracking", "plot", "trace"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_is_the_tutorial_experiment(make_cfg):
    cfg = make_cfg()
    assert isinstance(cfg, Config)
    assert (cfg.data.name, cfg.data.n_samples, cfg.data.n_features, cfg.data.n_outputs) == (
        "tutorial",
        50,
        2,
        2,
    )
    assert cfg.model.hidden == [2]
    assert (cfg.model.activation, cfg.model.output_activation, cfg.model.init) == (
        "sigmoid",
        "sigmoid",
        "normal",
    )
    assert (cfg.optimizer.name, cfg.train.batch_size, cfg.train.reduction) == ("sgd", None, "sum")
    assert (cfg.train.tol, cfg.train.epochs, cfg.trace.enabled) == (1e-6, 10000, True)
    assert cfg.tracking.uri and cfg.tracking.uri.startswith("sqlite:////")


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes_and_validates(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}")
    validate(cfg)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(make_cfg, group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "csv":
        overrides.append("data.path=data/iris.csv")
    cfg = make_cfg(*overrides)
    assert isinstance(cfg, Config)
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

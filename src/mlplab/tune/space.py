"""A study's settings and its search space: ``conf/tune/<name>.yaml``, checked, then sampled.

:class:`TuneSettings` is what a study file holds; :func:`load_settings` merges the file
and the command line's ``tune.<key>=<value>`` items into it and checks them
(:class:`~mlplab.errors.ConfigError` names the bad key). The search space becomes a list
of :class:`ParamSpec`; :func:`suggest` samples one point of it from an Optuna trial as
Hydra overrides (``{config key: override value}``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
from optuna.trial import BaseTrial

from mlplab.errors import ConfigError, UserError
from mlplab.metrics import FINAL_METRICS
from mlplab.project import conf_dir


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
    """One dimension of the search space (``conditional``: one range per choice of another)."""

    key: str
    kind: str = "float"
    choices: list[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    step: float | None = None
    depends_on: str | None = None
    cases: dict[str, ParamSpec] = field(default_factory=dict)


# -- settings --------------------------------------------------------------------------------
def load_settings(name: str, dotlist: Sequence[str], conf: Path | None = None) -> TuneSettings:
    """``conf/tune/<name>.yaml`` merged into :class:`TuneSettings`, then ``key=value`` items."""
    folder = (conf or conf_dir()) / "tune"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
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
        if isinstance(exc, ConfigKeyError):
            msg += ": tune has " + ", ".join(f.name for f in dataclasses.fields(TuneSettings))
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
    objectives = (*FINAL_METRICS, "epochs_run", "train_seconds")
    if s.metric is not None and s.metric not in objectives:
        raise ConfigError("tune.metric", s.metric, "null or a run metric: " + ", ".join(objectives))
    if s.sampler not in ("tpe", "random"):
        raise ConfigError("tune.sampler", s.sampler, "tpe or random")
    if not s.space:
        raise ConfigError("tune.space", s.space, "at least one parameter to search")
    parse_space(s.space)


# -- the search space ------------------------------------------------------------------------
def _spec(key: str, raw: Any, where: str) -> ParamSpec:
    """A plain dimension: ``choices``, or ``low``/``high`` (with ``log``, ``type``, ``step``)."""
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


def _conditional(key: str, raw: dict[str, Any], space: dict[str, Any]) -> ParamSpec:
    """A dimension whose range depends on the choice made for another (``depends_on``)."""
    where = f"tune.space.{key}"
    dep = str(raw["depends_on"])
    if dep not in space or "choices" not in (space[dep] or {}):
        raise ConfigError(
            f"{where}.depends_on", dep, "another parameter of the space that has choices"
        )
    cases = raw.get("cases") or {}
    if not isinstance(cases, dict) or not cases:
        raise ConfigError(f"{where}.cases", cases, "a mapping {choice: {low, high}}")
    base = {k: v for k, v in raw.items() if k not in ("depends_on", "cases")}
    spec = ParamSpec(key, "conditional", depends_on=dep)
    for case, sub in cases.items():
        spec.cases[str(case)] = _spec(key, {**base, **(sub or {})}, f"{where}.cases.{case}")
    return spec


def parse_space(space: dict[str, Any]) -> list[ParamSpec]:
    """The search space, ordered so that a parameter comes after the one it depends on."""
    specs = [
        _conditional(str(key), raw, space)
        if isinstance(raw, dict) and "depends_on" in raw
        else _spec(str(key), raw, f"tune.space.{key}")
        for key, raw in space.items()
    ]
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


# -- points of the space ---------------------------------------------------------------------
def _active(spec: ParamSpec, chosen: dict[str, str]) -> tuple[ParamSpec, str] | None:
    """The range a dimension uses given the choices made so far, and its Optuna name.

    A conditional dimension is named ``key[choice]`` (one distribution per choice); it is
    inactive (None) when its choice has no range: the config's own value then stays.
    """
    if spec.depends_on is None:
        return spec, spec.key
    case = chosen.get(spec.depends_on)
    if case is None or case not in spec.cases:
        return None
    return spec.cases[case], f"{spec.key}[{case}]"


def suggest(trial: BaseTrial, specs: Sequence[ParamSpec]) -> dict[str, str]:
    """Sample the trial's values: ``{config key: override value}``."""
    out: dict[str, str] = {}
    for spec in specs:
        active = _active(spec, out)
        if active is None:
            continue
        p, name = active
        value: Any
        if p.kind == "categorical":
            value = trial.suggest_categorical(name, p.choices)
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
        active = _active(spec, out)
        if active is None:
            continue
        p = active[0]
        first = p.choices[0] if p.kind == "categorical" else p.low
        out[spec.key] = value_text(int(first) if p.kind == "int" else first)
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

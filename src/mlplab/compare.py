"""What differs between a run and its rerun: config keys, weights, the RMSE history.

Pure functions on plain values, for ``make rerun``'s verdict (:mod:`pipelines.rerun`): a
DIFFER names the config keys that changed, the largest |Δw| of each weight matrix and the
first epoch where the train RMSE history departs (the config's and the environment's
differences are :func:`mlplab.environment.differences` of their records).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlplab.config import INJECTED_PREFIXES
from mlplab.environment import differences

Array = np.ndarray


def config_differences(recorded: Mapping[str, Any], rerun: Mapping[str, Any]) -> list[str]:
    """``key: old → new`` for each flattened config key that differs (tracking keys, which
    say where the run is recorded, left out)."""

    def kept(config: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if not k.startswith(INJECTED_PREFIXES)}

    return differences(kept(recorded), kept(rerun))


def weight_differences(recorded: Sequence[Array], rerun: Sequence[Array]) -> list[str]:
    """The largest |Δw| of each weight matrix (or why the matrices cannot be compared)."""
    if len(recorded) != len(rerun):
        return [f"{len(recorded)} weight matrices recorded, {len(rerun)} in the rerun"]
    out = []
    for layer, (a, b) in enumerate(zip(recorded, rerun, strict=True)):
        if np.shape(a) != np.shape(b):
            out.append(f"W{layer}: shape {np.shape(a)} recorded, {np.shape(b)} in the rerun")
            continue
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        with np.errstate(invalid="ignore"):  # inf − inf: a diverged run's, where they differ
            delta = np.where(_same(a, b), 0.0, np.abs(a - b))
        out.append(f"W{layer}: max |Δw| = {float(delta.max()) if delta.size else 0.0:.3g}")
    return out


def _same(a: Array, b: Array) -> Array:
    """Where two arrays hold the same number (NaN the same as NaN: a diverged run's)."""
    return (a == b) | (np.isnan(a) & np.isnan(b))


def history_departure(
    recorded: Array, rerun: Array, steps: Sequence[int] | Array | None = None
) -> int | None:
    """The first epoch (from 1) where two train RMSE histories differ; None if they agree.
    ``steps``: the epochs of ``recorded``'s values when it does not hold them all (the points
    MLflow kept of a long history); default 1, 2, 3, ..."""
    recorded, rerun = np.asarray(recorded, np.float64), np.asarray(rerun, np.float64)
    at = np.arange(1, len(recorded) + 1) if steps is None else np.asarray(steps, np.int64)
    kept = at <= len(rerun)
    unequal = np.flatnonzero(~_same(recorded[kept], rerun[at[kept] - 1]))
    if unequal.size:
        return int(at[kept][unequal[0]])
    last = int(at[-1]) if len(at) else 0
    return None if last == len(rerun) else min(last, len(rerun)) + 1

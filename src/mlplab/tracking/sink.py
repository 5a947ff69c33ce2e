"""What a run tells its tracker: the :class:`Sink` protocol, and the sink that writes nothing.

Every sink has this interface: the store's own (:class:`~mlplab.tracking.mlflow_store.StoreSink`),
the helper process's (:class:`~mlplab.tracking.helper.BackgroundSink`), the local record
kept when a store fails (:class:`~mlplab.tracking.fallback.FallbackSink`) and
:class:`NullSink` (``tracking.enabled=false``); :class:`Relay` hands every call on to
another sink (the run lifecycle's :class:`~mlplab.tracking.lifecycle.Recorder` is one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass
class ModelRequest:
    """What a store needs to build the MLflow model (see :func:`mlplab.serving.save_model`)."""

    weights_file: Path
    network: dict[str, Any]
    X_example: np.ndarray
    Y_example: np.ndarray


@dataclass
class DataSplit:
    """One split of a run's data, logged as an MLflow dataset input."""

    name: str
    context: str  # training, validation or testing
    digest: str
    features: np.ndarray
    targets: np.ndarray
    #: the CSV file the data came from; None for a generator (described by ``generator``)
    path: str | None = None
    generator: dict[str, str] = field(default_factory=dict)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping to dotted keys with string values (lists as ``[a, b]``)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = "null" if value is None else str(value)
    return out


class Sink(Protocol):
    """What a run tells a tracker, in this order: start, logs, end (by default, nothing)."""

    @property
    def run_id(self) -> str | None:
        """The run's id in the store (None before it exists, or without a store)."""
        return None

    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        """Open the run."""
        return None

    def log_history(
        self, history: Mapping[str, np.ndarray], steps: Sequence[int] | None = None
    ) -> None:
        """Per-epoch series; ``steps`` are their epochs (default 1, 2, ...)."""
        return None

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Final (single-point) metrics."""
        return None

    def log_inputs(self, splits: Sequence[DataSplit]) -> None:
        """The data splits, as MLflow dataset inputs."""
        return None

    def log_artifacts(self, local_dir: Path) -> None:
        """Every file under ``local_dir``, keeping the relative layout."""
        return None

    def log_model(self, request: ModelRequest) -> None:
        """The trained network as an MLflow model under ``model/``."""
        return None

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags on the run."""
        return None

    def end(self, status: str) -> None:
        """Close the run as FINISHED, FAILED or KILLED."""
        return None


class NullSink(Sink):
    """Tracking disabled: nothing is written (the protocol's methods do nothing)."""

    run_id: str | None = None


class Relay(Sink):
    """A sink that hands every call to ``inner``: the base of the sinks that add to one."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner

    @property
    def run_id(self) -> str | None:
        """The inner sink's run id."""
        return self.inner.run_id

    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        """Open the run."""
        self.inner.start(params, tags, run_name)

    def log_history(
        self, history: Mapping[str, np.ndarray], steps: Sequence[int] | None = None
    ) -> None:
        """Per-epoch series."""
        self.inner.log_history(history, steps)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Final metrics."""
        self.inner.log_metrics(metrics)

    def log_inputs(self, splits: Sequence[DataSplit]) -> None:
        """The data splits."""
        self.inner.log_inputs(splits)

    def log_artifacts(self, local_dir: Path) -> None:
        """Every file under ``local_dir``."""
        self.inner.log_artifacts(local_dir)

    def log_model(self, request: ModelRequest) -> None:
        """The trained network as an MLflow model."""
        self.inner.log_model(request)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags on the run."""
        self.inner.set_tags(tags)

    def end(self, status: str) -> None:
        """Close the run."""
        self.inner.end(status)

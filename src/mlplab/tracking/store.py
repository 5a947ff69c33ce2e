"""Opening a run store: the one place MLflow is imported, on first use.

MLflow costs 2.4 s to import. Commands that never open a store (``tracking.enabled=false``,
a run whose store is written by the helper process, ``--help``) never import it: every
other module reaches MLflow through these functions, which import
:mod:`mlplab.tracking.mlflow_store` when first called. (The helper that ``pipelines/run.py``
starts first begins importing it at once, on the other core, and is let go if unused.)
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from mlplab.tracking.sink import ModelRequest

if TYPE_CHECKING:
    from mlplab.tracking.mlflow_store import RunStore, StoreSink

_stores: dict[str, RunStore] = {}


def _mlflow_store() -> ModuleType:
    import mlplab.tracking.mlflow_store as module  # lazily, on first use: see the module doc

    return module


def warm_up() -> None:
    """Import MLflow and its SQL store now (the helper, while its job is still starting)."""
    _mlflow_store().warm_up()


def open_store(uri: str) -> RunStore:
    """The run store at ``uri`` (opened once per process); :class:`TrackingError` if unusable."""
    if uri not in _stores:
        _stores[uri] = _mlflow_store().RunStore(uri)
    return _stores[uri]


def store_sink(uri: str, experiment: str, parent_run_id: str | None = None) -> StoreSink:
    """A sink writing one run into the store at ``uri``, in this process."""
    sink: StoreSink = _mlflow_store().StoreSink(open_store(uri), experiment, parent_run_id)
    return sink


def save_model(request: ModelRequest, path: Path) -> Path:
    """Write the pyfunc model folder of ``request`` at ``path``."""
    saved: Path = _mlflow_store().save_model(request, path)
    return saved

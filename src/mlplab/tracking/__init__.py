"""The tracking layer: every MLflow call of the project lives in this package.

* :mod:`~mlplab.tracking.uris`: store URIs, and the checks that refuse a bad store early
  (no MLflow);
* :mod:`~mlplab.tracking.store`: :func:`open_store` gives the run-store API
  (:class:`~mlplab.tracking.mlflow_store.RunStore`: runs and child runs, params, metrics
  and histories in batches, artifacts, tags, statuses, reading back); it imports MLflow on
  first use, the one place that does;
* :mod:`~mlplab.tracking.sink`: the :class:`Sink` protocol a run talks to;
* :mod:`~mlplab.tracking.helper`: the helper process a single run logs through, which also
  closes runs whose process died;
* :mod:`~mlplab.tracking.fallback`: the local record kept when a store fails mid-run;
* :mod:`~mlplab.tracking.lifecycle`: :func:`tracked_run`, the one owner of a run's life.

The package imports neither of the last two: ``python -m mlplab.tracking.fallback import``
runs the fallback module without importing it twice (runpy warns when it was).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlplab.tracking.helper import BackgroundSink, Guard, release_unused
from mlplab.tracking.sink import DataSplit, ModelRequest, NullSink, Sink, flatten
from mlplab.tracking.store import open_store, store_sink
from mlplab.tracking.uris import CHECKED_STORES, check_store, configure_http, resolve_uri

if TYPE_CHECKING:  # the helper process imports this package, and needs no Hydra
    from mlplab.config import TrackingConfig

__all__ = [
    "DataSplit",
    "Guard",
    "ModelRequest",
    "Sink",
    "flatten",
    "make_sink",
    "open_store",
    "release_unused",
]


def make_sink(t: TrackingConfig, in_helper: bool | None = None) -> Sink:
    """The sink of one run; a bad store is a :class:`~mlplab.errors.TrackingError` here.

    A run of its own on a SQLite or HTTP store is checked without MLflow and then written
    from the helper process (unless ``tracking.background=false``). Other stores, and the
    children of sweeps and studies (whose siblings keep the other cores busy: a helper would
    only compete with them), are written from this process, unless ``in_helper`` says
    otherwise (a population's members, trained together in one process, use the helper).
    """
    if not t.enabled:
        release_unused()
        return NullSink()
    uri = resolve_uri(t.uri)
    configure_http(t.timeout, t.retries)
    helper = t.parent_run_id is None if in_helper is None else in_helper
    if t.background and helper and uri.startswith(CHECKED_STORES):
        check_store(uri, t.timeout, t.retries)
        return BackgroundSink(uri, t.experiment, t.parent_run_id)
    release_unused()
    return store_sink(uri, t.experiment, t.parent_run_id)

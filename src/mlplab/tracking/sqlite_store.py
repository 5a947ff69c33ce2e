"""What a SQLite store needs to keep up with a sweep: WAL commits and many-row history writes.

MLflow's SQLAlchemy store commits every call and builds an ORM object per metric point,
updating the run's latest value as it goes: ~0.2 ms a point, and 5–10 ms of fsync per
commit in SQLite's default journal mode. A 64-job sweep writes ~80 000 history points,
so its record waited on MLflow for tens of seconds. Two measures, both on MLflow's own
schema and both for SQLite stores only:

* :func:`sqlite_pragmas` puts the file in write-ahead-log mode (kept in the file, for every
  process that opens it, the MLflow UI included) and commits without fsync
  (``synchronous=NORMAL``): ~0.02 ms a commit; the store stays consistent after any crash,
  a power cut may lose the last commits.
* :class:`MetricTable` writes a history's points with one multi-row ``INSERT`` into the
  ``metrics`` table as MLflow defines it (``SqlMetric``) and reads a history with one
  indexed ``SELECT``. The last point of each series still goes through ``log_batch``, which
  keeps the latest values MLflow shows (``latest_metrics``) its own business.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from mlflow.entities import Metric
from mlflow.store.tracking.dbmodels.models import SqlMetric
from sqlalchemy import event
from sqlalchemy.pool import Pool


def sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL mode and ``synchronous=NORMAL`` on every new SQLite connection of this process."""
    if isinstance(connection, sqlite3.Connection):
        with contextlib.suppress(sqlite3.Error):  # e.g. another process holds a lock
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")


event.listen(Pool, "connect", sqlite_pragmas)  # every pool: MLflow makes its engines later


def split_last(points: Sequence[Metric]) -> tuple[list[Metric], list[Metric]]:
    """The points that may go in with one INSERT (finite, not the last step of their key)
    and the rest, for ``log_batch``."""
    last: dict[str, int] = {}
    for i, point in enumerate(points):
        j = last.get(point.key)
        if j is None or point.step >= points[j].step:
            last[point.key] = i
    kept = set(last.values())
    bulk: list[Metric] = []
    rest: list[Metric] = []
    for i, point in enumerate(points):
        (bulk if i not in kept and math.isfinite(point.value) else rest).append(point)
    return bulk, rest


class MetricTable:
    """The ``metrics`` table of a SQLite store, written and read many rows at a time."""

    def __init__(self, uri: str) -> None:
        self.engine = sa.create_engine(uri)
        self.table = SqlMetric.__table__
        self.insert = sa.insert(self.table)

    def write(self, run_id: str, points: Sequence[Metric]) -> bool:
        """Insert ``points`` (finite values) in one transaction; False (nothing written) if
        some are in the table already."""
        rows = [
            {"key": p.key, "value": p.value, "timestamp": p.timestamp, "step": p.step,
             "is_nan": False, "run_uuid": run_id}
            for p in points
        ]  # fmt: skip
        try:
            with self.engine.begin() as connection:
                connection.execute(self.insert, rows)
        except sa.exc.IntegrityError:
            return False
        return True

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """A metric's (step, value) points in step order, as ``MlflowClient.get_metric_history``
        holds them."""
        t = self.table.c
        query = (
            sa.select(t.step, t.value, t.is_nan)
            .where(t.run_uuid == run_id, t.key == key)
            .order_by(t.step, t.timestamp)
        )
        with self.engine.connect() as connection:
            return [(s, math.nan if nan else v) for s, v, nan in connection.execute(query)]

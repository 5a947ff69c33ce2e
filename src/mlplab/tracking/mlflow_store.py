"""The run store: every MLflow call of the project, behind one API.

:class:`RunStore` wraps ``MlflowClient`` (no global active run): create a run or a child
run, log params, metrics and histories in batches (params 100 to a call, metric points
1 000), tags, artifacts and the model, end a run with a status, and read runs back. It
hands out plain :class:`RunInfo` records, never MLflow entities, so that the pipeline,
sweeps, tuning, rerun and the fallback import know nothing of MLflow. :class:`StoreSink`
is the :class:`~mlplab.tracking.sink.Sink` of one run in a store.

This module imports MLflow at its top; :func:`mlplab.tracking.open_store` imports this
module on first use, so that commands which never open a store never pay for MLflow.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.numpy_dataset import from_numpy
from mlflow.entities import (
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunTag,
    ViewType,
)
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from mlplab import serving
from mlplab.errors import TrackingError
from mlplab.tracking.sink import DataSplit, ModelRequest
from mlplab.tracking.sqlite_store import MetricTable, split_last
from mlplab.tracking.uris import (
    artifact_root_for,
    check_artifact_root,
    check_local_store,
    creating,
    first_line,
)

METRIC_CHUNK = 1000
PARAM_CHUNK = 100
PARAM_MAX_LEN = 6000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _cut(value: Any) -> str:
    return str(value)[:PARAM_MAX_LEN]


@dataclass
class RunInfo:
    """A run as the project reads it back."""

    run_id: str
    run_name: str
    status: str
    experiment_id: str
    lifecycle_stage: str = "active"
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    #: where the store says the run's artifacts are (``file:///...`` for a local store)
    artifact_uri: str = ""


def _info(run: Any) -> RunInfo:
    info, data = run.info, run.data
    return RunInfo(
        run_id=info.run_id,
        run_name=info.run_name or data.tags.get("mlflow.runName", ""),
        status=info.status,
        experiment_id=str(info.experiment_id),
        lifecycle_stage=info.lifecycle_stage,
        params=dict(data.params),
        metrics=dict(data.metrics),
        tags=dict(data.tags),
        artifact_uri=info.artifact_uri or "",
    )


def warm_up() -> None:
    """Import what opening a SQL store imports (MLflow's SQLAlchemy store, ~0.8 s): the
    helper does it before its job names the store. Lazily, since a server's client never
    needs it."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


#: The name of a run's logged model. Not ``model``: MLflow would then read the run's
#: ``model/`` artifacts from the logged model, through the global tracking URI (not the
#: store's), and list each of its files twice.
LOGGED_MODEL = "mlp"


class RunStore:
    """One tracking store (SQLite file, server, folder), opened once."""

    def __init__(self, uri: str) -> None:
        check_local_store(uri)
        self.uri = uri
        try:  # MLflow opens, and for SQLite creates or migrates, the store here
            with creating(uri):
                self.client = MlflowClient(tracking_uri=uri)
        except Exception as exc:  # e.g. not a database, an unsupported scheme
            raise TrackingError(
                f"tracking.uri={uri!r}: the MLflow store cannot be opened ({first_line(exc)})"
            ) from None
        self._experiments: dict[str, str] = {}
        self.table = MetricTable(uri) if uri.startswith("sqlite:") else None

    # -- writing -----------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        """Id of experiment ``name``, created (with a local artifact folder) if missing."""
        if name in self._experiments:
            return self._experiments[name]
        try:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None and exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            if exp is None:
                root = artifact_root_for(self.uri)
                location = f"{root}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}" if root else None
                # another job may create it meanwhile: either way, read it back below
                with contextlib.suppress(MlflowException):
                    self.client.create_experiment(name, artifact_location=location)
                exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise TrackingError(f"experiment {name!r} could not be created")
        except Exception as exc:  # any failure here means the store is unusable
            raise TrackingError(
                f"tracking.uri={self.uri!r}: the MLflow store cannot be reached or written "
                f"({first_line(exc)})"
            ) from None
        check_artifact_root(exp.artifact_location, self.uri)
        self._experiments[name] = str(exp.experiment_id)
        return self._experiments[name]

    def create_run(
        self,
        experiment: str,
        run_name: str | None,
        tags: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        start_time: int | None = None,
    ) -> str:
        """A new RUNNING run (a child when ``parent_run_id`` is given), with its params."""
        all_tags = {k: _cut(v) for k, v in tags.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(
            self.experiment_id(experiment), start_time=start_time, tags=all_tags, run_name=run_name
        )
        try:
            self.log_params(run.info.run_id, params or {})
        except BaseException:
            with contextlib.suppress(Exception):  # the store is failing already
                self.client.set_terminated(run.info.run_id, status="FAILED")
            raise
        return str(run.info.run_id)

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        """Params, 100 to a call."""
        items = [Param(k, _cut(v)) for k, v in params.items()]
        for i in range(0, len(items), PARAM_CHUNK):
            self.client.log_batch(run_id, params=items[i : i + PARAM_CHUNK])

    def _log_points(self, run_id: str, points: Iterable[Metric]) -> None:
        """Points in chunks of 1 000; into a SQLite store most of them with one INSERT
        (:mod:`mlplab.tracking.sqlite_store`)."""
        rest: Iterable[Metric] = points
        if self.table is not None:
            bulk, rest = split_last(list(points))
            if bulk and not self.table.write(run_id, bulk):
                rest = bulk + rest  # some were there already: log_batch skips those
        batch: list[Metric] = []
        for point in rest:
            batch.append(point)
            if len(batch) == METRIC_CHUNK:
                self.client.log_batch(run_id, metrics=batch)
                batch = []
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Single-point metrics."""
        now = _now_ms()
        self._log_points(run_id, (Metric(k, float(v), now, step) for k, v in metrics.items()))

    def log_history(
        self, run_id: str, history: Mapping[str, np.ndarray], steps: Sequence[int] | None = None
    ) -> None:
        """Per-epoch series: ``steps`` (default 1, 2, ...) are the epochs of the values."""
        now = _now_ms()
        self._log_points(
            run_id,
            (
                Metric(key, value, now, int(step))
                for key, values in history.items()
                for step, value in zip(
                    range(1, len(values) + 1) if steps is None else steps,
                    np.asarray(values, dtype=float).tolist(),
                    strict=True,
                )
            ),
        )

    def log_recorded(self, run_id: str, metrics: Mapping[str, Sequence[Sequence[float]]]) -> None:
        """Points as recorded elsewhere: ``{key: [[step, value, timestamp], ...]}``."""
        self._log_points(
            run_id,
            (
                Metric(key, float(value), int(stamp), int(step))
                for key, points in metrics.items()
                for step, value, stamp in points
            ),
        )

    def log_inputs(self, run_id: str, splits: Sequence[DataSplit]) -> None:
        """The data splits as MLflow datasets (``mlflow.data.from_numpy``) with their context."""
        inputs = []
        for split in splits:
            source: Any = split.path or CodeDatasetSource(tags=split.generator)
            with warnings.catch_warnings():  # a local path: "can be interpreted in multiple ways"
                warnings.simplefilter("ignore", UserWarning)
                dataset = from_numpy(
                    split.features, source, split.targets, split.name, split.digest
                )
            context = InputTag("mlflow.data.context", split.context)
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), [context]))
        try:
            self.client.log_inputs(run_id, datasets=inputs)
        except MlflowException as exc:
            # Runs that log the same dataset at once (a sweep's jobs with one seed) race
            # MLflow's get-or-create of its row (unique per experiment, name and digest);
            # the failed call is rolled back whole, and a second one finds the row.
            if "unique" not in str(exc).lower():
                raise
            self.client.log_inputs(run_id, datasets=inputs)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Tags (values cut to MLflow's limit)."""
        self.client.log_batch(run_id, tags=[RunTag(k, _cut(v)) for k, v in tags.items()])

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
        """Every file under ``local_dir``, keeping the relative layout."""
        self.client.log_artifacts(run_id, str(local_dir), artifact_path=artifact_path)

    def log_model(self, run_id: str, request: ModelRequest) -> None:
        """The network as an MLflow pyfunc model: the run's ``model/`` artifacts
        (``runs:/<id>/model``), and a logged model named ``mlp`` (:data:`LOGGED_MODEL`), the
        run's output as ``mlflow.pyfunc.log_model`` makes it (MLflow 3's model entity: the
        UI's Models tab, ``models:/<model_id>``)."""
        with (
            self._logged_model(run_id) as model_id,
            tempfile.TemporaryDirectory(prefix="mlplab-model-") as tmp,
        ):
            ids = Model(run_id=run_id, model_id=model_id)  # in MLmodel, as MLflow writes them
            model_dir = save_model(request, Path(tmp) / "model", ids)
            self.client.log_model_artifacts(model_id, str(model_dir))
            self.log_artifacts(run_id, model_dir, "model")

    def log_model_folder(self, run_id: str, model_dir: Path) -> None:
        """A saved pyfunc model folder (a fallback's ``model/``) as the run's logged model
        (its ``model/`` artifacts are the caller's)."""
        with self._logged_model(run_id) as model_id:
            self.client.log_model_artifacts(model_id, str(model_dir))

    @contextlib.contextmanager
    def _logged_model(self, run_id: str) -> Iterator[str]:
        """A new logged model of the run, READY once the block has put its files in (else
        FAILED), and the run's output."""
        experiment = self.client.get_run(run_id).info.experiment_id
        model_id = self.client.create_logged_model(experiment, LOGGED_MODEL, run_id).model_id
        status = LoggedModelStatus.FAILED
        try:
            yield model_id
            status = LoggedModelStatus.READY
        finally:
            self.client.finalize_logged_model(model_id, status)
            self.client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])

    def end_run(self, run_id: str, status: str, end_time: int | None = None) -> None:
        """Terminate the run as FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status=status, end_time=end_time)

    def reopen(self, run_id: str) -> None:
        """Mark an ended run RUNNING again (a resumed study's parent)."""
        self.client.update_run(run_id, status="RUNNING")

    def close_if_running(self, run_id: str, status: str, reason: str) -> bool:
        """End a run that is still RUNNING, with ``failure_reason``; True if it was."""
        run = self.get_run(run_id)
        if run is None or run.status != "RUNNING":
            return False
        self.set_tags(run_id, {"failure_reason": reason})
        self.end_run(run_id, status)
        return True

    def register_model(
        self, run_id: str, name: str, alias: str, tags: Mapping[str, str] | None = None
    ) -> str:
        """Register the run's ``model/`` as a new version of model ``name`` (with ``tags``),
        and point ``alias`` at it."""
        with contextlib.suppress(MlflowException):  # registered already
            self.client.create_registered_model(name)
        version = self.client.create_model_version(
            name, f"runs:/{run_id}/model", run_id, tags=dict(tags or {})
        )
        self._link_version(run_id, name, version.version)
        try:
            self.client.set_registered_model_alias(name, alias, version.version)
        except MlflowException:  # another sweep set the new alias first: now it is an update
            self.client.set_registered_model_alias(name, alias, version.version)
        return str(version.version)

    def _link_version(self, run_id: str, name: str, version: int | str) -> None:
        """The run's logged model (the last) names the registered version, as
        ``mlflow.register_model`` links them (the UI shows it on the model's page)."""
        run = self.client.get_run(run_id)
        models = [o.model_id for o in run.outputs.model_outputs] if run.outputs else []
        if not models:
            return
        model = self.client.get_logged_model(models[-1])
        linked = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
        linked.append({"name": name, "version": version})
        self.client.set_logged_model_tags(
            model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(linked)}
        )

    def delete_run(self, run_id: str) -> None:
        """Delete a run (a half-written import)."""
        self.client.delete_run(run_id)

    # -- reading -----------------------------------------------------------------------------
    def get_run(self, run_id: str) -> RunInfo | None:
        """The run, or None if the store has no such run."""
        try:
            return _info(self.client.get_run(run_id))
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                return None
            raise TrackingError(
                f"cannot read run {run_id!r} from {self.uri}: {first_line(exc)}"
            ) from None

    def children(self, parent_id: str) -> list[RunInfo]:
        """Every run whose parent is ``parent_id``, oldest first."""
        parent = self.get_run(parent_id)
        if parent is None:
            return []
        out: list[RunInfo] = []
        token = None
        while True:
            page = self.client.search_runs(
                [parent.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                run_view_type=ViewType.ALL,
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            out.extend(_info(run) for run in page)
            token = page.token
            if not token:
                return out

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """A metric's (step, value) points in step order (a long history's are thinned:
        ``tracking.max_points``)."""
        if self.table is not None:
            return self.table.history(run_id, key)
        points = self.client.get_metric_history(run_id, key)
        return [(m.step, m.value) for m in sorted(points, key=lambda m: (m.step, m.timestamp))]

    def read_text(self, run_id: str, path: str) -> str | None:
        """The text of one artifact file, or None if the run has none there."""
        with tempfile.TemporaryDirectory() as tmp:
            local = self.download(run_id, path, Path(tmp))
            return local.read_text() if local else None

    def download(self, run_id: str, path: str, dst: Path) -> Path | None:
        """One artifact (file or folder) into ``dst``; None if the run has none there."""
        try:
            return Path(self.client.download_artifacts(run_id, path, str(dst)))
        except Exception:
            return None


def save_model(request: ModelRequest, path: Path, ids: Model | None = None) -> Path:
    """Write the pyfunc model folder of ``request`` at ``path`` (``ids``: the run and logged
    model it belongs to)."""
    return serving.save_model(
        path, request.weights_file, request.network, request.X_example, request.Y_example, ids
    )


class StoreSink:
    """A :class:`~mlplab.tracking.sink.Sink` writing one run into a :class:`RunStore`."""

    def __init__(self, store: RunStore, experiment: str, parent_run_id: str | None = None) -> None:
        self.store, self.experiment, self.parent_run_id = store, experiment, parent_run_id
        self.run_id: str | None = None
        store.experiment_id(experiment)  # a store that cannot take runs fails here

    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        """Create the run (nested under the sweep's parent when there is one)."""
        try:  # the id is kept as soon as the run exists: a fallback names it
            self.run_id = self.store.create_run(
                self.experiment, run_name, tags, parent_run_id=self.parent_run_id
            )
            self.store.log_params(self.run_id, params)
        except Exception as exc:  # nothing trained yet: a store problem
            raise TrackingError(
                f"tracking.uri={self.store.uri!r}: cannot create a run in experiment "
                f"{self.experiment!r} ({first_line(exc)})"
            ) from None

    def _run(self) -> str:
        assert self.run_id is not None, "start() first"
        return self.run_id

    def log_history(
        self, history: Mapping[str, np.ndarray], steps: Sequence[int] | None = None
    ) -> None:
        """Per-epoch series."""
        self.store.log_history(self._run(), history, steps)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Single-point metrics, step 0."""
        self.store.log_metrics(self._run(), metrics)

    def log_inputs(self, splits: Sequence[DataSplit]) -> None:
        """The data splits as dataset inputs."""
        self.store.log_inputs(self._run(), splits)

    def log_artifacts(self, local_dir: Path) -> None:
        """The folder's contents at the run's artifact root."""
        self.store.log_artifacts(self._run(), local_dir)

    def log_model(self, request: ModelRequest) -> None:
        """The network as a pyfunc model under ``model/``."""
        self.store.log_model(self._run(), request)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags on the run."""
        self.store.set_tags(self._run(), tags)

    def end(self, status: str) -> None:
        """Terminate the run with ``status``."""
        if self.run_id is not None:
            self.store.end_run(self.run_id, status)

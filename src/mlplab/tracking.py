"""The MLflow sink: the one module that talks to MLflow while a run is logged.

The pipeline calls a :class:`Sink`; :class:`MlflowSink` writes to a tracking store,
:class:`NullSink` (``tracking.enabled=false``) writes nothing. Metric histories go out
with ``log_batch`` in chunks of at most 1 000 points, params in chunks of 100.
:func:`check_store` refuses a bad store without importing MLflow; a single run then
calls its ``MlflowSink`` from a helper process (:mod:`mlplab.background`).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mlplab.errors import TrackingError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

METRIC_CHUNK = 1000
PARAM_CHUNK = 100
PARAM_MAX_LEN = 6000


def repo_root() -> Path:
    """The project folder (where ``pyproject.toml`` is), else the working directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "conf").is_dir():
            return parent
    return Path.cwd()


def default_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo>/mlflow.db`` (absolute)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def resolve_uri(uri: str | None) -> str:
    """Absolute tracking URI: relative SQLite paths and plain folders are made absolute."""
    if not uri:
        return default_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    return uri


def artifact_root_for(uri: str) -> str | None:
    """Where a local store keeps artifacts: ``mlartifacts/`` beside the SQLite file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping to dotted keys with string values (lists as ``[a, b]``)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            text = "null" if value is None else str(value)
            out[name] = text[:PARAM_MAX_LEN]
    return out


def configure_http(timeout: int, retries: int) -> None:
    """Bound MLflow's HTTP timeout and retries so a dead server fails a run in seconds."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def check_local_store(uri: str) -> None:
    """Refuse a SQLite store whose folder is missing or whose file cannot be written.

    MLflow would create missing folders silently (a typo becomes a new, empty store) and
    report an unwritable one only at the first write. Raises :class:`TrackingError`.
    """
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return
    path = Path(uri[len("sqlite:///") :])
    folder = path.parent
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise TrackingError(
            f"tracking.uri={uri!r}: the folder {str(folder)!r} {what}; expected a SQLite file "
            "in an existing, writable folder (create the folder, or choose another path)"
        )
    if path.exists() and not path.is_file():
        raise TrackingError(f"tracking.uri={uri!r}: {str(path)!r} is not a file")
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise TrackingError(
            f"tracking.uri={uri!r}: {str(target)!r} is not writable; expected a SQLite file "
            "in a writable folder"
        )


def check_sqlite_file(uri: str) -> None:
    """Refuse an existing file that is not a SQLite database (a busy one is fine)."""
    import sqlite3

    path = Path(uri[len("sqlite:///") :])
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:  # locked by another job: MLflow will wait for it
        return
    except sqlite3.DatabaseError as exc:
        raise TrackingError(
            f"tracking.uri={uri!r}: the MLflow store cannot be opened ({_first_line(exc)})"
        ) from None


def check_server(uri: str, timeout: float, retries: int) -> None:
    """Refuse an HTTP(S) tracking URI that nothing answers (any HTTP reply will do)."""
    import ssl
    import urllib.error
    import urllib.request

    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                return
        except urllib.error.HTTPError:  # a reply: something is listening
            return
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):  # it answered; TLS is MLflow's to settle
                return
            if attempt == retries:
                raise TrackingError(
                    f"tracking.uri={uri!r}: the tracking server cannot be reached ({reason}); "
                    "start it (make server) or choose another tracking.uri"
                ) from None
            time.sleep(1.0)


#: The stores :func:`check_store` can check without MLflow.
CHECKED_STORES = ("sqlite:///", "http://", "https://")


def check_store(uri: str, timeout: float, retries: int) -> None:
    """Without MLflow, the checks that make a bad store a user error before training.

    SQLite: the folder, the file and the artifact folder beside it; HTTP(S): a server
    answers (other stores: see :data:`CHECKED_STORES`). Raises :class:`TrackingError`.
    """
    if uri.startswith("sqlite:///"):
        check_local_store(uri)
        check_sqlite_file(uri)
        check_artifact_root(artifact_root_for(uri), uri)
    elif uri.startswith(("http://", "https://")):
        check_server(uri, timeout, retries)


def get_client(uri: str) -> MlflowClient:
    """A client for ``uri`` (MLflow opens, and for SQLite creates or migrates, the store).

    Raises :class:`TrackingError` when the store cannot be opened.
    """
    from mlflow.tracking import MlflowClient

    check_local_store(uri)
    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as exc:  # e.g. not a database, an unsupported scheme
        raise TrackingError(
            f"tracking.uri={uri!r}: the MLflow store cannot be opened ({_first_line(exc)})"
        ) from None


def _local_path(location: str | None) -> Path | None:
    """The folder of a local artifact location (``file:`` URI or plain path), else None."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    if not location:
        return None
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(location)
    return None


def check_artifact_root(location: str | None, uri: str) -> None:
    """Create a local artifact folder if needed and check that a file can be written in it."""
    import tempfile

    folder = _local_path(location)
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mlplab-probe-"):
            pass
    except OSError as exc:
        raise TrackingError(
            f"tracking.uri={uri!r}: the artifact folder {str(folder)!r} cannot be written "
            f"({_first_line(exc)})"
        ) from None


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """Id of experiment ``name``, created (with a local artifact folder) if missing.

    Raises :class:`TrackingError` when the store cannot be reached or written.
    """
    from mlflow.exceptions import MlflowException

    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
        else:
            root = artifact_root_for(uri)
            location = f"{root}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}" if root else None
            # another job may create it meanwhile: either way, read it back below
            with contextlib.suppress(MlflowException):
                client.create_experiment(name, artifact_location=location)
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise TrackingError(f"experiment {name!r} could not be created")
    except Exception as exc:  # any failure here means the store is unusable
        raise TrackingError(
            f"tracking.uri={uri!r}: the MLflow store cannot be reached or written "
            f"({_first_line(exc)})"
        ) from None
    check_artifact_root(exp.artifact_location, uri)
    return str(exp.experiment_id)


@dataclass
class ModelRequest:
    """What the sink needs to build the MLflow model (see :func:`mlplab.serving.save_model`)."""

    weights_file: Path
    network: dict[str, Any]
    X_example: np.ndarray
    Y_example: np.ndarray

    def save(self, path: Path) -> Path:
        """Write the pyfunc model folder at ``path``."""
        from mlplab.serving import save_model

        return save_model(path, self.weights_file, self.network, self.X_example, self.Y_example)


class Sink(Protocol):
    """What the pipeline tells a tracker."""

    run_id: str | None

    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        """Open a run."""

    def log_history(self, history: Mapping[str, np.ndarray]) -> None:
        """Per-epoch metrics, step = epoch counted from 1."""

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Final (single-point) metrics."""

    def log_artifacts(self, local_dir: Path) -> None:
        """Every file under ``local_dir``, keeping the relative layout."""

    def log_model(self, request: ModelRequest) -> None:
        """The trained network as an MLflow model under ``model/``."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags on the run."""

    def end(self, status: str) -> None:
        """Close the run as FINISHED, FAILED or KILLED."""


class NullSink:
    """Tracking disabled: nothing is written."""

    run_id: str | None = None

    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        """Nothing to open."""

    def log_history(self, history: Mapping[str, np.ndarray]) -> None:
        """Nothing to log."""

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Nothing to log."""

    def log_artifacts(self, local_dir: Path) -> None:
        """Nothing to log."""

    def log_model(self, request: ModelRequest) -> None:
        """Nothing to log."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Nothing to tag."""

    def end(self, status: str) -> None:
        """Nothing to close."""


class MlflowSink:
    """Logs one run into an MLflow store through ``MlflowClient`` (no global active run)."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str | None = None) -> None:
        self.uri = resolve_uri(uri)
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None
        self.client = get_client(self.uri)
        self.experiment_id = ensure_experiment(self.client, experiment, self.uri)

    def start(self, params: dict[str, str], tags: dict[str, str], run_name: str | None) -> None:
        """Create the run (nested under the sweep's parent when there is one)."""
        from mlflow.entities import Param

        all_tags = dict(tags)
        if self.parent_run_id:
            all_tags["mlflow.parentRunId"] = self.parent_run_id
        try:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
            self.run_id = run.info.run_id
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), PARAM_CHUNK):
                self.client.log_batch(self.run_id, params=items[i : i + PARAM_CHUNK])
        except Exception as exc:  # nothing trained yet: a store problem
            if self.run_id is not None:
                with contextlib.suppress(Exception):  # the store is failing already
                    self.client.set_terminated(self.run_id, status="FAILED")
            raise TrackingError(
                f"tracking.uri={self.uri!r}: cannot create a run in experiment "
                f"{self.experiment!r} ({_first_line(exc)})"
            ) from None

    def log_history(self, history: Mapping[str, np.ndarray]) -> None:
        """Send every series with ``log_batch`` in chunks of :data:`METRIC_CHUNK` points."""
        from mlflow.entities import Metric

        assert self.run_id is not None
        now = int(time.time() * 1000)
        batch: list[Metric] = []
        for key, values in history.items():
            for step, value in enumerate(np.asarray(values, dtype=float).tolist(), start=1):
                batch.append(Metric(key, value, now, step))
                if len(batch) == METRIC_CHUNK:
                    self.client.log_batch(self.run_id, metrics=batch)
                    batch = []
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Single-point metrics, step 0."""
        from mlflow.entities import Metric

        assert self.run_id is not None
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for i in range(0, len(items), METRIC_CHUNK):
            self.client.log_batch(self.run_id, metrics=items[i : i + METRIC_CHUNK])

    def log_artifacts(self, local_dir: Path) -> None:
        """Upload the folder's contents to the run's artifact root."""
        assert self.run_id is not None
        self.client.log_artifacts(self.run_id, str(local_dir))

    def log_model(self, request: ModelRequest) -> None:
        """Build the pyfunc model in a temporary folder and log it under ``model/``."""
        import tempfile

        assert self.run_id is not None
        with tempfile.TemporaryDirectory(prefix="mlplab-model-") as tmp:
            model_dir = request.save(Path(tmp) / "model")
            self.client.log_artifacts(self.run_id, str(model_dir), artifact_path="model")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags (values cut to MLflow's limit)."""
        from mlflow.entities import RunTag

        assert self.run_id is not None
        self.client.log_batch(
            self.run_id, tags=[RunTag(k, str(v)[:PARAM_MAX_LEN]) for k, v in tags.items()]
        )

    def end(self, status: str) -> None:
        """Terminate the run with ``status``."""
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)

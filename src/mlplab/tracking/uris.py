"""Tracking store URIs, and the checks that refuse a bad store early, without MLflow.

A bad store is a user error found before training (exit status 2), and finding it must not
cost MLflow's import (2.4 s): a SQLite store is checked on disk, a server by one HTTP
request. Nothing here imports MLflow.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from mlplab.errors import TrackingError
from mlplab.project import repo_root


def project_store() -> str:
    """The project's own store, ``sqlite:///<repo>/mlflow.db`` (absolute): ``make ui``'s."""
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def default_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else :func:`project_store`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or project_store()


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


def configure_http(timeout: int, retries: int) -> None:
    """Bound MLflow's HTTP timeout and retries so a dead server fails a run in seconds."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message, cut after its last whole sentence (or word)
    within ``limit`` characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if len(line) <= limit:
        return line
    cut = line[:limit]
    end = cut.rfind(". ") + 1 or cut.rfind(" ")
    return f"{cut[:end].rstrip() if end > 0 else cut} …"


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


@contextlib.contextmanager
def creating(uri: str) -> Iterator[None]:
    """One process at a time creates or migrates a SQLite store (an exclusive ``flock`` on
    its folder: no extra file, and no clash with SQLite's own locks on the file). Two runs
    started together on a new store would otherwise both create MLflow's tables, and the
    second fail ("table ... already exists"); the second waits, then finds them made."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        yield
        return
    fd = os.open(Path(uri[len("sqlite:///") :]).parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_sqlite_file(uri: str) -> None:
    """Refuse an existing file that is not a SQLite database (a busy one is fine)."""
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
            f"tracking.uri={uri!r}: the MLflow store cannot be opened ({first_line(exc)})"
        ) from None


def check_server(uri: str, timeout: float, retries: int) -> None:
    """Refuse an HTTP(S) tracking URI that nothing answers, or whose server has no MLflow
    ``/health`` (404: another server, a wrong port). Any other reply will do (an
    authenticating proxy's 401, a server busy starting)."""
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                return
        except urllib.error.HTTPError as exc:  # a reply: something is listening
            if exc.code == 404:
                raise TrackingError(
                    f"tracking.uri={uri!r}: the server there is not an MLflow tracking server "
                    f"(GET /health: {exc.code} {exc.reason}); check the host and port"
                ) from None
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


def check_source(uri: str, timeout: int, retries: int) -> None:
    """The checks of a store that is only read (:func:`check_store`): a SQLite file must
    exist (MLflow would create an empty store), a server answers within ``timeout`` and
    ``retries`` (MLflow's own calls too). Raises :class:`TrackingError`."""
    local = uri.startswith("sqlite:///") and not uri.endswith(":memory:")
    if local and not Path(uri[len("sqlite:///") :]).is_file():
        raise TrackingError(f"{uri!r}: no MLflow store there (no such file)")
    if uri.startswith(("http://", "https://")):
        configure_http(timeout, retries)
    check_store(uri, timeout, retries)


def _local_path(location: str | None) -> Path | None:
    """The folder of a local artifact location (``file:`` URI or plain path), else None."""
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
            f"({first_line(exc)})"
        ) from None

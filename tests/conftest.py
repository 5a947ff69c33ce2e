"""Shared fixtures: Hydra composition, temporary MLflow stores, the CLI as a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from mlplab import build
from mlplab.config import Config, register_configs, to_config
from mlplab.nn import MLP
from mlplab.pipeline import Job, configure
from mlplab.pipeline import prepare as prepare_job

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_configs()


def compose_config(*overrides: str) -> Config:
    """The real configs composed with ``overrides`` into a typed Config (paths as written)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def job_of(cfg: Config, out_dir: Path | None = None) -> Job:
    """The pipeline's prepared job for ``cfg`` (data, initial weights); nothing is written."""
    return prepare_job(cfg, out_dir or Path("/nonexistent-out"))


def initial_network(job: Job) -> MLP:
    """The job's network holding its initial weights."""
    net = build.network(job.cfg, job.sizes)
    net.set_weights(job.initial)
    return net


def fresh_store(factory: pytest.TempPathFactory) -> str:
    """A new, empty SQLite store; MLflow's tables are created once per session and copied."""
    from mlflow.tracking import MlflowClient

    template = factory.getbasetemp() / "mlflow-empty-template.db"
    if not template.exists():
        fresh = factory.mktemp("template") / "mlflow.db"
        MlflowClient(f"sqlite:///{fresh}").search_experiments()
        # mlplab keeps SQLite stores in WAL mode: the tables may still be in mlflow.db-wal,
        # which copying mlflow.db alone would lose. SQLite's backup copies the database
        # whole, and closing the last connection leaves it all in the one file.
        with (
            contextlib.closing(sqlite3.connect(fresh)) as source,
            contextlib.closing(sqlite3.connect(template)) as copy,
        ):
            source.backup(copy)
    db = factory.mktemp("store") / "mlflow.db"
    shutil.copyfile(template, db)
    return f"sqlite:///{db}"


#: The artifacts SPEC §5 requires of every finished run.
SPEC_ARTIFACTS = frozenset(
    {
        "config.yaml",
        "overrides.yaml",
        "weights/initial.npz",
        "weights/final.npz",
        "plots/rmse.png",
        "plots/predictions.png",
        "plots/network.png",
        "data/train.csv",
        "data/test.csv",
    }
)


def artifact_paths(client: Any, run_id: str, path: str = "") -> set[str]:
    """Every artifact file of a run, as relative paths."""
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture(autouse=True)
def _no_user_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's mlflow.db: the default URI is poisoned."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nonexistent-dir/do-not-use.db")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)  # tracking.experiment's default
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh SQLite tracking URI in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def make_cfg() -> Iterator[Callable[..., Config]]:
    """Compose the real configs with overrides into a typed, prepared Config."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):

        def _make(*overrides: str) -> Config:
            return configure(compose(config_name="config", overrides=list(overrides)))

        yield _make


def run_cli(
    *args: str, script: str = "pipelines/run.py", timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a pipeline script in a subprocess from the repository root."""
    full_env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **(env or {})}
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def default_sigint() -> None:
    """In a child process before it starts: SIGINT as in a terminal (a background job may
    inherit it ignored, and Python then keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def python_output(code: str, timeout: float = 120) -> list[str]:
    """The lines a fresh ``python -c code`` prints (from the repository root); it must exit
    with status 0."""
    proc = run_cli(code, script="-c", timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def start_run(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``pipelines/run.py`` started from the repository root, SIGINT as in a terminal, its
    output piped (read it with ``communicate``)."""
    return subprocess.Popen(
        [sys.executable, "pipelines/run.py", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until ``path`` exists; fails the test if ``proc`` ends first or it takes too long."""
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the process ended ({proc.returncode}) before {path}:\n{err[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


def wait_for_run(db: Path, experiment: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until a run of ``experiment`` with its params is in the SQLite file ``db``.

    Read with sqlite3, not MLflow: a client opening a store that a job is still creating
    would race its schema migration.
    """
    import sqlite3

    query = (
        "SELECT count(*) FROM params JOIN runs ON params.run_uuid = runs.run_uuid "
        "JOIN experiments ON runs.experiment_id = experiments.experiment_id "
        "WHERE experiments.name = ?"
    )
    t0 = time.monotonic()
    while True:
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(f"{Path(db).as_uri()}?mode=ro", uri=True)) as con,
        ):
            if con.execute(query, (experiment,)).fetchone()[0] > 0:
                return
        if proc.poll() is not None:
            err = proc.communicate()[1] or ""
            pytest.fail(f"the process ended ({proc.returncode}) before its run:\n{err[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"no run in {db} after {timeout} s")
        time.sleep(0.02)

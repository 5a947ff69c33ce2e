"""A team server for real: PostgreSQL + ``mlflow server`` (``scripts/server.sh``), sweeps
through the joblib, Ray and submitit launchers against it, and a dead server.

One server for the module, on free 127.0.0.1 ports, started and stopped here. Every
sweep is 4 jobs of 30 epochs; each child must be FINISHED under the sweep's parent run,
with its full RMSE history, and its weights downloadable *through the server*. The test
process poisons ``MLFLOW_TRACKING_URI`` (conftest): a job that did not receive the
tracking URI from the launching process would log elsewhere and be missing here.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from mlflow.artifacts import download_artifacts
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from server_utils import PG_HINT, TrackingServer, find_pg_bin, free_port, tracking_server

from conftest import run_cli
from mlplab.weights import load_weights, weights_sha256

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCHS = 30
SWEEP = (
    "--multirun",
    "+sweep=smoke",
    "model.hidden=[2],[4]",
    "optimizer=sgd,adam",  # 2 x 2 = 4 jobs
    f"train.epochs={EPOCHS}",
    "plot.enabled=false",
    "trace.enabled=false",
    "tracking=server",
)
N_JOBS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """``scripts/server.sh start`` (PostgreSQL + mlflow server); ``stop`` at the end."""
    if find_pg_bin() is None:
        pytest.fail(PG_HINT, pytrace=False)
    with tracking_server(tmp_path_factory.mktemp("server")) as srv:
        print(f"\nserver up in {srv.start_seconds:.1f} s at {srv.uri}")
        yield srv


def _sweep(server: TrackingServer, tmp_path: Path, experiment: str, *launcher: str):
    args = (*SWEEP, f"tracking.uri={server.uri}", f"tracking.experiment={experiment}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *launcher)  # fmt: skip
    t0 = time.monotonic()
    proc = run_cli(*args, timeout=600)
    elapsed = time.monotonic() - t0
    print(f"\n{experiment}: sweep took {elapsed:.1f} s")
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{server.log_tail()}"
    )
    return proc


def _check_sweep(server: TrackingServer, experiment: str, tmp_path: Path) -> None:
    """One FINISHED parent, N_JOBS FINISHED children with history and artifacts."""
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} not in the server"
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL,
                              max_results=100)  # fmt: skip
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED", parent.data.tags.get("failure_reason")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == N_JOBS == len(runs) - 1
    assert len({c.info.run_name for c in children}) == N_JOBS
    for child in children:
        run_id, data = child.info.run_id, child.data
        assert child.info.status == "FINISHED", data.tags.get("failure_reason")
        # what the launching process handed to the job, not local defaults
        assert data.params["tracking.uri"] == server.uri
        assert data.params["tracking.experiment"] == experiment
        assert data.params["tracking.parent_run_id"] == parent.info.run_id
        # the sweep's script, not the launcher's worker (Ray's, submitit's)
        assert data.tags["mlflow.source.name"] == "pipelines/run.py"
        # artifacts go through the server's proxy, not to a shared disk
        assert child.info.artifact_uri.startswith("mlflow-artifacts:"), child.info.artifact_uri
        epochs_run = int(data.metrics["epochs_run"])
        assert 1 <= epochs_run <= EPOCHS
        history = client.get_metric_history(run_id, "train_rmse")
        assert sorted(m.step for m in history) == list(range(1, epochs_run + 1))
        for key in ("test_rmse", "test_mae", "test_r2", "train_seconds"):
            assert key in data.metrics, key
        local = download_artifacts(run_id=run_id, artifact_path="weights/final.npz",
                                   tracking_uri=server.uri,
                                   dst_path=str(tmp_path / "dl" / run_id))  # fmt: skip
        assert weights_sha256(load_weights(local)) == data.tags["weights_sha256"]
        stored = server.artifacts / exp.experiment_id / run_id / "artifacts"
        assert (stored / "weights" / "final.npz").is_file(), "not in --artifacts-destination"
        # sweeps skip the children's models; the best child's is built and registered at
        # the end, through the server too
        best = child.info.run_id == parent.data.tags["best_run_id"]
        assert (stored / "model" / "MLmodel").is_file() == best
    registered = client.get_model_version_by_alias(experiment, "best")
    assert registered.run_id == parent.data.tags["best_run_id"]


def test_dead_server_fails_fast_naming_the_uri(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    proc = run_cli("tracking=server", f"tracking.uri={uri}", "plot.enabled=false",
                   f"hydra.run.dir={tmp_path / 'out'}", timeout=120)  # fmt: skip
    elapsed = time.monotonic() - t0
    print(f"\ndead server: exit {proc.returncode} after {elapsed:.1f} s")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert elapsed < 20, f"took {elapsed:.1f} s"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and uri in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_server_script_reports_running_and_refuses_a_second_start(server) -> None:
    status = server.script("status", timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert server.uri in status.stdout and "PostgreSQL running" in status.stdout
    again = server.script("start", timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"already running (pid {server.mlflow_pid})" in again.stdout
    assert 'make run ARGS="tracking=server' in again.stdout
    assert int((server.state_dir / "mlflow.pid").read_text()) == server.mlflow_pid
    # the backend store is PostgreSQL (the password never shows)
    backend = (server.state_dir / "backend.uri").read_text()
    assert re.match(r"postgresql\+psycopg2://postgres@127\.0\.0\.1:\d+/mlflow", backend)


def test_parallel_sweep_joblib(server, tmp_path: Path) -> None:
    _sweep(server, tmp_path, "sweep-joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    _check_sweep(server, "sweep-joblib", tmp_path)


def test_sweep_ray_local(server, tmp_path: Path) -> None:
    # address=local: a new Ray for this sweep, never one started on this machine before
    _sweep(server, tmp_path, "sweep-ray", "hydra/launcher=ray",
           "hydra.launcher.ray.init.address=local", "+hydra.launcher.ray.init.num_cpus=2",
           "+hydra.launcher.ray.init.include_dashboard=false")  # fmt: skip
    _check_sweep(server, "sweep-ray", tmp_path)


def test_sweep_submitit_local(server, tmp_path: Path) -> None:
    proc = _sweep(server, tmp_path, "sweep-submitit", "hydra/launcher=submitit_local",
                  "hydra.launcher.timeout_min=15")  # fmt: skip
    assert (tmp_path / "sweep" / ".submitit").is_dir(), proc.stdout[-2000:]
    _check_sweep(server, "sweep-submitit", tmp_path)

"""Long runs (issue 16): live curves, bounded logging, an interrupt that ends in seconds.

Each history goes to MLflow while the run trains, at most ``tracking.max_points`` points
per metric (every epoch while the run is no longer, an even stride beyond it, the first
and the last epoch always); the whole history is the artifact ``history/<metric>.npy``.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, compose_config
from mlplab.pipeline import history_stride, logged_steps, run

QUICK = ["plot.enabled=false", "trace.enabled=false", "tracking.log_model=false"]


def _points(client: MlflowClient, run_id: str, key: str = "train_rmse") -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_a_long_run_logs_at_most_max_points_and_the_whole_history_as_an_artifact(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config(*QUICK, "train.epochs=3000", "train.tol=0", "tracking.max_points=100",
                         f"tracking.uri={uri}")  # fmt: skip
    outcome = run(cfg, tmp_path / "out")
    assert outcome.status == "FINISHED" and outcome.epochs_run == 3000
    points = _points(MlflowClient(uri), str(outcome.run_id))
    assert len(points) <= 100 and {1, 3000} <= set(points)
    steps = sorted(points)
    assert len(set(np.diff(steps[:-1]))) == 1  # an even stride, then the last epoch
    whole = np.load(tmp_path / "out" / "history" / "train_rmse.npy")
    assert whole.shape == (3000,)
    assert all(points[s] == whole[s - 1] for s in steps)  # the logged points are the history's


def test_a_run_shorter_than_max_points_logs_every_epoch_whatever_it_planned(
    tmp_path: Path,
) -> None:
    """Planned for 100 000 epochs (a stride of 101 while it trains), the tutorial stops at
    435 by its tolerance: every one of its epochs is logged."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config(*QUICK, "train.epochs=100000", "tracking.max_points=1000",
                         f"tracking.uri={uri}")  # fmt: skip
    outcome = run(cfg, tmp_path / "out")
    assert outcome.epochs_run == 435
    assert sorted(_points(MlflowClient(uri), str(outcome.run_id))) == list(range(1, 436))


@pytest.mark.parametrize(
    ("planned", "ran", "max_points"),
    [(10_000, 435, 10_000), (1_000_000, 1_000_000, 10_000), (999, 999, 2), (50, 30, 10),
     (10**8, 67_318, 10_000), (7, 7, 10)],
)  # fmt: skip
def test_logged_steps_keep_first_and_last_within_the_bound(
    planned: int, ran: int, max_points: int
) -> None:
    steps = logged_steps(planned, ran, max_points)
    assert steps[0] == 1 and steps[-1] == ran and len(steps) <= max_points
    assert np.all(np.diff(steps) > 0)
    if ran <= max_points:
        assert len(steps) == ran
    else:
        assert set(np.diff(steps[:-1])) <= {history_stride(planned, max_points)}


def _count(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
        return int(
            con.execute("SELECT count(*) FROM metrics WHERE key = 'train_rmse'").fetchone()[0]
        )


def test_the_curve_grows_while_the_run_trains_and_sigterm_ends_it_in_seconds(
    tmp_path: Path,
) -> None:
    db = tmp_path / "mlflow.db"
    proc = subprocess.Popen(
        [sys.executable, "pipelines/run.py", *QUICK, "train.epochs=100000000", "train.tol=0",
         f"tracking.uri=sqlite:///{db}", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        counts = []
        while len(counts) < 2:
            time.sleep(0.5)
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            with contextlib.suppress(sqlite3.Error):
                if _count(db) > 0 and not counts:
                    t0, counts = time.monotonic(), [_count(db)]  # the curve has begun
                elif counts and time.monotonic() - t0 > 5:
                    counts.append(_count(db))
            assert time.monotonic() - t0 < 120
        assert counts[1] > counts[0] > 0  # points arrive while the run trains
        t1 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        seconds = time.monotonic() - t1
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert seconds < 15, f"{seconds:.1f} s from SIGTERM to exit"  # the target, 5 s: make bench
    client = MlflowClient(f"sqlite:///{db}")
    (r,) = client.search_runs(["1"])
    assert r.info.status == "KILLED"
    n = int(r.data.metrics["epochs_run"])
    points = _points(client, r.info.run_id)
    assert 0 < len(points) <= 10_000 and {1, n} <= set(points)
    whole = np.load(tmp_path / "out" / "history" / "train_rmse.npy")
    assert whole.shape == (n,)
    assert r.data.tags["weights_sha256"] and (tmp_path / "out" / "weights" / "final.npz").is_file()

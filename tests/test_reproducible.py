"""Reproducible anywhere (issue 14): the same weights whatever the BLAS threads, a sweep
child of a net large enough for BLAS to split its work reruns MATCH, and a sweep with many
long overrides runs to the end."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: The net of the issue: 64-256-256-8 ReLU on 20 000 samples, Adam, batches of 256.
LARGE = [
    "data=regression",
    "data.n_samples=20000",
    "data.n_features=64",
    "data.n_outputs=8",
    "model=mlp",
    "model.hidden=[256,256]",
    "model.activation=relu",
    "optimizer=adam",
    "optimizer.lr=0.001",
    "train.batch_size=256",
    "train.reduction=mean",
    "train.epochs=2",
    "train.tol=0",
    "plot.enabled=false",
    "trace.enabled=false",
    "tracking.log_model=false",
    "tracking.data_max_rows=0",
]


def _sha(proc: object) -> str:
    out = getattr(proc, "stdout", "")
    match = re.search(r"weights sha256 ([0-9a-f]{12})", out)
    assert match, out[-2000:] + getattr(proc, "stderr", "")[-2000:]
    return match.group(1)


def test_the_weights_do_not_depend_on_the_process_blas_threads(tmp_path: Path) -> None:
    shas = {}
    for threads in ("1", "2", None):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
        if threads:
            env["OPENBLAS_NUM_THREADS"] = threads
        proc = run_cli(*LARGE, "tracking.enabled=false", f"hydra.run.dir={tmp_path / str(threads)}",
                       env=env)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        shas[threads] = _sha(proc)
    assert len(set(shas.values())) == 1, shas


def test_a_large_sweep_child_reruns_match(tmp_path: Path) -> None:
    """The joblib workers compute with one BLAS thread of their own, the rerun with two:
    the pinned ``train.blas_threads`` makes them the same computation."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli("--multirun", "+sweep=base", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   *LARGE, "seed=0,1", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 's'}",
                   timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    client = MlflowClient(uri)
    child = next(r for r in client.search_runs(["1"]) if "mlflow.parentRunId" in r.data.tags)
    rerun = run_cli(child.info.run_id, f"tracking.uri={uri}", "--out", str(tmp_path / "r"),
                    script="pipelines/rerun.py", timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-2000:]
    assert f"MATCH: weights sha256 {child.data.tags['weights_sha256']}" in rerun.stdout


def test_a_sweep_with_fifteen_long_overrides_runs_to_the_end(tmp_path: Path) -> None:
    """Hydra names a job's folder after its overrides: too long a name is cut and hashed,
    while the run name and overrides.yaml keep them whole."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    long = [
        "data.n_samples=60", "data.noise=0.123456789", "data.test_fraction=0.25",
        "model.init_scale=0.987654321", "model.negative_slope=0.0123456789",
        "optimizer.lr=0.4444444444", "optimizer.weight_decay=1.234e-07",
        "optimizer.step_size=1234567", "optimizer.gamma=0.9999999999",
        "train.epochs=20", "train.tol=1e-10", "train.gradcheck_threshold=1.234e-05",
        "tracking.data_max_rows=123456789", "plot.frames=12345", "trace.max_rows=123456",
    ]  # fmt: skip
    proc = run_cli("--multirun", "+sweep=base", *long, "seed=0,1", f"tracking.uri={uri}",
                   f"hydra.sweep.dir={tmp_path / 's'}", "plot.enabled=false")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    folders = [p.name for p in (tmp_path / "s").iterdir() if p.is_dir() and p.name != "report"]
    assert len(folders) == 2 and all(len(f.encode()) <= 120 for f in folders), folders
    client = MlflowClient(uri)
    children = [r for r in client.search_runs(["1"]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    for child in children:
        local = client.download_artifacts(child.info.run_id, "overrides.yaml", str(tmp_path))
        text = Path(local).read_text()
        assert all(item in text for item in long)  # every override kept whole

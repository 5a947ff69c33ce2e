"""Issue 7 item 5: parallel writers never lose a run, never log into the wrong experiment.

Five rounds of a 16-job sweep with 4 joblib workers, each on a fresh SQLite store (the
race to create the schema and the experiment), then two sweeps at once into a store that
already holds runs. Each round: every run present, FINISHED, in the sweep's experiment,
under its parent, with its whole history; nothing in ``Default``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric, ViewType
from mlflow.tracking import MlflowClient

from conftest import ROOT

pytestmark = pytest.mark.slow

ROUNDS = 5
SEEDS = (0, 1, 2, 3)
HIDDEN = ("[2]", "[3]", "[4]", "[5]")
EPOCHS = 20
ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_TRACKING_URI": "sqlite:////nonexistent-dir/do-not-use.db",
}


def _sweep_args(
    uri: str, experiment: str, sweep_dir: Path, seeds: tuple[int, ...] = SEEDS, workers: int = 4
) -> list[str]:
    return [
        sys.executable,
        "pipelines/run.py",
        "-m",
        "+sweep=base",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={workers}",
        f"seed={','.join(map(str, seeds))}",
        f"model.hidden={','.join(HIDDEN)}",
        f"train.epochs={EPOCHS}",
        "train.tol=0",
        "plot.enabled=false",
        "trace.enabled=false",
        "tracking.log_model=false",
        "tracking.data_max_rows=0",
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **ENV}, stdout=fd, stderr=subprocess.STDOUT
        )
    finally:
        os.close(fd)  # the child holds its own copy


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    proc.wait(timeout=timeout)
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    return output


def _check_sweep(
    client: MlflowClient, experiment: str, parents: int, seeds: tuple[int, ...] = SEEDS
) -> list[str]:
    """Every parent and child of ``experiment``: FINISHED, complete; returns all run ids."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} missing"
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=5000)
    sweep_parents = [r for r in runs if r.data.tags.get("mlplab_role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(sweep_parents) == parents, [r.info.run_name for r in sweep_parents]
    assert len(runs) == parents * (1 + len(seeds) * len(HIDDEN))
    assert {r.info.status for r in runs} == {"FINISHED"}, [
        (r.info.run_name, r.info.status, r.data.tags.get("failure_reason"))
        for r in runs
        if r.info.status != "FINISHED"
    ]
    for parent in sweep_parents:
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        combos = {(c.data.params["seed"], c.data.params["model.hidden"]) for c in mine}
        expected = {(str(s), h.replace(",", ", ")) for s, h in itertools.product(seeds, HIDDEN)}
        assert combos == expected, combos ^ expected
        assert len(mine) == len(expected)
        assert parent.data.metrics["n_children"] == len(expected)
        assert parent.data.metrics["n_failed"] == 0
    for child in children:
        assert child.data.params["tracking.experiment"] == experiment
        assert child.data.metrics["epochs_run"] == EPOCHS
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_rmse")]
        assert sorted(steps) == list(range(1, EPOCHS + 1))
    return [r.info.run_id for r in runs]


def _no_strays(client: MlflowClient, allowed: set[str]) -> None:
    """No run in ``Default`` or in any experiment not in ``allowed``."""
    for exp in client.search_experiments(view_type=ViewType.ALL):
        runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
        if exp.name not in allowed:
            assert runs == [], f"{len(runs)} runs in experiment {exp.name!r}"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_parallel_sweep_on_a_fresh_sqlite_store(tmp_path: Path, round_: int) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = f"stress-{round_}"
    t0 = time.monotonic()
    output = _finish(
        _start(_sweep_args(uri, experiment, tmp_path / "sweep"), tmp_path / "log"), tmp_path / "log"
    )
    seconds = time.monotonic() - t0
    assert "16/16 jobs finished" in output
    client = MlflowClient(uri)
    ids = _check_sweep(client, experiment, parents=1)
    assert len(set(ids)) == 17
    _no_strays(client, {experiment})
    print(f"\nround {round_}: 16 jobs on 4 workers in {seconds:.1f} s")


def test_parallel_sweeps_into_an_existing_store(tmp_path: Path) -> None:
    """Two sweeps at once into a store that already holds runs, one experiment shared."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    shared = "shared"
    before = {}
    for name in (shared, "other"):
        exp_id = client.create_experiment(name, artifact_location=(tmp_path / name).as_uri())
        for i in range(3):
            run = client.create_run(exp_id, run_name=f"old {i}")
            client.log_batch(run.info.run_id, metrics=[Metric("train_rmse", 1.0 / (i + 1), 0, 1)])
            client.set_terminated(run.info.run_id)
            before[run.info.run_id] = name
    seeds = ((0, 1), (2, 3))
    t0 = time.monotonic()
    procs = [
        (
            _start(
                _sweep_args(uri, shared, tmp_path / f"sweep{k}", seeds=s, workers=2),
                tmp_path / f"log{k}",
            ),
            tmp_path / f"log{k}",
        )
        for k, s in enumerate(seeds)
    ]
    for proc, log in procs:
        _finish(proc, log)
    seconds = time.monotonic() - t0
    exp = client.get_experiment_by_name(shared)
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=5000)
    old = [r for r in runs if r.info.run_id in before]
    new = [r for r in runs if r.info.run_id not in before]
    assert len(old) == 3 and {r.info.status for r in old} == {"FINISHED"}
    sweep_parents = [r for r in new if r.data.tags.get("mlplab_role") == "sweep"]
    assert len(sweep_parents) == 2
    assert len(new) == 2 * (1 + 8)
    assert {r.info.status for r in new} == {"FINISHED"}
    children = [r for r in new if "mlflow.parentRunId" in r.data.tags]
    by_parent = {p.info.run_id: [] for p in sweep_parents}
    for c in children:
        by_parent[c.data.tags["mlflow.parentRunId"]].append(c.data.params["seed"])
    got = sorted(tuple(sorted(set(v))) for v in by_parent.values())
    assert got == [("0", "1"), ("2", "3")]
    assert all(len(v) == 8 for v in by_parent.values())
    other = client.get_experiment_by_name("other")
    assert len(client.search_runs([other.experiment_id], run_view_type=ViewType.ALL)) == 3
    _no_strays(client, {shared, "other"})
    print(f"\ntwo 8-job sweeps at once into an existing store: {seconds:.1f} s")

"""Entry-point paths as a user meets them: ``pipelines/run.py`` in subprocesses, ``make ui``.

- a sweep job refused by validation is a FAILED child (with the reason) and fails the sweep;
- a failed gradient check ends the run FAILED and the command with exit status 1;
- ``--cfg job`` prints the composed config and runs nothing;
- ``make ui`` prints the training-runs link of each experiment of the local store.

The three commands run side by side in one module fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import CONF, ROOT, fresh_store, start_run
from mlplab import ui_link
from mlplab.tracking.uris import default_uri

pytestmark = pytest.mark.slow

QUICK = ["train.epochs=3", "plot.enabled=false", "trace.enabled=false", "train.progress=false"]


@dataclass
class Done:
    """A finished command: its exit status, output, folder and store."""

    returncode: int
    stdout: str
    stderr: str
    folder: Path
    uri: str


def _commands(d: Path, uri: str) -> dict[str, list[str]]:
    return {
        "sweep": [
            "--multirun",
            "+sweep=base",
            "optimizer.lr=0.5,-1",  # the second job is refused by validation
            *QUICK,
            "tracking.register_best=false",
            f"tracking.uri={uri}",
            "tracking.experiment=refused",
            f"hydra.sweep.dir={d / 'multirun'}",
        ],
        "gradcheck": [
            "train.gradcheck=true",
            "train.gradcheck_threshold=1e-300",  # no real gradient is that exact
            *QUICK,
            "tracking.log_model=false",
            f"tracking.uri={uri}",
            "tracking.experiment=gradcheck",
            f"hydra.run.dir={d / 'out'}",
        ],
        "cfg-job": [
            "--cfg",
            "job",
            "model.hidden=[3]",
            "optimizer=adam",
            f"tracking.uri={uri}",
            f"hydra.run.dir={d / 'out'}",
        ],
    }


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Done]]:
    env = {
        **os.environ,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_TRACKING_URI": "sqlite:////nonexistent-dir/do-not-use.db",
    }
    root = tmp_path_factory.mktemp("entry")
    started = {}
    for name in ("sweep", "gradcheck", "cfg-job"):
        d = root / name
        d.mkdir()
        uri = f"sqlite:///{d / 'mlflow.db'}"
        args = _commands(d, uri)[name]
        started[name] = (start_run(*args, env=env), d, uri)
    results = {}
    for name, (proc, d, uri) in started.items():
        out, err = proc.communicate(timeout=600)
        results[name] = Done(proc.returncode, out, err, d, uri)
    yield results


def _runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)


def test_a_job_refused_by_validation_is_a_failed_child(done: dict[str, Done]) -> None:
    r = done["sweep"]
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr
    runs = _runs(r.uri, "refused")
    (parent,) = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FAILED" and len(children) == 2
    by_lr = {float(c.data.params["optimizer.lr"]): c for c in children}
    assert by_lr[0.5].info.status == "FINISHED"
    refused = by_lr[-1.0]
    assert refused.info.status == "FAILED"
    assert refused.data.tags["failure_reason"] == (
        "optimizer.lr=-1.0 is not allowed: expected a number > 0"
    )
    assert "train_rmse" not in refused.data.metrics  # refused before any training
    assert "optimizer.lr=-1.0 is not allowed" in r.stdout + r.stderr


def test_a_failed_gradient_check_exits_1_and_fails_the_run(done: dict[str, Done]) -> None:
    r = done["gradcheck"]
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: run failed: gradient check failed: max relative error ")
    assert errors[0].endswith(" > train.gradcheck_threshold=1e-300")
    (logged,) = _runs(r.uri, "gradcheck")
    assert logged.info.status == "FAILED"
    assert errors[0] == f"error: run failed: {logged.data.tags['failure_reason']}"
    assert 0 < logged.data.metrics["gradcheck_max_rel_error"] < 1e-5  # backprop is right
    assert "train_rmse" not in logged.data.metrics
    assert logged.info.run_id in r.stdout and "FAILED" in r.stdout
    # logged once, and the run's inputs are its artifacts: it can be rerun
    client = MlflowClient(r.uri)
    assert len(client.get_metric_history(logged.info.run_id, "gradcheck_max_rel_error")) == 1
    files = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"config.yaml", "overrides.yaml", "environment.json", "weights"} <= files
    assert [a.path for a in client.list_artifacts(logged.info.run_id, "weights")] == [
        "weights/initial.npz"
    ]


def test_cfg_job_prints_the_composed_config_and_runs_nothing(done: dict[str, Done]) -> None:
    r = done["cfg-job"]
    assert r.returncode == 0, r.stderr[-3000:]
    printed = yaml.safe_load(r.stdout)
    overrides = ["model.hidden=[3]", "optimizer=adam", f"tracking.uri={r.uri}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        composed = OmegaConf.to_container(compose(config_name="config", overrides=overrides))
    assert printed == composed
    groups = {"data", "model", "optimizer", "train", "tracking", "plot", "trace"}
    assert set(printed) == {"seed", *groups}
    assert printed["model"]["hidden"] == [3] and printed["optimizer"]["lr"] == 0.01
    assert not (r.folder / "out").exists() and not (r.folder / "mlflow.db").exists()


# -- make ui -----------------------------------------------------------------------------------
def _ui_lines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> list:
    monkeypatch.setattr(sys, "argv", ["mlplab.ui_link", *args])
    ui_link.main()
    return capsys.readouterr().out.splitlines()


def test_make_ui_prints_the_training_runs_link_of_each_experiment(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    uri = fresh_store(tmp_path_factory)
    client = MlflowClient(uri)
    alpha = client.create_experiment("alpha")
    client.delete_experiment(client.create_experiment("gone"))  # deleted: not listed
    db = uri[len("sqlite:///") :]
    lines = _ui_lines(monkeypatch, capsys, "--db", db, "--host", "h.example", "--port", "5123")
    runs = "runs?workflowType=machine_learning"
    assert lines == [
        "MLflow UI: http://h.example:5123  (Ctrl-C to stop)",
        "Training runs (sweep children grouped under their parent):",
        f"  Default: http://h.example:5123/#/experiments/0/{runs}",
        f"  alpha: http://h.example:5123/#/experiments/{alpha}/{runs}",
    ]
    missing = str(Path(db).parent / "none.db")
    assert _ui_lines(monkeypatch, capsys, "--db", missing) == [
        "MLflow UI: http://127.0.0.1:5000  (Ctrl-C to stop)",
        f"No runs yet in {missing}: try `make run` first.",
    ]


def test_make_ui_reads_the_default_store(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`make ui` lists and serves the store that runs log to by default."""
    seen = []
    monkeypatch.setattr(ui_link, "experiment_links", lambda db, host, port: seen.append(db) or [])
    _ui_lines(monkeypatch, capsys)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_uri() == f"sqlite:///{seen[0]}" == f"sqlite:///{ROOT / 'mlflow.db'}"
    make = subprocess.run(
        ["make", "-n", "-s", "-o", ".venv/.synced", f"PY={sys.executable}", "ui"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")},
    )
    assert make.returncode == 0, make.stderr
    assert "-m mlplab.ui_link --port 5000" in make.stdout
    assert f"--backend-store-uri sqlite:///{ROOT}/mlflow.db --host 127.0.0.1 --port 5000" in (
        make.stdout
    )


def test_help_lists_every_group_option_and_survives_a_closed_pipe() -> None:
    """``--help``: each config group with the options in conf/, the composed config, the
    commands; read by a reader that leaves early (``| head``): no traceback."""
    run_py = [sys.executable, "pipelines/run.py", "--help"]
    out = subprocess.run(run_py, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for group in sorted(p for p in CONF.iterdir() if p.is_dir()):
        options = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
        assert f"\n{group.name}: {options}\n" in out.stdout
    assert "--multirun +sweep=option" in out.stdout and "make rerun" in out.stdout
    assert "\noptimizer:\n  name: sgd\n" in out.stdout  # the composed config
    read, write = os.pipe()
    os.close(read)  # a reader that left before the first line (as `head` may)
    try:
        gone = subprocess.run(run_py, cwd=ROOT, stdout=write, capture_output=False,
                              stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    finally:
        os.close(write)
    assert gone.returncode == 141 and "Traceback" not in gone.stderr, gone.stderr

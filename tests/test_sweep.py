"""Real Hydra multiruns (joblib and basic launchers) into fresh temporary SQLite stores.

What `make sweep` promises: one parent run created before the jobs, a FINISHED child per
job with its whole RMSE history, nothing in "Default", a report on the parent, failure
isolation, and the same weights whether a config runs alone, sequentially or in parallel.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import reference
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import run_cli
from mlplab.pipeline import run
from mlplab.sweep import MlflowSweepCallback, child_name_template, hydra_override, start_parent
from mlplab.tracking import NullSink
from mlplab.weights import load_weights

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXPERIMENT = "sweep-test"
SMOKE_JOBS = 6  # conf/sweep/smoke.yaml: model.hidden [2],[4],[8] × optimizer sgd,adam


def sweep(tmp: Path, *args: str, launcher: str = "population") -> tuple[Any, str]:
    """Run ``pipelines/run.py --multirun`` into a fresh store under ``tmp`` (joblib: 2 workers)."""
    tmp.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    extra = [f"hydra/launcher={launcher}"]
    if launcher == "joblib":
        extra.append("hydra.launcher.n_jobs=2")
    proc = run_cli(
        "--multirun",
        *args,
        *extra,
        f"tracking.uri={uri}",
        f"tracking.experiment={EXPERIMENT}",
        f"hydra.sweep.dir={tmp / 'multirun'}",
        "plot.enabled=false",
        "trace.enabled=false",
        "train.epochs=50",
        timeout=600,
    )
    return proc, uri


def runs_of(uri: str) -> tuple[MlflowClient, Any, list[Any], list[Any]]:
    """(client, parent, children, every run of every experiment) of a sweep's store."""
    client = MlflowClient(tracking_uri=uri)
    every = client.search_runs(
        [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)],
        run_view_type=ViewType.ALL,
        max_results=1000,
    )
    parents = [r for r in every if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    children = [r for r in every if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children, every


def summary_rows(client: MlflowClient, run_id: str, tmp: Path) -> list[dict[str, str]]:
    path = client.download_artifacts(run_id, "summary.csv", str(tmp))
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def check_finished_sweep(proc: Any, uri: str, jobs: int, tmp: Path) -> dict[str, str]:
    """Every promise of a successful sweep; returns ``{run name: weights_sha256}``."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, parent, children, every = runs_of(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None
    assert {r.info.experiment_id for r in every} == {exp.experiment_id}  # none in "Default"
    default = client.get_experiment_by_name("Default")
    if default is not None:
        assert client.search_runs([default.experiment_id], run_view_type=ViewType.ALL) == []
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep"] == "smoke"
    assert parent.data.tags["sweep_jobs"] == str(jobs)
    assert parent.data.tags["mlflow.source.name"] == "pipelines/run.py"  # the UI's Source
    assert parent.data.tags["mlflow.source.git.commit"] == parent.data.tags["git_commit"]
    assert len(children) == jobs
    assert len(every) == jobs + 1
    shas = {}
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("failure_reason")
        epochs = int(child.data.metrics["epochs_run"])
        assert epochs == 50
        history = client.get_metric_history(child.info.run_id, "train_rmse")
        assert len(history) == epochs
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))
        assert "weights_sha256" in child.data.tags
        # the run name is made of the swept values only
        assert child.info.run_name.startswith("hidden=[")
        assert "optimizer=" in child.info.run_name and "epochs" not in child.info.run_name
        shas[child.info.run_name] = child.data.tags["weights_sha256"]
    assert len(shas) == jobs  # distinct, readable names
    # the report on the parent
    rows = summary_rows(client, parent.info.run_id, tmp)
    assert {r["run_id"] for r in rows} == {c.info.run_id for c in children}
    assert all(r["status"] == "FINISHED" and r["test_rmse"] for r in rows)
    rmse = [float(r["test_rmse"]) for r in rows]
    assert rmse == sorted(rmse)
    best = parent.data.tags["best_run_id"]
    assert best == rows[0]["run_id"]
    assert parent.data.metrics["best_test_rmse"] == pytest.approx(rmse[0], rel=1e-12)
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/sweep_rmse.png", "plots/sweep_params.png"}
    assert "sweep smoke" in proc.stdout and "FINISHED" in proc.stdout
    return shas


@pytest.fixture(scope="module")
def three_sweeps(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, str, Path]]:
    """The same sweep three times, each into a fresh store: as populations (make sweep's
    default), then twice in parallel joblib workers (which race on a fresh SQLite store)."""
    out = []
    for attempt, launcher in enumerate(("population", "joblib", "joblib")):
        tmp = tmp_path_factory.mktemp(f"fresh{attempt}")
        # the pyfunc model is logged in the first attempt only (tests/test_model.py checks
        # it): it costs each worker process seconds of package scanning
        proc, uri = sweep(
            tmp, "+sweep=smoke", f"tracking.log_model={attempt == 0}", launcher=launcher
        )
        out.append((proc, uri, tmp))
    return out


def test_sweep_into_fresh_stores_same_weights_whatever_the_launcher(
    three_sweeps: list[tuple[Any, str, Path]],
) -> None:
    shas = [check_finished_sweep(proc, uri, SMOKE_JOBS, tmp) for proc, uri, tmp in three_sweeps]
    assert shas[0] == shas[1] == shas[2]


def test_same_weights_alone_sequential_and_parallel(
    three_sweeps: list[tuple[Any, str, Path]], tmp_path: Path, make_cfg: Any
) -> None:
    proc, uri, _ = three_sweeps[0]
    assert proc.returncode == 0
    _, _, parallel, _ = runs_of(uri)
    by_config = {
        (c.data.params["model.hidden"], c.data.params["optimizer.name"]): c.data.tags[
            "weights_sha256"
        ]
        for c in parallel
    }
    # sequential: the basic launcher, all jobs in one process, one after the other
    seq_proc, seq_uri = sweep(
        tmp_path / "seq",
        "+sweep=smoke",
        "model.hidden=[4]",
        launcher="basic",
    )
    assert seq_proc.returncode == 0, seq_proc.stderr[-3000:]
    _, seq_parent, sequential, _ = runs_of(seq_uri)
    assert seq_parent.info.status == "FINISHED" and len(sequential) == 2
    for child in sequential:
        key = (child.data.params["model.hidden"], child.data.params["optimizer.name"])
        assert child.data.tags["weights_sha256"] == by_config[key], key
    # alone: the same configs run in this process, without tracking
    for optimizer in ("sgd", "adam"):
        cfg = make_cfg(
            "model.hidden=[4]",
            f"optimizer={optimizer}",
            "train.epochs=50",
            "tracking.enabled=false",
            "plot.enabled=false",
            "trace.enabled=false",
        )
        outcome = run(cfg, tmp_path / optimizer, sink=NullSink(), progress=False)
        assert outcome.weights_sha256 == by_config[("[4]", optimizer)]


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["+sweep=base", "seed=0,1", "optimizer.lr=-1"], "optimizer.lr=-1.0 is not allowed"),
        (["+sweep=smoke", "optimizer.lr=-1"], "optimizer.lr=-1.0 is not allowed"),
        (["+sweep=smoke", "optimizer=sgd,adamw"], "optimizer=adamw is not an option: optimizer"),
        (["+sweep=smoke,nosuch"], "sweep=nosuch is not an option: sweep has base, default"),
        (
            ["+sweep=smoke", "data=csv", "data.path=BAD_CSV"],
            "data.path='BAD_CSV': column 'b' is not",
        ),
        (
            ["data=csv", "data.path=BAD_CSV,/nonexistent.csv"],
            "data.path='BAD_CSV': column 'b' is not",
        ),
        (["+sweep=base", "optimizer.lr=interval(0.1,1)"], "optimizer.lr=interval(0.1,1): inter"),
        (["+sweep=base", "seed=range(0,4,0)"], "seed=range(0,4,0): range() arg 3 must not be"),
        (["+sweep=base", "seed=range(4,0)"], "seed=range(4,0): sweeps no value"),
        (
            [
                "+sweep=base",
                "optimizer.nesterov=true",
                "optimizer.momentum=0,0.9",
                "hydra.sweep.subdir=job${hydra.job.num}",  # unresolved until each job's
            ],
            None,
        ),
    ],
    ids=[
        *("every-job", "every-job-of-a-group-sweep", "unknown-option", "unknown-sweep"),
        *(
            "a-bad-data-file",
            "bad-files-swept",
            "interval",
            "range-step-0",
            "empty-range",
            "one-job",
        ),
    ],
)
def test_a_bad_value_every_job_has_refuses_the_sweep_before_any_run(
    tmp_path: Path, overrides: list[str], refused: str | None
) -> None:
    """A bad value on the command line that no swept value replaces (in the config or in a
    file it reads), a swept option that does not exist, or a sweep that names no jobs: one
    message, exit 2, no store and no run (SPEC §8). When a swept value makes a job valid,
    the sweep runs and the refused jobs are FAILED children."""
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b,y\n1,2,3\n4,x,6\n7,8,9\n1,1,1\n2,2,2\n")
    proc, uri = sweep(tmp_path, *(o.replace("BAD_CSV", str(bad_csv)) for o in overrides))
    output = proc.stdout + proc.stderr
    if refused:
        assert proc.returncode == 2, output[-3000:]
        message = f"error: {refused.replace('BAD_CSV', str(bad_csv))}"
        assert message in proc.stderr and "Traceback" not in output, output[-3000:]
        assert not (tmp_path / "mlflow.db").exists()
    else:
        assert proc.returncode == 1, output[-3000:]
        _, parent, children, _ = runs_of(uri)
        statuses = {c.data.params["optimizer.momentum"]: c.info.status for c in children}
        assert parent.info.status == "FAILED" and statuses == {"0.0": "FAILED", "0.9": "FINISHED"}
        assert (tmp_path / "multirun" / "job1" / "config.yaml").is_file()


def test_a_swept_value_of_the_wrong_kind_refuses_the_sweep_before_any_run(
    tmp_path: Path,
) -> None:
    """A swept value the schema cannot hold, on the command line or in a sweep config:
    Hydra's sweeper would stop at its job after the parent run began, running none."""
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "typo.yaml").write_text(
        "# @package _global_\ndefaults:\n  - base\n"
        "hydra:\n  sweeper:\n    params:\n      model.activation: relu,swish\n"
    )
    (tmp_path / "conf" / "sweep" / "option.yaml").write_text(
        "# @package _global_\ndefaults:\n  - base\n"
        "hydra:\n  sweeper:\n    params:\n      optimizer: sgd,adamw\n"
    )
    option = "optimizer=adamw is not an option: optimizer has adam, momentum, sgd"
    choices = "Invalid value 'swish', expected one of [sigmoid, tanh, relu, leaky_relu"
    for args in (
        ["+sweep=smoke", "model.activation=relu,swish"],
        [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "+sweep=typo"],
        ["+sweep=smoke", "train.epochs=5,abc"],
        [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "+sweep=option"],
    ):
        proc, _ = sweep(tmp_path / "run", *args)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 2, output[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in output, output[-3000:]
        assert any(m in errors[0] for m in (choices, "train.epochs: Value 'abc'", option)), errors
        assert not (tmp_path / "run" / "mlflow.db").exists()


def test_a_sweep_to_a_dead_server_is_refused_as_a_run_is(tmp_path: Path) -> None:
    proc = run_cli(
        "--multirun", "+sweep=smoke", "tracking.uri=http://127.0.0.1:9",
        f"hydra.sweep.dir={tmp_path}", "tracking.retries=0",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "error: tracking.uri='http://127.0.0.1:9': the tracking server cannot be reached "
        "([Errno 111] Connection refused); start it (make server) or choose another tracking.uri"
    ]


def test_diverging_child_fails_alone_and_the_parent_reports_it(tmp_path: Path) -> None:
    proc, uri = sweep(
        tmp_path, "+sweep=base", "optimizer.lr=0.01,0.02,1e6", "model.output_activation=identity"
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    client, parent, children, every = runs_of(uri)
    assert all(r.info.status != "RUNNING" for r in every)
    assert parent.info.status == "FAILED"
    assert len(children) == 3
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == {"lr=0.01", "lr=0.02", "lr=1000000.0"}
    failed = by_name["lr=1000000.0"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["failure_reason"].startswith("diverged at epoch ")
    # the finite part of its history is kept
    kept = int(failed.data.metrics["epochs_run"])
    assert 0 < kept < 50
    assert len(client.get_metric_history(failed.info.run_id, "train_rmse")) == kept
    for name in ("lr=0.01", "lr=0.02"):
        assert by_name[name].info.status == "FINISHED"
    rows = {r["run_name"]: r for r in summary_rows(client, parent.info.run_id, tmp_path)}
    assert rows["lr=1000000.0"]["status"] == "FAILED"
    assert rows["lr=1000000.0"]["failure_reason"].startswith("diverged at epoch ")
    assert rows["lr=1000000.0"]["test_rmse"] == ""
    assert parent.data.metrics["n_failed"] == 1
    assert parent.data.tags["best_run_id"] in {
        by_name["lr=0.01"].info.run_id,
        by_name["lr=0.02"].info.run_id,
    }
    assert "1 failed" in proc.stdout


def test_seeds_as_replicates_rank_configs_on_their_mean(tmp_path: Path) -> None:
    """Seeds crossed with a config: the parent gets each config's mean across its seeds, the
    best config chosen on it, and a config whose every seed diverged keeps its row, last."""
    proc, uri = sweep(
        tmp_path,
        "+sweep=base",
        "optimizer.lr=0.02,0.05,1e6",
        "seed=0,1,2",
        "model.output_activation=identity",
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # 3 failed
    client, parent, children, _ = runs_of(uri)
    assert len(children) == 9
    rmse: dict[str, list[tuple[float, str]]] = {}
    for c in children:
        if c.info.status == "FINISHED":
            rmse.setdefault(c.data.params["optimizer.lr"], []).append(
                (c.data.metrics["test_rmse"], c.info.run_id)
            )
    assert sorted(rmse) == ["0.02", "0.05"] and all(len(v) == 3 for v in rmse.values())
    means = {lr: float(np.mean([v for v, _ in runs])) for lr, runs in rmse.items()}
    best_lr = min(means, key=means.__getitem__)
    path = client.download_artifacts(parent.info.run_id, "replicates.csv", str(tmp_path))
    reps = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    other_lr = ({"0.02", "0.05"} - {best_lr}).pop()
    assert [r["optimizer.lr"] for r in reps] == [best_lr, other_lr, "1000000.0"]
    assert [(r["n_seeds"], r["n_failed"]) for r in reps] == [("3", "0"), ("3", "0"), ("0", "3")]
    assert np.isclose(float(reps[0]["mean_test_rmse"]), means[best_lr], rtol=1e-12)
    assert parent.data.metrics["best_config_mean_test_rmse"] == float(reps[0]["mean_test_rmse"])
    assert parent.data.tags["best_run_id"] == min(rmse[best_lr])[1] == reps[0]["best_run_id"]
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/sweep_replicates.png" in artifacts
    table = proc.stdout[proc.stdout.index("across seeds") :].splitlines()
    assert table[-2].split()[:3] == ["1000000.0", "0", "3"], table  # before the best line


# -- the pure parts -----------------------------------------------------------------------
def test_overrides_handed_to_jobs_survive_hydra_parsing() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in ("sqlite:////tmp/a b/mlflow.db", "1234e5678", "x,y", "it's", "plain"):
        parsed = parser.parse_override(hydra_override("tracking.experiment", value))
        assert parsed.value() == value and not parsed.is_sweep_override()
    template = child_name_template(
        ["model.hidden", "optimizer", "plot.enabled", "trace.enabled"], ["optimizer", "model"]
    )
    assert template == (
        "hidden=${oc.select:model.hidden,?} optimizer=${hydra:runtime.choices.optimizer} "
        "plot.enabled=${oc.select:plot.enabled,?} trace.enabled=${oc.select:trace.enabled,?}"
    )


@pytest.mark.parametrize("attempt", [0, 1], ids=["model-logged", "model-built-at-the-end"])
def test_the_best_child_is_registered_and_served(
    three_sweeps: list[tuple[Any, str, Path]], attempt: int, tmp_path: Path
) -> None:
    """`models:/<experiment>@best` is the best child's model, and `mlflow models predict`
    returns its network's outputs (attempt 0 logged every child's model; attempt 1 logged
    none, so the sweep built the best one from its record at the end)."""
    _, uri, _ = three_sweeps[attempt]
    client, parent, _, _ = runs_of(uri)
    best = parent.data.tags["best_run_id"]
    version = client.get_model_version_by_alias(EXPERIMENT, "best")
    assert version.run_id == best
    (output,) = client.get_run(best).outputs.model_outputs  # its logged model (MLflow 3)
    linked = json.loads(client.get_logged_model(output.model_id).tags["mlflow.modelVersions"])
    assert linked == [{"name": EXPERIMENT, "version": version.version}]
    # which sweep chose it: @best moves to each sweep's best child
    assert version.tags["sweep_parent_run_id"] == parent.info.run_id
    assert float(version.tags["test_rmse"]) == pytest.approx(
        client.get_run(best).data.metrics["test_rmse"], rel=1e-5
    )
    test = Path(client.download_artifacts(best, "data/test.csv", str(tmp_path)))
    weights = load_weights(client.download_artifacts(best, "weights/final.npz", str(tmp_path)))
    frame = pd.read_csv(test)
    X = frame[["x1", "x2"]].to_numpy(np.float64)
    params = client.get_run(best).data.params
    expected = reference.forward(
        weights, X, params["model.activation"], params["model.output_activation"]
    )
    inputs = tmp_path / "input.csv"
    frame[["x1", "x2"]].to_csv(inputs, index=False)
    proc = subprocess.run(
        [
            *(str(Path(sys.executable).with_name("mlflow")), "models", "predict"),
            *("-m", f"models:/{EXPERIMENT}@best", "-i", str(inputs), "-t", "csv"),
            *("-o", str(tmp_path / "out.json"), "--env-manager", "local"),
        ],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    predicted = pd.DataFrame(json.loads((tmp_path / "out.json").read_text())["predictions"])
    assert list(predicted.columns) == ["y1", "y2"]
    np.testing.assert_allclose(predicted.to_numpy(), expected, rtol=0, atol=1e-12)


def test_a_sweep_report_cut_short_by_ctrl_c_leaves_its_parent_killed(tmp_path: Path) -> None:
    """Ctrl-C (or SIGTERM, which the sweep turns into it) while the report is written."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    callback = MlflowSweepCallback()
    callback.parent = start_parent(uri, EXPERIMENT, "sweep cut short", {}, {})

    def interrupted(config: Any, parent: Any) -> str:
        raise KeyboardInterrupt

    callback._finish = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        callback.on_multirun_end(config=None)  # type: ignore[arg-type]
    parent = MlflowClient(tracking_uri=uri).get_run(callback.parent.run_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["failure_reason"] == "interrupted while the sweep report was written"

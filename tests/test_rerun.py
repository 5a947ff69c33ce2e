"""`make rerun`: a sweep child replayed from its logged config.yaml gives the same weights."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, run_cli, start_run, wait_for_file
from mlplab.weights import load_weights, save_weights

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def rerun_module() -> Iterator[ModuleType]:
    """pipelines/rerun.py imported, to call ``main`` in this process (SIGTERM restored)."""
    spec = importlib.util.spec_from_file_location("mlplab_rerun", ROOT / "pipelines/rerun.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    old = signal.getsignal(signal.SIGTERM)
    yield module
    signal.signal(signal.SIGTERM, old)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small sweep (2 jobs, one population) in a fresh store: its store and its children."""
    tmp = tmp_path_factory.mktemp("rerun-source")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    proc = run_cli(
        "--multirun",
        "+sweep=smoke",
        "model.hidden=[2]",
        f"tracking.uri={uri}",
        "tracking.experiment=rerun-test",
        f"hydra.sweep.dir={tmp / 'multirun'}",
        "train.epochs=60",
        "tracking.log_model=false",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("rerun-test")
    assert exp is not None
    children = [
        r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags
    ]
    assert len(children) == 2
    return {"uri": uri, "tmp": tmp, "client": client, "children": children}


def new_runs(client: MlflowClient, original: str) -> list[Any]:
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, filter_string=f"tags.rerun_of = '{original}'")


def test_rerun_of_a_sweep_child_matches(source: dict[str, Any], tmp_path: Path) -> None:
    child = source["children"][0]
    proc = run_cli(
        child.info.run_id,
        "--source-uri",
        source["uri"],
        "--out",
        str(tmp_path / "out"),
        script="pipelines/rerun.py",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sha = child.data.tags["weights_sha256"]
    assert f"MATCH: weights sha256 {sha}" in proc.stdout
    (rerun,) = new_runs(source["client"], child.info.run_id)
    assert rerun.info.status == "FINISHED"
    assert rerun.data.tags["weights_sha256"] == sha
    assert "mlflow.parentRunId" not in rerun.data.tags  # a rerun is a top-level run
    assert rerun.info.experiment_id == child.info.experiment_id
    assert rerun.info.run_name == f"rerun of {child.info.run_name}"
    assert rerun.data.params == {
        **child.data.params,
        "tracking.parent_run_id": "null",
        "tracking.run_name": rerun.info.run_name,
    }


def test_rerun_into_another_store_matches(
    source: dict[str, Any],
    rerun_module: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    child = source["children"][1]
    other = f"sqlite:///{tmp_path / 'other.db'}"
    code = rerun_module.main(
        [
            child.info.run_id,
            f"tracking.uri={other}",
            "train.blas_threads=1",  # no effect on so small a net: named all the same
            "--source-uri",
            source["uri"],
            "--out",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "MATCH" in out
    assert "(differs, without effect) config train.blas_threads: " in out
    (rerun,) = new_runs(MlflowClient(tracking_uri=other), child.info.run_id)
    assert rerun.data.tags["weights_sha256"] == child.data.tags["weights_sha256"]


def test_a_changed_config_differs(
    source: dict[str, Any],
    rerun_module: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    child = source["children"][0]
    code = rerun_module.main(
        [
            child.info.run_id,
            "optimizer.lr=0.123",
            "--source-uri",
            source["uri"],
            "--out",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "DIFFER" in out and "MATCH" not in out
    # it says why: the config key, the weights, the first epoch where the history departs
    assert f"config optimizer.lr: {child.data.params['optimizer.lr']} → 0.123" in out
    assert "W0: max |Δw| = " in out and "W1: max |Δw| = " in out
    assert "train_rmse departs at epoch 2 " in out  # epoch 1 is measured before any update
    runs = new_runs(source["client"], child.info.run_id)
    changed = [r for r in runs if r.data.params["optimizer.lr"] == "0.123"]
    assert len(changed) == 1 and changed[0].info.status == "FINISHED"
    assert changed[0].info.run_name == f"rerun of {child.info.run_name} with optimizer.lr=0.123"


def test_the_run_is_found_in_the_store_the_overrides_name(
    source: dict[str, Any],
    rerun_module: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No --source-uri: the store named by tracking.uri is searched as well as the default
    (which this test suite points at a missing folder)."""
    child = source["children"][0]
    argv = [child.info.run_id, f"tracking.uri={source['uri']}", "--out", str(tmp_path / "out")]
    code = rerun_module.main(argv)
    out = capsys.readouterr().out
    assert code == 0 and f"MATCH: weights sha256 {child.data.tags['weights_sha256']}" in out, out
    assert f"from {source['uri']}" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0123456789abcdef0123456789abcdef"], "not found"),
        (["{child}", "optimizer=adam"], "optimizer=adam"),
        (["{child}", "optimizer.nope=1"], "optimizer.nope is not a config key: optimizer has"),
        (["{child}", "nope=1"], "nope is not a config key: the config has seed, data,"),
        (["{child}", "model.hidden=[2"], "model.hidden=[2 is not valid: while parsing"),
        (["{child}", "optimizer.lr=-1"], "optimizer.lr"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    source: dict[str, Any],
    rerun_module: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    child = source["children"][0].info.run_id
    argv = [a.format(child=child) for a in args]
    code = rerun_module.main([*argv, "--source-uri", source["uri"], "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_a_source_store_that_is_not_there_is_named_at_once(
    rerun_module: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source store that does not exist is not created (a SQLite file), nor waited for
    through MLflow's retries (a server nothing answers: four minutes before)."""
    missing = tmp_path / "nowhere.db"
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cases = ((f"sqlite:///{missing}", "no MLflow store there"), (dead, "cannot be reached"))
    for uri, says in cases:
        started = time.monotonic()
        assert rerun_module.main(["0123abcd", "--source-uri", uri]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "not found" in lines[0] and says in lines[0], lines
        assert time.monotonic() - started < 60
    assert not missing.exists()


def test_a_run_that_ended_before_its_files_were_stored_says_so(
    rerun_module: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run refused, or killed before its inputs reached the store, has no config.yaml:
    the message gives its status and reason (not a store moved)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("x"), tags={"failure_reason": "killed: x"})
    client.set_terminated(run.info.run_id, "KILLED")
    assert rerun_module.main([run.info.run_id, "--source-uri", uri]) == 2
    err = capsys.readouterr().err  # after MLflow's log lines of the store it created
    assert err.endswith(
        f"error: run '{run.info.run_id}' has no config.yaml artifact: it cannot be rerun (it "
        "ended KILLED, killed: x, before its files reached the store)\n"
    )


def test_a_sweep_parent_points_at_its_children(
    source: dict[str, Any], rerun_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = source["children"][0].data.tags["mlflow.parentRunId"]
    assert rerun_module.main([parent, "--source-uri", source["uri"]]) == 2
    err = capsys.readouterr().err
    assert f"error: run '{parent}' is the parent of a sweep: it trained nothing; rerun" in err


def test_a_store_moved_without_its_artifacts_is_named(
    source: dict[str, Any],
    rerun_module: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The artifacts folder moved away: the runs' artifacts are not where the store says."""
    gone = str(source["tmp"] / "mlartifacts")
    shutil.move(gone, tmp_path / "elsewhere")
    try:
        child = source["children"][0].info.run_id
        argv = [child, "--source-uri", f"sqlite:///{source['tmp'] / 'mlflow.db'}"]
        code = rerun_module.main([*argv, "--out", str(tmp_path / "out")])
    finally:
        shutil.move(tmp_path / "elsewhere", gone)
    err = capsys.readouterr().err
    assert code == 2
    assert "has no config.yaml artifact" in err and f"should be in {gone}/" in err, err
    assert "which does not exist: was the store moved?" in err


def test_a_changed_input_file_is_named_in_the_differ(
    rerun_module: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same config, but its model.init_file and data.path edited since the run."""
    rng = np.random.default_rng(0)
    save_weights(tmp_path / "w.npz", [rng.standard_normal((3, 2)), rng.standard_normal((3, 1))])
    x = rng.random((30, 2))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "t": x.sum(1)}).to_csv(
        tmp_path / "d.csv", index=False
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(
        *("model.init=file", f"model.init_file={tmp_path / 'w.npz'}", "train.epochs=20"),
        *("data=csv", f"data.path={tmp_path / 'd.csv'}", "data.targets=[t]"),
        *("plot.enabled=false", "trace.enabled=false", "tracking.log_model=false"),
        f"tracking.uri={uri}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = proc.stdout.split()[1].rstrip(":")
    # a test row's target edited: the same training (MATCH), said around it
    row = pd.read_csv(tmp_path / "run" / "data" / "test.csv").iloc[0]  # x standardised
    (i,) = np.flatnonzero(x.sum(1) == row["y1"])
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "t": x.sum(1)})
    frame.loc[i, "t"] += 3.0
    frame.to_csv(tmp_path / "d.csv", index=False)
    code = rerun_module.main([run_id, "--source-uri", uri, "--out", str(tmp_path / "match")])
    out = capsys.readouterr().out
    assert code == 0 and "MATCH" in out, out
    note = ": other numbers (the data file changed since?)"
    assert f"  (differs, without effect) data/test.csv{note}" in out.splitlines(), out
    weights = load_weights(tmp_path / "w.npz")
    weights[1][2, 0] += 0.25
    save_weights(tmp_path / "w.npz", weights)
    x[0, 0] += 1.0
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "t": x.sum(1)}).to_csv(
        tmp_path / "d.csv", index=False
    )
    code = rerun_module.main([run_id, "--source-uri", uri, "--out", str(tmp_path / "again")])
    out = capsys.readouterr().out
    assert code == 1 and "DIFFER" in out, out
    assert "  initial weights W0: max |Δw| = 0\n  initial weights W1: max |Δw| = 0.25\n" in out
    changed = [line for line in out.splitlines() if line.startswith("  data/")]
    assert changed and set(changed) <= {f"  data/{split}.csv{note}" for split in ("train", "test")}


def test_rerun_of_an_interrupted_run_replays_the_epochs_it_ran(
    rerun_module: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C'd at epoch n of 10⁸: the rerun trains n epochs (all 10⁸ could never match)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    proc = start_run(
        "train.epochs=100000000",
        "train.tol=0",
        "plot.enabled=false",
        "tracking.log_model=false",
        f"tracking.uri={uri}",
        f"hydra.run.dir={out}",
    )
    wait_for_file(out / "config.yaml", proc)  # written as training begins
    time.sleep(2)  # some epochs
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "KILLED"
    n = int(run.data.metrics["epochs_run"])
    code = rerun_module.main(
        [run.info.run_id, "--source-uri", uri, "--out", str(tmp_path / "re"), f"tracking.uri={uri}"]
    )
    printed = capsys.readouterr().out
    assert f"it was interrupted after {n} epochs: the rerun trains {n} " in printed
    (rerun,) = new_runs(client, run.info.run_id)
    assert int(rerun.data.metrics["epochs_run"]) == n
    # the interrupt was taken between two epochs: the weights kept are epoch n's
    assert code == 0 and "MATCH" in printed, printed

"""The whole pipeline into a temporary SQLite store: every SPEC §5 item, read back."""

from __future__ import annotations

import getpass
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import SPEC_ARTIFACTS, artifact_paths, run_cli
from mlplab.nn import MLP, OptimizerSpec, TrainData, TrainSettings, fit, make_optimizer
from mlplab.nn.trainer import TrainResult
from mlplab.pipeline import network_subtitle, rmse_title, run
from mlplab.weights import load_weights, weights_sha256

#: The tutorial's weights sha256 (the README's number) by the OpenBLAS kernel NumPy runs:
#: the tiny products' rounding is the kernel's (Haswell: AMD EPYC; SkylakeX: Intel AVX-512).
TUTORIAL_SHA = {"Haswell": "068d61535304", "SkylakeX": "4bb187d423dd"}


@pytest.fixture(scope="module")
def tutorial_run(tmp_path_factory):
    """`pipelines/run.py` on the defaults (the tutorial), as a user runs it."""
    tmp = tmp_path_factory.mktemp("tutorial")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    proc = run_cli(f"tracking.uri={uri}", f"hydra.run.dir={tmp / 'out'}")
    return proc, uri, tmp


def test_cli_run_finishes_with_one_run(tutorial_run):
    proc, uri, _ = tutorial_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mlplab")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_id in proc.stdout
    # `make ui` serves the project's store only: for another, the command that shows it
    assert f"look at it: mlflow ui --backend-store-uri {uri}" in proc.stdout


def test_tutorial_run_holds_every_spec_item(tutorial_run):
    _, uri, tmp = tutorial_run
    client = MlflowClient(uri)
    r = client.search_runs([client.get_experiment_by_name("mlplab").experiment_id])[0]
    run_id = r.info.run_id
    # params: the composed config, flattened to dotted keys
    p = r.data.params
    assert p["model.hidden"] == "[2]" and p["optimizer.lr"] == "0.5"
    assert p["data.name"] == "tutorial" and p["train.reduction"] == "sum"
    assert p["optimizer.name"] == "sgd" and p["seed"] == "0"
    # metrics
    m = r.data.metrics
    for key in ("test_rmse", "test_mae", "test_r2", "epochs_run", "train_seconds"):
        assert key in m, key
    epochs = int(m["epochs_run"])
    hist = client.get_metric_history(run_id, "train_rmse")
    assert [h.step for h in hist] == list(range(1, epochs + 1))
    assert hist[-1].value < 0.05  # the tutorial fits
    # the points went in in bulk (tracking/sqlite_store.py), the last one through log_batch:
    # MLflow's latest value is the last epoch's, and the file is in WAL mode
    assert m["train_rmse"] == hist[-1].value
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert m["final_train_rmse"] < 0.05 and m["test_rmse"] < 0.05
    # the tutorial's stopping rule: |RMSE_i - RMSE_(i-1)| < 1e-6 ends it at epoch 435
    assert epochs == 435 and r.data.tags["stop_reason"] == "tolerance"
    assert abs(hist[-1].value - hist[-2].value) < 1e-6 <= abs(hist[-2].value - hist[-3].value)
    # tags
    t = r.data.tags
    assert len(t["weights_sha256"]) == 64 and t["mlplab_version"] and t["git_commit"]
    kernel = t["env.blas"].split()[-1]  # SPEC §6: the weights of a config on a machine type
    if kernel in TUTORIAL_SHA:
        assert t["weights_sha256"].startswith(TUTORIAL_SHA[kernel]), kernel
    # a readable name (not MLflow's random one), MLflow's source tags, the environment
    assert r.info.run_name == "tutorial · sgd lr=0.5 · [2]"
    assert t["mlflow.source.name"] == "pipelines/run.py" and t["mlflow.source.type"] == "LOCAL"
    assert t["mlflow.source.git.commit"] == t["git_commit"]
    assert t["mlflow.user"] == r.info.user_id == getpass.getuser()  # the UI's User column
    assert t["env.numpy"] == np.__version__ and int(t["env.blas_threads"]) >= 1
    # the data splits as MLflow datasets: name, digest, context
    inputs = {i.tags[0].value: i.dataset for i in r.inputs.dataset_inputs if i.tags}
    assert set(inputs) == {"training", "testing"}
    assert {d.name for d in inputs.values()} == {"tutorial"}
    assert inputs["training"].digest != inputs["testing"].digest
    # artifacts
    names = artifact_paths(client, run_id)
    missing = sorted(SPEC_ARTIFACTS - names)
    assert not missing, missing
    local = Path(download_artifacts(run_id=run_id, tracking_uri=uri, dst_path=str(tmp / "dl")))
    final = load_weights(local / "weights" / "final.npz")
    assert [W.shape for W in final] == [(3, 2), (3, 2)]
    assert [W.shape for W in load_weights(local / "weights" / "initial.npz")] == [(3, 2), (3, 2)]
    assert weights_sha256(final) == t["weights_sha256"]
    for png in ("rmse", "predictions", "network"):
        with Image.open(local / "plots" / f"{png}.png") as im:
            assert im.size[0] > 200 and im.size[1] > 200
    train = pd.read_csv(local / "data" / "train.csv")
    test = pd.read_csv(local / "data" / "test.csv")
    assert list(train.columns) == ["x1", "x2", "y1", "y2"] and len(train) == 40 and len(test) == 10
    cfg = yaml.safe_load((local / "config.yaml").read_text())
    assert cfg["model"]["hidden"] == [2] and cfg["tracking"]["uri"] == uri
    env = json.loads((local / "environment.json").read_text())
    assert env["numpy"] == np.__version__ and env["git"]["commit"] == t["git_commit"]
    # the whole history as an artifact, equal to the logged points
    whole = np.load(local / "history" / "train_rmse.npy")
    np.testing.assert_array_equal(whole, [h.value for h in hist])
    # the model
    assert "model/MLmodel" in names


def test_training_csv_is_exactly_what_the_network_saw(make_cfg, store, tmp_path):
    """Rebuild training from the logged CSV + initial weights: same final weights, bit for bit."""
    cfg = make_cfg(
        f"tracking.uri={store}",
        "plot.enabled=false",
        "trace.enabled=false",
        "train.epochs=30",
        "train.tol=0",
        "train.batch_size=16",
        "train.shuffle=false",
        "data.n_samples=50",
        "tracking.log_model=false",
    )
    outcome = run(cfg, tmp_path / "out")
    out = tmp_path / "out"
    train = pd.read_csv(out / "data" / "train.csv")
    X, T = train[["x1", "x2"]].to_numpy(), train[["y1", "y2"]].to_numpy()
    net = MLP([2, 2, 2])
    net.set_weights(load_weights(out / "weights" / "initial.npz"))
    settings = TrainSettings(epochs=30, batch_size=16, shuffle=False, tol=0.0)
    opt = make_optimizer(net.weights, [OptimizerSpec("sgd", cfg.optimizer.lr)])
    (result,) = fit(net, TrainData(X, T), opt, [settings], [np.random.default_rng(0)])
    assert weights_sha256(result.weights) == outcome.weights_sha256


def test_tracking_disabled_writes_files_but_no_store(make_cfg, tmp_path):
    cfg = make_cfg("tracking.enabled=false", "plot.enabled=false", "train.epochs=20")
    outcome = run(cfg, tmp_path / "out")
    assert outcome.run_id is None and outcome.status == "FINISHED"
    assert (tmp_path / "out" / "weights" / "final.npz").is_file()
    assert not (tmp_path / "mlflow.db").exists()


def test_a_run_without_a_test_set_says_so(make_cfg, tmp_path):
    cfg = make_cfg("tracking.enabled=false", "plot.enabled=false", "data.test_fraction=0")
    outcome = run(cfg, tmp_path / "out")
    assert "test_rmse" not in outcome.metrics and outcome.status == "FINISHED"
    train = f"train RMSE {outcome.metrics['final_train_rmse']:.6f}"
    assert f"  {train}   no test set (data.test_fraction=0)" in outcome.describe()
    assert outcome.describe(brief=True).endswith(f"{train}, no test set")


def test_val_split_logs_val_rmse_every_epoch(make_cfg, store, tmp_path):
    cfg = make_cfg(
        f"tracking.uri={store}",
        "plot.enabled=false",
        "trace.enabled=false",
        "data.val_fraction=0.2",
        "train.epochs=25",
        "train.tol=0",
        "tracking.log_model=false",
    )
    outcome = run(cfg, tmp_path / "out")
    client = MlflowClient(store)
    assert [h.step for h in client.get_metric_history(outcome.run_id, "val_rmse")] == list(
        range(1, 26)
    )
    assert "val.csv" in {
        a.path.split("/")[-1] for a in client.list_artifacts(outcome.run_id, "data")
    }


@pytest.mark.parametrize(
    ("experiment", "metric", "bound"),
    [
        ("xor", "test_rmse", 0.05),
        ("sine", "test_rmse", 0.08),
        ("spiral", "test_accuracy", 0.95),
        ("iris", "test_accuracy", 0.90),
    ],
)
def test_example_experiments_reach_their_claims(
    make_cfg, store, tmp_path, experiment, metric, bound
):
    cfg = make_cfg(f"experiment={experiment}", f"tracking.uri={store}", "plot.animate=false")
    outcome = run(cfg, tmp_path / "out")
    value = MlflowClient(store).get_run(outcome.run_id).data.metrics[metric]
    if metric == "test_rmse":
        assert value < bound
    else:
        assert value >= bound
    if cfg.data.task == "classification":
        # a decision boundary only for 2-D inputs (spiral), not for the 4-D iris data
        assert (tmp_path / "out" / "plots" / "decision_boundary.png").exists() == (
            experiment == "spiral"
        )


def test_tutorial_network_gif_has_the_configured_frames(tutorial_run):
    """plot.frames (30) snapshots, even though the tutorial stops early (~435 epochs)."""
    _, uri, tmp = tutorial_run
    client = MlflowClient(uri)
    run_id = client.search_runs([client.get_experiment_by_name("mlplab").experiment_id])[0]
    path = download_artifacts(
        run_id=run_id.info.run_id,
        artifact_path="plots/network.gif",
        tracking_uri=uri,
        dst_path=str(tmp / "gif"),
    )
    with Image.open(path) as gif:
        assert gif.n_frames == 30
        gif.seek(0)
        first = np.asarray(gif.convert("RGB"))
        gif.seek(gif.n_frames - 1)
        last = np.asarray(gif.convert("RGB"))
    assert first.shape == last.shape and (first != last).any()


def test_the_network_figure_says_whose_weights_it_shows() -> None:
    """Early stopping keeps the best epoch's weights: the figure names that epoch."""
    metrics = {"final_train_rmse": 0.05}

    def result(best: int | None, interrupted: bool = False) -> TrainResult:
        return TrainResult({}, [], 82, 1.0, "early_stopping", None, interrupted, best)

    assert (
        network_subtitle(result(None), metrics) == "82 epochs, train RMSE 0.050000 (final weights)"
    )
    assert network_subtitle(result(62), metrics) == (
        "82 epochs, the weights of epoch 62 (best validation RMSE): train RMSE 0.050000"
    )
    assert network_subtitle(result(82), metrics).endswith("(final weights)")
    assert network_subtitle(result(62, True), metrics).endswith("(final weights)")  # cut short
    assert rmse_title(result(62)) == "RMSE across epochs (weights kept: epoch 62, best validation)"
    assert rmse_title(result(None)) == rmse_title(result(82)) == "RMSE across epochs"
    # a net that blew up without reaching inf: 6 digits, not 150
    assert network_subtitle(result(None), {"final_train_rmse": 2.2092488584007e143}) == (
        "82 epochs, train RMSE 2.20925e+143 (final weights)"
    )

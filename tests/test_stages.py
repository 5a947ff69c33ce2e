"""README promises of a run, read back from MLflow and recomputed independently.

Short runs go through the real pipeline, in this process, into one temporary SQLite store
(figures, trace and the model off). Each test reads what the store holds — tags, metric
histories, ``data/*.csv``, ``weights/*.npz`` — and checks it against a plain-NumPy
recomputation (``tests/reference.py``): the learning-rate schedules, early stopping and its
restored weights, every ``stop_reason``, the evaluation metrics, and the keys
``tracking.data_max_rows``, ``tracking.log_model``, ``tracking.timeout``/``retries``,
``data=moons`` and ``model.init``.
"""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import reference
import yaml
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient

from conftest import artifact_paths, compose_config, fresh_store, initial_network, job_of
from mlplab.errors import TrackingError
from mlplab.pipeline import configure, run, train, write_inputs
from mlplab.weights import load_weights, weights_sha256

QUICK = [
    "plot.enabled=false",
    "trace.enabled=false",
    "tracking.log_model=false",
    "train.progress=false",
]
TUTORIAL_FIXED = ["train.tol=0", "train.epochs=8"]
SINE_PATIENCE = [
    "data=sine",
    "data.n_samples=60",
    "data.noise=0.3",
    "data.val_fraction=0.25",
    "model=mlp",
    "model.hidden=[16]",
    "optimizer=adam",
    "optimizer.lr=0.05",
    "train.reduction=mean",
    "train.tol=1e-4",
    "train.patience=10",
    "train.epochs=2000",
]
#: The runs of this module, by name: their overrides.
RUNS: dict[str, list[str]] = {
    "step": [*TUTORIAL_FIXED, "optimizer.schedule=step", "optimizer.step_size=3"],
    "exponential": [*TUTORIAL_FIXED, "optimizer.schedule=exponential", "optimizer.gamma=0.8"],
    "patience": SINE_PATIENCE,
    "tolerance": ["train.tol=1e-4", "tracking.data_max_rows=49"],  # 50 rows: no CSVs
    "max_epochs": ["train.tol=0", "train.epochs=12", "tracking.data_max_rows=50"],
    "moons": [
        "data=moons",
        "data.n_samples=200",
        "model=classifier",
        "model.hidden=[8]",
        "train.loss=cross_entropy",
        "train.reduction=mean",
        "optimizer=adam",
        "optimizer.lr=0.05",
        "train.tol=0",
        "train.epochs=40",
    ],
}


@dataclass
class Logged:
    """One run as the store holds it."""

    overrides: list[str]
    run: Any  # mlflow.entities.Run
    artifacts: set[str]
    files: Path  # the downloaded artifacts
    history: dict[str, np.ndarray]  # every logged metric history, by key

    @property
    def tags(self) -> dict[str, str]:
        return self.run.data.tags

    @property
    def metrics(self) -> dict[str, float]:
        return self.run.data.metrics

    def csv(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The logged ``data/<split>.csv`` as (X, Y)."""
        frame = pd.read_csv(self.files / "data" / f"{split}.csv")
        xs = [c for c in frame.columns if c.startswith("x")]
        ys = [c for c in frame.columns if c.startswith("y")]
        assert list(frame.columns) == xs + ys and xs and ys
        return frame[xs].to_numpy(), frame[ys].to_numpy()

    def weights(self, which: str) -> list[np.ndarray]:
        return load_weights(self.files / "weights" / f"{which}.npz")


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Logged]]:
    """``logged(name)``: the run ``RUNS[name]``, run once into the module's store."""
    store = fresh_store(tmp_path_factory)
    client = MlflowClient(store)
    done: dict[str, Logged] = {}

    def get(name: str) -> Logged:
        if name not in done:
            tmp = tmp_path_factory.mktemp(name)
            ovs = [*RUNS[name], *QUICK, f"tracking.uri={store}", f"tracking.experiment={name}"]
            outcome = run(compose_config(*ovs), tmp / "out", ovs)
            assert outcome.status == "FINISHED" and outcome.run_id, outcome.failure
            run_id = outcome.run_id
            logged_run = client.get_run(run_id)
            files = Path(
                download_artifacts(run_id=run_id, tracking_uri=store, dst_path=str(tmp / "dl"))
            )
            history = {
                key: np.array([m.value for m in client.get_metric_history(run_id, key)])
                for key in logged_run.data.metrics
            }
            done[name] = Logged(ovs, logged_run, artifact_paths(client, run_id), files, history)
        return done[name]

    yield get


# -- learning-rate schedules ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "schedule", "step_size", "gamma"),
    [("step", "step", 3, 0.5), ("exponential", "exponential", 1000, 0.8)],
)
def test_the_schedule_set_in_the_config_drives_training(
    logged: Callable[[str], Logged], name: str, schedule: str, step_size: int, gamma: float
) -> None:
    """optimizer.schedule/step_size/gamma (README defaults: step_size 1000, gamma 0.5):
    the logged final weights and RMSE history equal the tutorial's gradient descent at
    those rates, recomputed by hand from the logged training data and initial weights."""
    r = logged(name)
    p = r.run.data.params
    assert (p["optimizer.schedule"], p["optimizer.step_size"]) == (schedule, str(step_size))
    assert float(p["optimizer.gamma"]) == gamma
    X, T = r.csv("train")
    v, w = r.weights("initial")
    lrs = [reference.lr_at(0.5, schedule, epoch, step_size, gamma) for epoch in range(1, 9)]
    assert len(set(lrs)) > 2  # the rate changes within the run
    v_end, w_end, rmse = reference.tutorial_descent(v, w, X, T, lrs)
    final = r.weights("final")
    np.testing.assert_allclose(final[0], v_end, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(final[1], w_end, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.history["train_rmse"], rmse, rtol=1e-12)
    # and not what a constant rate would have given
    _, w_const, _ = reference.tutorial_descent(v, w, X, T, [0.5] * 8)
    assert np.abs(w_const - final[1]).max() > 1e-6


# -- stopping rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tolerance", "max_epochs", "patience"])
def test_stop_reason_is_tagged_and_follows_the_rules(
    logged: Callable[[str], Logged], name: str
) -> None:
    """The ``stop_reason`` tag in MLflow, ``epochs_run`` and the length of the history are
    those of the README's rules applied to the logged histories."""
    r = logged(name)
    t = yaml.safe_load((r.files / "config.yaml").read_text())["train"]
    train, val = r.history["train_rmse"], r.history.get("val_rmse")
    ran, reason, _ = reference.expected_stop(train, val, t["epochs"], t["tol"], t["patience"])
    expected_reason = {"patience": "early_stopping"}.get(name, name)
    assert (r.tags["stop_reason"], reason) == (expected_reason, expected_reason)
    assert int(r.metrics["epochs_run"]) == ran == len(train)
    assert r.run.info.status == "FINISHED"


def test_patience_restores_the_best_weights_and_logs_them_as_final(
    logged: Callable[[str], Logged],
) -> None:
    """train.patience: training stops ``patience`` epochs after the best validation RMSE, and
    weights/final.npz (and its hash tag) are that best epoch's weights."""
    r = logged("patience")
    assert r.run.data.params["train.patience"] == "10"
    val = r.history["val_rmse"]
    _, _, best = reference.expected_stop(r.history["train_rmse"], val, 2000, 1e-4, 10)
    assert best is not None and len(val) == best + 10
    final = r.weights("final")
    X_val, Y_val = r.csv("val")
    now = reference.rmse(Y_val, reference.forward(final, X_val, "tanh", "identity"))
    assert now == pytest.approx(val[best - 1], rel=1e-9)
    assert now == pytest.approx(r.metrics["final_val_rmse"], rel=1e-12)
    assert now < val[-1]  # not the weights training ended with
    assert weights_sha256(final) == r.tags["weights_sha256"]


def test_the_animation_does_not_change_what_early_stopping_trains() -> None:
    """plot.animate only asks for snapshots of the weights: with train.patience the same
    epochs are trained and the same weights kept, animated or not."""
    results = {}
    for animate in (False, True):
        cfg = compose_config(
            *SINE_PATIENCE, "optimizer.lr=0.5", "train.patience=3", f"plot.animate={animate}"
        )
        (results[animate],) = train([job_of(cfg)])
    assert 0 not in (results[False].best_epoch, results[True].best_epoch)
    assert (results[True].epochs_run, results[True].best_epoch) == (
        results[False].epochs_run,
        results[False].best_epoch,
    )
    assert weights_sha256(results[True].weights) == weights_sha256(results[False].weights)


# -- evaluation metrics -----------------------------------------------------------------------
def _check_metrics(r: Logged, hidden: str, output: str) -> dict[str, float]:
    """test_* and final_train_* recomputed from the logged CSVs and final weights."""
    final = r.weights("final")
    expected = {}
    for split, prefix in (("test", "test"), ("train", "final_train")):
        X, Y = r.csv(split)
        y = reference.forward(final, X, hidden, output)
        expected |= {
            f"{prefix}_rmse": reference.rmse(Y, y),
            f"{prefix}_mae": reference.mae(Y, y),
            f"{prefix}_r2": reference.r2(Y, y),
        }
        if output == "softmax":
            expected[f"{prefix}_accuracy"] = reference.accuracy(Y, y)
    for key, value in expected.items():
        assert r.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    return expected


def test_regression_metrics_equal_their_definitions(logged: Callable[[str], Logged]) -> None:
    r = logged("max_epochs")
    expected = _check_metrics(r, "sigmoid", "sigmoid")
    # the splits differ, so each metric is measured on its own split
    assert expected["test_r2"] != pytest.approx(expected["final_train_r2"], rel=1e-6)
    assert expected["test_mae"] != pytest.approx(expected["final_train_mae"], rel=1e-6)


def test_moons_runs_and_its_accuracy_equals_its_definition(
    logged: Callable[[str], Logged],
) -> None:
    """data=moons in a run: two classes, one-hot targets, accuracy of the arg-max."""
    r = logged("moons")
    assert r.run.data.params["data.name"] == "moons"
    assert r.run.data.params["data.task"] == "classification"
    X, Y = r.csv("train")
    assert X.shape == (160, 2) and Y.shape == (160, 2)
    assert set(np.unique(Y)) == {0.0, 1.0} and (Y.sum(axis=1) == 1).all()
    assert 0.3 < Y[:, 0].mean() < 0.7  # both half circles
    expected = _check_metrics(r, "relu", "softmax")
    assert expected["test_accuracy"] > 0.75
    assert len(r.history["train_accuracy"]) == 40
    inputs = {i.tags[0].value: i.dataset.name for i in r.run.inputs.dataset_inputs if i.tags}
    assert inputs == {"training": "moons", "testing": "moons"}


# -- tracking keys ----------------------------------------------------------------------------
def test_data_max_rows_bounds_the_logged_csvs(logged: Callable[[str], Logged]) -> None:
    """tracking.data_max_rows: 50 rows are logged under a bound of 50, not under 49."""
    assert {"data/train.csv", "data/test.csv"} <= logged("max_epochs").artifacts
    assert not [a for a in logged("tolerance").artifacts if a.startswith("data/")]


@pytest.mark.parametrize("name", ["max_epochs", "tolerance"])
def test_log_model_false_logs_no_model(logged: Callable[[str], Logged], name: str) -> None:
    r = logged(name)
    assert r.run.data.params["tracking.log_model"] == "False"
    assert not [a for a in r.artifacts if a.startswith("model")]
    assert {"weights/final.npz", "config.yaml"} <= r.artifacts  # the rest is there


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections and never answers: each request waits its timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(("timeout", "retries"), [(1, 0), (1, 2)])
def test_tracking_timeout_and_retries_bound_a_silent_server(
    silent_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout: int, retries: int
) -> None:
    """tracking.timeout/retries: (retries + 1) attempts of ``timeout`` s, 1 s apart, and the
    run is refused before training (the defaults, 5 s and 1 retry, would take 11 s); MLflow's
    own HTTP calls get the same bounds."""
    for var in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(var, raising=False)  # restored after the test
    ovs = [
        f"tracking.uri={silent_server}",
        f"tracking.timeout={timeout}",
        f"tracking.retries={retries}",
        *QUICK,
    ]
    cfg = configure(compose_config(*ovs))
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == str(timeout)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(retries)
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match="the tracking server cannot be reached") as info:
        run(cfg, tmp_path / "out")
    seconds = time.monotonic() - t0
    least = (retries + 1) * timeout + retries * 1.0
    assert least - 0.1 < seconds < least + 4, seconds
    assert silent_server in str(info.value)
    assert not (tmp_path / "out" / "weights" / "final.npz").exists()


def test_a_server_that_is_not_mlflow_is_refused_before_training(tmp_path: Path) -> None:
    """A wrong port where another web server answers (404 on MLflow's /health): a user
    error before training, not a store that "failed during the run"."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        cfg = configure(compose_config(f"tracking.uri={uri}", *QUICK))
        with pytest.raises(TrackingError, match="not an MLflow tracking server") as info:
            run(cfg, tmp_path / "out")
    finally:
        server.shutdown()
        server.server_close()
    assert uri in str(info.value) and "404" in str(info.value)
    assert not (tmp_path / "out" / "weights" / "final.npz").exists()


# -- initial weights chosen in the config -------------------------------------------------------
def test_a_float32_run_starts_from_and_logs_float32_weights(tmp_path: Path) -> None:
    """``weights/initial.npz`` holds what the network starts from: the draws in its dtype."""
    drawn = job_of(compose_config("trace.enabled=false")).initial
    job = job_of(compose_config("train.dtype=float32", "trace.enabled=false"), tmp_path)
    write_inputs(job)
    with np.load(tmp_path / "weights" / "initial.npz") as npz:
        logged = [npz[f"W{l}"] for l in range(len(drawn))]
    for W64, W32 in zip(drawn, logged, strict=True):
        assert W64.dtype == np.float64 and W32.dtype == np.float32
        np.testing.assert_array_equal(W32, W64.astype(np.float32))
    assert weights_sha256(logged) == weights_sha256(initial_network(job).get_weights())


@pytest.mark.parametrize(("init", "scale"), [("xavier", 1.0), ("xavier", 0.5), ("he", 2.0)])
def test_model_init_set_in_the_config(init: str, scale: float) -> None:
    """model.init=xavier: U(±scale·√(6/(fan_in+fan_out))); he: N(0, (scale·√(2/fan_in))²);
    bias rows 0 (README), measured on a 40-200-30 network composed by Hydra."""
    cfg = compose_config(
        "data=regression",
        "data.n_features=40",
        "data.n_outputs=30",
        "model=mlp",
        "model.hidden=[200]",
        f"model.init={init}",
        f"model.init_scale={scale}",
    )
    weights = job_of(cfg).initial
    assert [W.shape for W in weights] == [(41, 200), (201, 30)]
    for W, (fan_in, fan_out) in zip(weights, [(40, 200), (200, 30)], strict=True):
        assert not W[0].any()  # the bias row
        body = W[1:]
        assert abs(body.mean()) < 0.05 * body.std()
        if init == "xavier":
            bound = scale * np.sqrt(6 / (fan_in + fan_out))
            assert 0.97 * bound < np.abs(body).max() <= bound
            assert body.std() == pytest.approx(bound / np.sqrt(3), rel=0.05)
        else:
            assert body.std() == pytest.approx(scale * np.sqrt(2 / fan_in), rel=0.05)
            assert np.abs(body).max() > 3 * body.std()  # normal tails, not uniform


def test_a_folder_used_again_holds_and_logs_only_the_new_runs_files(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A second run into the same ``hydra.run.dir``, without figures or trace: its record
    has none (the first run's are removed), and a file of the user's in there is kept."""
    store = fresh_store(tmp_path_factory)
    out = tmp_path / "out"
    first = [
        "train.epochs=3",
        "tracking.log_model=false",
        "plot.animate=false",
        "trace.enabled=true",
    ]
    assert run(compose_config(*first, f"tracking.uri={store}"), out, first).status == "FINISHED"
    assert (out / "plots" / "rmse.png").is_file() and (out / "trace").is_dir()
    start = out / "weights" / "start.npz"  # the user's, in a folder the run writes
    (out / "weights" / "final.npz").rename(start)
    again = ["train.epochs=3", *QUICK, "model.init=file", f"model.init_file={start}"]
    outcome = run(compose_config(*again, f"tracking.uri={store}"), out, again)
    assert outcome.status == "FINISHED" and outcome.run_id
    files = artifact_paths(MlflowClient(store), outcome.run_id)
    assert not any(f.startswith(("plots/", "trace/")) for f in files), sorted(files)
    assert {"weights/final.npz", "weights/initial.npz", "config.yaml", "weights/start.npz"} <= files
    assert not (out / "plots").exists() and not (out / "trace").exists()

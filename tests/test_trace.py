"""The trace of the first training step (issue 8): its numbers, recomputed independently.

The pipeline runs for real into a temporary SQLite store; the test reads back the logged
``weights/initial.npz``, ``data/train.csv`` and ``trace/step1.json``, recomputes the
first step with plain NumPy (no mlplab.nn) and compares, then checks that the trace's
updated weights are the weights the run ends with after one full-batch epoch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient

from conftest import compose_config, fresh_store, job_of
from mlplab.config import Config
from mlplab.pipeline import first_batch, run
from mlplab.trace import build_trace, write_trace

CONF = Path(__file__).resolve().parents[1] / "conf"
QUICK = ["plot.enabled=false", "tracking.log_model=false", "train.progress=false"]
RTOL, ATOL = 1e-12, 1e-14


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One temporary store for the module's runs."""
    return fresh_store(tmp_path_factory)


def run_logged(store: str, out: Path, *overrides: str) -> str:
    """Run the pipeline in-process into ``store``; return the run id."""
    ovs = [*overrides, *QUICK, f"tracking.uri={store}"]
    outcome = run(compose_config(*ovs), out_dir=out, overrides=ovs)
    assert outcome.status == "FINISHED" and outcome.run_id
    return outcome.run_id


def fetch(store: str, run_id: str, path: str, dst: Path) -> Path:
    return Path(
        download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=store)
    )


# -- an independent first step, in plain NumPy ---------------------------------------------
ACTIVATIONS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "sigmoid": (lambda s: 1.0 / (1.0 + np.exp(-s)), lambda a: a * (1.0 - a)),
    "tanh": (np.tanh, lambda a: 1.0 - a * a),
    "identity": (lambda s: s, np.ones_like),
}


def with_ones(a: np.ndarray) -> np.ndarray:
    return np.hstack([np.ones((a.shape[0], 1)), a])


def first_step(
    weights: list[np.ndarray], X: np.ndarray, T: np.ndarray, cfg: Config
) -> dict[str, Any]:
    """Forward, backward (mse) and one optimiser step, written out by hand."""
    hid, out = ACTIVATIONS[cfg.model.activation], ACTIVATIONS[cfg.model.output_activation]
    L, n = len(weights), X.shape[0]
    acts, pre = [X], [None]
    for i, W in enumerate(weights, start=1):
        s = with_ones(acts[-1]) @ W
        pre.append(s)
        acts.append((out if i == L else hid)[0](s))
    y = acts[L]
    theta = {L: (y - T) * out[1](y) / (n if cfg.train.reduction == "mean" else 1)}
    theta_in: dict[int, np.ndarray] = {}
    grads: dict[int, np.ndarray] = {L - 1: with_ones(acts[L - 1]).T @ theta[L]}
    for i in range(L - 1, 0, -1):
        theta_in[i] = theta[i + 1] @ weights[i][1:].T
        theta[i] = theta_in[i] * hid[1](acts[i])
        grads[i - 1] = with_ones(acts[i - 1]).T @ theta[i]
    o, new = cfg.optimizer, []
    for i, W in enumerate(weights):
        g = grads[i] + o.weight_decay * W
        if o.name == "adam":  # first step: m̂ = g, v̂ = g², torch's eps outside the root
            m_hat = (1 - o.beta1) * g / (1 - o.beta1)
            v_hat = (1 - o.beta2) * g * g / (1 - o.beta2)
            new.append(W - o.lr * m_hat / (np.sqrt(v_hat) + o.eps))
        elif o.momentum:  # the buffer starts at the first gradient
            step = g + o.momentum * g if o.nesterov else g
            new.append(W - o.lr * step)
        else:
            new.append(W - o.lr * g)
    E = 0.5 * np.sum((T - y) ** 2) / (n if cfg.train.reduction == "mean" else 1)
    return {
        "acts": acts,
        "pre": pre,
        "theta": theta,
        "theta_in": theta_in,
        "grads": grads,
        "new": new,
        "E": E,
        "rmse": math.sqrt(np.mean((T - y) ** 2)),
    }


def names_for(L: int) -> dict[str, Callable[[int], str]]:
    """The trace's names: the textbook's for one hidden layer, layer-indexed otherwise."""
    if L == 2:
        return {
            "act_bias": lambda i: ("x_bias", "z_bias")[i],
            "act": lambda i: {1: "z", 2: "y_pred"}[i],
            "z_in": lambda i: {1: "Z_input", 2: "Y_input"}[i],
            "W": lambda i: ("v", "w")[i],
            "grad": lambda i: ("delta_j", "delta_k")[i],
            "theta": lambda i: {1: "theta_j", 2: "theta_k"}[i],
            "theta_in": lambda i: "theta_in_j",
        }
    return {
        "act_bias": lambda i: f"a{i}_bias",
        "act": lambda i: f"a{i}",
        "z_in": lambda i: f"z_in_{i}",
        "W": lambda i: f"W{i}",
        "grad": lambda i: f"grad_W{i}",
        "theta": lambda i: f"theta_{i}",
        "theta_in": lambda i: f"theta_in_{i}",
    }


def assert_trace_matches(trace: dict[str, Any], weights: list[np.ndarray], X, T, cfg) -> None:
    """Every recorded quantity equals the hand recomputation."""
    v = {k: np.asarray(a) for k, a in trace["values"].items() if k not in ("E", "rmse")}
    ref = first_step(weights, X, T, cfg)
    N = names_for(len(weights))
    L = len(weights)

    def close(name: str, expected: np.ndarray) -> None:
        np.testing.assert_allclose(v[name], expected, rtol=RTOL, atol=ATOL, err_msg=name)

    close(N["act_bias"](0), with_ones(X))
    close("t", T)
    for i, W in enumerate(weights):
        np.testing.assert_array_equal(v[N["W"](i)], W, err_msg=N["W"](i))
        close(N["grad"](i), ref["grads"][i])
        close(N["W"](i) + "_new", ref["new"][i])
        close("Delta_" + N["W"](i), ref["new"][i] - W)
    for i in range(1, L + 1):
        close(N["z_in"](i), ref["pre"][i])
        close(N["act"](i), ref["acts"][i])
        close(N["theta"](i), ref["theta"][i])
        if i < L:
            close(N["act_bias"](i), with_ones(ref["acts"][i]))
            close(N["theta_in"](i), ref["theta_in"][i])
    assert trace["values"]["E"] == pytest.approx(ref["E"], rel=RTOL)
    assert trace["values"]["rmse"] == pytest.approx(ref["rmse"], rel=RTOL)
    assert trace["batch_size"] == X.shape[0]
    assert trace["loss"] == cfg.train.loss and trace["reduction"] == cfg.train.reduction
    assert trace["optimizer"]["name"] == cfg.optimizer.name
    assert trace["lr"] == cfg.optimizer.lr
    assert [layer["units"] for layer in trace["layers"]] == [w.shape[0] - 1 for w in weights] + [
        weights[-1].shape[1]
    ]


# -- the pipeline, read back ---------------------------------------------------------------
TUTORIAL_SGD = ["train.epochs=1", "train.tol=0"]
DEEP_ADAM = [
    "train.epochs=1",
    "train.tol=0",
    "model.hidden=[3,4]",
    "model.activation=tanh",
    "model.output_activation=identity",
    "train.reduction=mean",
    "optimizer=adam",
    "trace.enabled=true",
]


@pytest.mark.parametrize(
    "overrides", [TUTORIAL_SGD, DEEP_ADAM], ids=["tutorial-2-2-2-sgd", "3-layer-tanh-adam-mean"]
)
def test_trace_equals_recomputation_and_one_epoch(store: str, tmp_path: Path, overrides) -> None:
    run_id = run_logged(store, tmp_path / "out", *overrides)
    cfg = compose_config(*overrides)
    dl = tmp_path / "dl"
    initial = np.load(fetch(store, run_id, "weights/initial.npz", dl))
    final = np.load(fetch(store, run_id, "weights/final.npz", dl))
    train = pd.read_csv(fetch(store, run_id, "data/train.csv", dl))
    trace = json.loads(fetch(store, run_id, "trace/step1.json", dl).read_text())
    md = fetch(store, run_id, "trace/step1.md", dl).read_text()

    weights = [initial[f"W{i}"] for i in range(len(initial.files))]
    X = train[[c for c in train.columns if c.startswith("x")]].to_numpy()
    T = train[[c for c in train.columns if c.startswith("y")]].to_numpy()
    assert trace["batch_size"] == len(train) == 40  # full batch: the whole training split
    assert_trace_matches(trace, weights, X, T, cfg)

    # The updated weights in the trace are the run's weights after its one full-batch epoch,
    # bit for bit: the trace ran the training step itself.
    names = names_for(len(weights))
    for i in range(len(weights)):
        new = np.asarray(trace["values"][names["W"](i) + "_new"])
        np.testing.assert_array_equal(new, final[f"W{i}"])
        assert not np.allclose(new, weights[i])  # and the step did move them

    # The batch RMSE before the update is the logged train_rmse of epoch 1.
    hist = MlflowClient(store).get_metric_history(run_id, "train_rmse")
    assert [m.step for m in hist] == [1]
    assert hist[0].value == pytest.approx(trace["values"]["rmse"], rel=1e-12)

    # step1.md: the formulas next to the numbers, the first max_rows rows, what was left out.
    z_in = names["z_in"](1)
    assert trace["formulas"][z_in] in md
    assert trace["formulas"][names["theta"](len(weights))] in md
    for k in range(1, 13):
        assert f"## Step {k}:" in md
    row0 = trace["values"][z_in][0]
    assert f"{row0[0]:.8f}" in md and f"{row0[-1]:.8f}" in md
    assert "35 more rows not shown (5 of 40)" in md
    assert "sample 5 " in md and "sample 6 " not in md


def test_trace_of_a_mini_batch_with_momentum(store: str, tmp_path: Path) -> None:
    """Without shuffling, batch 1 is the first batch_size rows of data/train.csv."""
    overrides = [
        "train.epochs=2",
        "train.batch_size=8",
        "train.shuffle=false",
        "optimizer=momentum",
        "optimizer.nesterov=true",
        "optimizer.weight_decay=0.01",
        "trace.max_rows=3",
    ]
    run_id = run_logged(store, tmp_path / "out", *overrides)
    cfg = compose_config(*overrides)
    dl = tmp_path / "dl"
    initial = np.load(fetch(store, run_id, "weights/initial.npz", dl))
    train = pd.read_csv(fetch(store, run_id, "data/train.csv", dl))
    trace = json.loads(fetch(store, run_id, "trace/step1.json", dl).read_text())
    md = fetch(store, run_id, "trace/step1.md", dl).read_text()
    weights = [initial["W0"], initial["W1"]]
    X, T = train[["x1", "x2"]].to_numpy()[:8], train[["y1", "y2"]].to_numpy()[:8]
    assert_trace_matches(trace, weights, X, T, cfg)
    assert "5 more rows not shown (3 of 8)" in md
    assert "μ=0.9" in trace["formulas"]["w_new"] and "0.01·w" in trace["formulas"]["w_new"]


def test_a_shuffled_first_batch_comes_from_the_training_split() -> None:
    cfg = compose_config("train.batch_size=8", "train.shuffle=true")
    job = job_of(cfg)
    data = job.data
    X, T = first_batch(cfg, data, job.shuffle_rng)
    trace = build_trace(cfg, job.initial, X, T)
    rows = np.asarray(trace["values"]["x_bias"])[:, 1:]
    assert rows.shape == (8, 2)
    assert not np.array_equal(rows, data.X_train[:8])  # shuffled
    for row in rows:
        assert np.any(np.all(data.X_train == row, axis=1))


# -- build_trace and write_trace on their own ------------------------------------------------
def test_softmax_cross_entropy_theta_is_y_minus_t() -> None:
    cfg = compose_config(
        "data=spiral", "model=classifier", "model.hidden=[5]", "train.loss=cross_entropy",
        "train.reduction=mean", "optimizer=sgd", "optimizer.lr=0.1",
    )  # fmt: skip
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal((3, 5)), rng.standard_normal((6, 3))]
    X = rng.standard_normal((7, 2))
    T = np.eye(3)[rng.integers(0, 3, 7)]
    trace = build_trace(cfg, weights, X, T)
    v = {k: np.asarray(a) for k, a in trace["values"].items()}
    z = np.maximum(with_ones(X) @ weights[0], 0)
    s = with_ones(z) @ weights[1]
    y = np.exp(s - s.max(1, keepdims=True))
    y /= y.sum(1, keepdims=True)
    np.testing.assert_allclose(v["y_pred"], y, rtol=1e-12)
    np.testing.assert_allclose(v["theta_k"], (y - T) / 7, rtol=1e-12, atol=1e-15)
    assert "fprime_Y_input" not in v  # f' cancels: it is never computed
    theta_j = ((v["theta_k"] @ weights[1][1:].T) * (z > 0)).astype(float)
    np.testing.assert_allclose(v["theta_j"], theta_j, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(v["w_new"], weights[1] - 0.1 * with_ones(z).T @ v["theta_k"])
    assert trace["values"]["E"] == pytest.approx(-np.sum(T * np.log(y)) / 7, rel=1e-12)
    assert "softmax with cross-entropy" in trace["formulas"]["theta_k"]
    np.testing.assert_array_equal(v["dE_dw"], v["delta_k"])
    np.testing.assert_array_equal(v["dE_dv"], v["delta_j"])


def test_no_hidden_layer_and_inputs_left_untouched(tmp_path: Path) -> None:
    cfg = compose_config("model.hidden=[]", "optimizer.lr=0.25")
    rng = np.random.default_rng(2)
    W = rng.standard_normal((3, 2))
    before = W.copy()
    X, T = rng.random((4, 2)), rng.random((4, 2))
    trace = build_trace(cfg, [W], X, T)
    np.testing.assert_array_equal(W, before)  # the caller's weights are not stepped
    assert trace["notation"] == "layered"
    steps = [s["step"] for s in trace["steps"]]
    assert steps == [1, 5, 6, 7, 8, 12]  # no hidden layer: no steps 2-4 and 9-11
    ref = first_step([W], X, T, cfg)
    np.testing.assert_allclose(trace["values"]["W0_new"], ref["new"][0], rtol=1e-12)
    paths = write_trace(trace, tmp_path / "trace", max_rows=2)
    assert [p.name for p in paths] == ["step1.json", "step1.md"]
    assert json.loads(paths[0].read_text())["values"] == trace["values"]
    assert "2 more rows not shown (2 of 4)" in paths[1].read_text()


def test_json_keeps_full_precision(tmp_path: Path) -> None:
    cfg = compose_config()
    rng = np.random.default_rng(3)
    weights = [rng.standard_normal((3, 2)), rng.standard_normal((3, 2))]
    X, T = rng.random((3, 2)), rng.random((3, 2))
    trace = build_trace(cfg, weights, X, T)
    json_path, md_path = write_trace(trace, tmp_path, max_rows=10)
    back = json.loads(json_path.read_text())
    np.testing.assert_array_equal(np.asarray(back["values"]["v"]), weights[0])
    np.testing.assert_array_equal(np.asarray(back["values"]["x_bias"])[:, 1:], X)
    md = md_path.read_text()
    assert "not shown" not in md  # 3 rows, max_rows=10: every row is shown
    assert set(back["formulas"]) == set(back["values"])


def test_trace_of_a_big_network_is_markdown_only(tmp_path: Path) -> None:
    """step1.json holds every array in full: past a million numbers (360 MB for a
    [2000, 2000] net) only step1.md is written, and it says why."""
    cfg = compose_config("model.hidden=[600,600]")
    rng = np.random.default_rng(4)
    weights = [rng.standard_normal((a + 1, b)) for a, b in [(2, 600), (600, 600), (600, 2)]]
    X, T = rng.random((5, 2)), rng.random((5, 2))
    paths = write_trace(build_trace(cfg, weights, X, T), tmp_path, max_rows=3)
    assert [p.name for p in paths] == ["step1.md"]
    assert not (tmp_path / "step1.json").exists()
    md = paths[0].read_text()
    assert "written for traces of at most 1,000,000 numbers: this one has 1,4" in md
    assert "every number is in step1.json" not in md
    assert "588 more columns not shown (12 of 600)." in md

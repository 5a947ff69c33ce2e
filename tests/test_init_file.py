"""Starting from given weights: ``model.init=file``, ``model.init_file=path.npz`` (issue 8).

Bad files are refused with one clear message before anything runs; and the textbook's
printed initial weights, loaded from a file, give the textbook's printed forward numbers
in the trace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import compose_config, fresh_store, initial_network, job_of
from mlplab.config import validate
from mlplab.errors import ConfigError, DataError
from mlplab.pipeline import run
from mlplab.trace import build_trace
from mlplab.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
QUICK = ["plot.enabled=false", "tracking.log_model=false", "train.progress=false"]

# The textbook's printed numbers (rows of v and w: bias, unit 1, unit 2).
TEXTBOOK_V = np.array(
    [[0.49671415, -0.1382643], [0.64768854, 1.52302986], [-0.23415337, -0.23413696]]
)
TEXTBOOK_W = np.array(
    [[1.57921282, 0.76743473], [-0.46947439, 0.54256004], [-0.46341769, -0.46572975]]
)
TEXTBOOK_X = np.array([0.17988842, 0.42611707])
TEXTBOOK_FORWARD = {
    "Z_input": [0.51344907, 0.03594138],  # z_in_j
    "z": [0.62561467, 0.50898438],
    "z_bias": [1.0, 0.62561467, 0.50898438],
    "Y_input": [1.04963039, 0.86981908],  # y_in_k
    "y_pred": [0.74070392, 0.70470805],
}
PRINTED = 1e-8  # the textbook prints 8 decimals


@pytest.fixture
def textbook_file(tmp_path: Path) -> Path:
    return save_weights(tmp_path / "textbook.npz", [TEXTBOOK_V, TEXTBOOK_W])


@pytest.fixture
def wrong_shape_file(tmp_path: Path) -> Path:
    """W1 has a row too many for the tutorial's 2 → 2 → 2 network."""
    return save_weights(tmp_path / "wrong.npz", [TEXTBOOK_V, np.zeros((4, 2))])


def network_from(path: Path, *overrides: str):  # type: ignore[no-untyped-def]
    cfg = compose_config("model.init=file", f"model.init_file={path}", *overrides)
    validate(cfg)
    return cfg, initial_network(job_of(cfg))


# -- bad files -----------------------------------------------------------------------------
def test_a_shape_mismatch_names_the_file_and_the_shapes(wrong_shape_file: Path) -> None:
    with pytest.raises(DataError) as info:
        network_from(wrong_shape_file)
    msg = str(info.value)
    assert f"model.init_file={str(wrong_shape_file)!r}" in msg
    assert "(4, 2)" in msg  # what the file holds
    assert "[(3, 2), (3, 2)]" in msg  # what the topology needs
    assert "\n" not in msg


def test_too_few_matrices_for_the_topology(textbook_file: Path) -> None:
    with pytest.raises(DataError, match=r"\[2, 3, 4, 2\]"):
        network_from(textbook_file, "model.hidden=[3,4]")


def test_arrays_not_named_w0_w1_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "named.npz"
    np.savez(path, v=TEXTBOOK_V, w=TEXTBOOK_W)
    with pytest.raises(DataError, match="expected arrays W0, W1"):
        network_from(path)


def test_weights_that_are_not_finite_are_refused(tmp_path: Path) -> None:
    """A NaN weight would make a run "diverge" at its first epoch: refused up front instead."""
    bad = TEXTBOOK_W.copy()
    bad[1, 0], bad[2, 1] = np.nan, -np.inf
    path = save_weights(tmp_path / "nan.npz", [TEXTBOOK_V, bad])
    with pytest.raises(DataError, match=r"W1 holds 2 NaN or infinite value\(s\)"):
        network_from(path)


def test_a_file_that_is_not_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    path.write_text("v = [[0.5, -0.1]]\n")
    with pytest.raises(DataError, match=r"not an \.npz file of W0, W1, \.\.\. \(not a zip"):
        network_from(path)
    np.save(tmp_path / "W0.npy", np.zeros((3, 2)))  # one array, as numpy.save writes it
    with pytest.raises(DataError, match=r"not an \.npz file of W0, W1, \.\.\. \(an \.npy array"):
        network_from(tmp_path / "W0.npy")
    np.savez(path, W0=np.array([object()] * 6).reshape(3, 2))  # pickled objects: never loaded
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        network_from(path)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.init_file="):
        network_from(tmp_path / "nowhere.npz")


def test_a_bad_file_is_refused_before_the_store_is_touched(
    wrong_shape_file: Path, tmp_path: Path
) -> None:
    db = tmp_path / "mlflow.db"
    ovs = ["model.init=file", f"model.init_file={wrong_shape_file}", *QUICK]
    with pytest.raises(DataError):
        run(compose_config(*ovs, f"tracking.uri=sqlite:///{db}"), tmp_path / "out", ovs)
    assert not db.exists()  # no store opened, so no run left RUNNING
    assert not (tmp_path / "out").exists()


def test_cli_wrong_shape_exits_2_with_one_line(wrong_shape_file: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "pipelines/run.py",
            "model.init=file",
            f"model.init_file={wrong_shape_file}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"hydra.run.dir={tmp_path / 'out'}",
            "plot.enabled=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: model.init_file=")
    assert str(wrong_shape_file) in lines[0] and "(4, 2)" in lines[0]
    assert not (tmp_path / "mlflow.db").exists()  # refused before touching the store


# -- the textbook's numbers ----------------------------------------------------------------
def test_the_file_is_loaded_as_written(textbook_file: Path) -> None:
    _, net = network_from(textbook_file)
    np.testing.assert_array_equal(net.weights[0], TEXTBOOK_V)
    np.testing.assert_array_equal(net.weights[1], TEXTBOOK_W)


def test_textbook_weights_give_the_textbook_forward_numbers(textbook_file: Path) -> None:
    cfg, net = network_from(textbook_file)
    T = np.array([[0.7, 0.7]])  # the textbook never prints its targets; forward needs none
    trace = build_trace(cfg, net.get_weights(), TEXTBOOK_X[None, :], T)
    values = trace["values"]
    np.testing.assert_allclose(values["x_bias"][0], [1.0, *TEXTBOOK_X], rtol=0, atol=0)
    np.testing.assert_array_equal(values["v"], TEXTBOOK_V)
    np.testing.assert_array_equal(values["w"], TEXTBOOK_W)
    for name, printed in TEXTBOOK_FORWARD.items():
        np.testing.assert_allclose(values[name][0], printed, rtol=0, atol=PRINTED, err_msg=name)


def test_textbook_numbers_from_a_logged_run(
    textbook_file: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """End to end: a CSV holding the textbook's first input, the textbook's weights from a
    file, and the run's logged trace shows the textbook's numbers on that sample's row."""
    rng = np.random.default_rng(0)
    x = np.vstack([rng.random((3, 2)), TEXTBOOK_X, rng.random((2, 2))])
    frame = pd.DataFrame(np.hstack([x, rng.random((6, 2))]), columns=["x1", "x2", "y1", "y2"])
    csv = tmp_path / "points.csv"
    frame.to_csv(csv, index=False, float_format="%.17g")
    store = fresh_store(tmp_path_factory)
    ovs = [
        "data=csv",
        f"data.path={csv}",
        "data.targets=[y1,y2]",
        "data.standardize=false",
        "data.test_fraction=0",
        "model.init=file",
        f"model.init_file={textbook_file}",
        "trace.enabled=true",
        "train.epochs=1",
        *QUICK,
    ]
    outcome = run(compose_config(*ovs, f"tracking.uri={store}"), tmp_path / "out", ovs)
    assert outcome.status == "FINISHED"
    trace = json.loads((tmp_path / "out" / "trace" / "step1.json").read_text())
    rows = np.asarray(trace["values"]["x_bias"])[:, 1:]
    (hits,) = np.nonzero(np.all(rows == TEXTBOOK_X, axis=1))
    assert len(hits) == 1 and trace["batch_size"] == 6
    for name, printed in TEXTBOOK_FORWARD.items():
        np.testing.assert_allclose(
            trace["values"][name][hits[0]], printed, rtol=0, atol=PRINTED, err_msg=name
        )
    logged = MlflowClient(store).list_artifacts(str(outcome.run_id), "trace")
    assert sorted(Path(a.path).name for a in logged) == ["step1.json", "step1.md"]

"""The logged pyfunc model, loaded with ``runs:/<id>/model``, predicts what the pipeline did."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import reference
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from mlplab.config import Config
from mlplab.pipeline import run
from mlplab.weights import load_weights


@pytest.fixture
def tracking(store: str) -> Iterator[str]:
    """``runs:/`` URIs resolve against the global tracking URI: point it at the store."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    yield store
    mlflow.set_tracking_uri(previous)


def csv_file(tmp: Path) -> Path:
    rng = np.random.default_rng(3)
    X = rng.normal(5.0, 3.0, size=(60, 2))
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "t": np.sin(X[:, 0]) + 0.1 * X[:, 1]})
    path = tmp / "points.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case", ["tutorial", "csv-standardised"])
def test_pyfunc_model_predicts_what_the_pipeline_predicted(
    case: str, tracking: str, tmp_path: Path, make_cfg: Callable[..., Config]
) -> None:
    overrides = [
        "train.epochs=200",
        "plot.enabled=false",
        "trace.enabled=false",
        f"tracking.uri={tracking}",
        "tracking.experiment=model-test",
    ]
    if case == "csv-standardised":
        overrides += [
            "data=csv",
            f"data.path={csv_file(tmp_path)}",
            "model=mlp",
            "model.hidden=[5]",
            "optimizer=adam",
            "optimizer.lr=0.01",
        ]
    cfg = make_cfg(*overrides)
    outcome = run(cfg, tmp_path / "out", progress=False)
    assert outcome.run_id is not None
    run_id = outcome.run_id
    client = MlflowClient(tracking_uri=tracking)

    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    signature = model.metadata.signature
    assert signature is not None
    inputs = signature.inputs.input_names()
    outputs = [c.name for c in signature.outputs.inputs]
    assert model.metadata.saved_input_example_info is not None

    # what the pipeline fed the network and its final weights, as logged
    dl = tmp_path / "dl"
    test = pd.read_csv(client.download_artifacts(run_id, "data/test.csv", str(dl)))
    weights = load_weights(client.download_artifacts(run_id, "weights/final.npz", str(dl)))
    x_cols = [c for c in test.columns if c.startswith("x")]
    X = test[x_cols].to_numpy(np.float64)
    expected = reference.forward(weights, X, cfg.model.activation, cfg.model.output_activation)
    assert expected.shape == (len(test), len(outputs))

    # the model takes raw feature columns (by name): undo the logged standardisation
    spec = json.loads(
        Path(client.download_artifacts(run_id, "model/artifacts/network.json", str(dl))).read_text()
    )
    assert spec["features"] == inputs and spec["targets"] == outputs
    raw = X
    if spec.get("scaling"):
        raw = X * np.asarray(spec["scaling"]["std"]) + np.asarray(spec["scaling"]["mean"])
    if case == "tutorial":
        assert inputs == ["x1", "x2"] and outputs == ["y1", "y2"] and not spec.get("scaling")
    else:
        assert inputs == ["a", "b"] and outputs == ["t"] and spec["scaling"]
    frame = pd.DataFrame(raw, columns=inputs)
    predicted = model.predict(frame)
    assert list(predicted.columns) == outputs
    np.testing.assert_allclose(predicted.to_numpy(), expected, rtol=0, atol=1e-12)
    # and the test metric the pipeline logged is that of these predictions
    Y = test[[c for c in test.columns if c.startswith("y")]].to_numpy(np.float64)
    rmse = float(np.sqrt(np.mean((Y - predicted.to_numpy()) ** 2)))
    assert client.get_run(run_id).data.metrics["test_rmse"] == pytest.approx(rmse, rel=1e-9)
    # the same model as MLflow 3's logged model: the run's output, READY, with the ids
    (output,) = client.get_run(run_id).outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert (logged.name, logged.source_run_id, logged.status.to_proto()) == (
        "mlp",
        run_id,
        LoggedModelStatus.READY.to_proto(),
    )
    assert (model.metadata.run_id, model.metadata.model_id) == (run_id, output.model_id)
    # the data as MLflow datasets, named after the CSV file (a generator's name otherwise)
    names = {i.dataset.name for i in client.get_run(run_id).inputs.dataset_inputs}
    assert names == {"tutorial" if case == "tutorial" else "points"}
    listed = [f.path for f in client.list_artifacts(run_id, "model")]
    assert "model/MLmodel" in listed and len(listed) == len(set(listed))  # each file once
    by_id = mlflow.pyfunc.load_model(f"models:/{output.model_id}")
    assert by_id.predict(frame).equals(predicted)

"""The trained network as an MLflow pyfunc model (part of the tracking layer: it imports MLflow).

``save_model`` writes an MLflow model folder holding the final weights and the network's
description; ``mlflow.pyfunc.load_model("runs:/<id>/model").predict(frame)`` then gives the
pipeline's predictions, column for column (``mlflow models serve`` likewise).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import mlplab
from mlplab.build import network_from_spec
from mlplab.weights import load_weights

# MLflow's import warns about its own type hints.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    import mlflow.pyfunc
    from mlflow.models import Model, infer_signature
    from mlflow.pyfunc import PythonModel

    class MLPModel(PythonModel):
        """Predicts with the stored weights; input columns = the feature names."""

        def load_context(self, context: Any) -> None:
            """Read the network description and the weights."""
            spec = json.loads(Path(context.artifacts["network"]).read_text())
            self.features: list[str] = spec["features"]
            self.targets: list[str] = spec["targets"]
            self.mean = np.asarray(spec.get("scaling", {}).get("mean", 0.0))
            self.std = np.asarray(spec.get("scaling", {}).get("std", 1.0))
            self.net = network_from_spec(spec, load_weights(context.artifacts["weights"]))

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            """Outputs of the network for the rows of ``model_input`` (a DataFrame)."""
            frame = pd.DataFrame(model_input)
            X = frame[self.features].to_numpy(dtype=np.float64)
            X = (X - self.mean) / self.std
            return pd.DataFrame(self.net.predict(X).astype(np.float64), columns=self.targets)


def save_model(
    path: Path,
    weights_file: Path,
    network: dict[str, Any],
    X_example: np.ndarray,
    Y_example: np.ndarray,
    ids: Model | None = None,
) -> Path:
    """Write an MLflow pyfunc model folder at ``path`` (with signature and input example;
    ``ids``: the run and logged model it belongs to, written into its MLmodel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spec_file = path.parent / "network.json"
    spec_file.write_text(json.dumps(network, indent=2))
    x_frame = pd.DataFrame(np.asarray(X_example, np.float64), columns=network["features"])
    y_frame = pd.DataFrame(np.asarray(Y_example, np.float64), columns=network["targets"])
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)  # its notes on cloudpickle and input validation
    try:
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=MLPModel(),
            artifacts={"weights": str(weights_file), "network": str(spec_file)},
            signature=infer_signature(x_frame, y_frame),
            input_example=x_frame.head(5),
            pip_requirements=[f"mlplab=={mlplab.__version__}", "numpy", "pandas", "scipy"],
            mlflow_model=ids,
        )
    finally:
        pyfunc_log.setLevel(level)
    spec_file.unlink()
    return path

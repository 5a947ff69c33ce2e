"""mlplab: backpropagation you can see, composed by Hydra and recorded by MLflow."""

import os
from importlib.metadata import PackageNotFoundError, version

# MLflow's usage telemetry cannot reach its host here and, while it gives up, its thread
# edits os.environ under other threads' feet (seen as KeyError in sweep jobs): keep it off.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow 3 copies a uv.lock found in the working directory into every model it saves
# (1.1 MB each, two INFO lines): the model's requirements are listed explicitly instead.
os.environ.setdefault("MLFLOW_UV_AUTO_DETECT", "false")
# MLflow's per-file download bars (a saved model, a study reading its trials' configs) are
# noise in our output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

try:
    __version__ = version("mlplab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

"""The NumPy engine: knows nothing of Hydra or MLflow."""

from mlplab.nn.network import MLP, add_bias, init_weights
from mlplab.nn.optimizers import OptimizerSpec, make_optimizer
from mlplab.nn.trainer import Progress, TrainData, TrainResult, TrainSettings, fit

__all__ = [
    "MLP",
    "OptimizerSpec",
    "Progress",
    "TrainData",
    "TrainResult",
    "TrainSettings",
    "add_bias",
    "fit",
    "init_weights",
    "make_optimizer",
]

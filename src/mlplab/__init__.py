"""mlplab: backpropagation you can see, composed by Hydra and recorded by MLflow."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlplab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

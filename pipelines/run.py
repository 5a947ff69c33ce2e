"""Hydra entry point: one run of generate → train → evaluate → plot, logged to MLflow.

python pipelines/run.py                      # the tutorial experiment
python pipelines/run.py model.hidden=[8,8] optimizer=adam
python pipelines/run.py -m +sweep=default    # a sweep (see `make sweep`)
"""

from __future__ import annotations

import sys

from mlplab.tracking.helper import prestart

# A single run's tracking helper starts first and imports MLflow while we import and compose.
# Not for a multirun (its jobs log from their own processes, or through a helper started
# then), nor in the worker processes that multiprocessing's spawn starts from this file.
if __name__ == "__main__" and not {"-m", "--multirun"} & set(sys.argv[1:]):
    prestart()

import hydra
from omegaconf import DictConfig

from mlplab.cli import finish_main, run_job
from mlplab.config import register_configs
from mlplab.project import conf_dir

register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job; returns its test RMSE (the objective of sweeps)."""
    outcome = run_job(cfg)
    return outcome.metrics.get("test_rmse") if outcome else None


if __name__ == "__main__":
    sys.exit(finish_main(main))

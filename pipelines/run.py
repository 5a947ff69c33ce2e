"""Hydra entry point: one run of generate → train → evaluate → plot, logged to MLflow.

python pipelines/run.py                      # the tutorial experiment
python pipelines/run.py model.hidden=[8,8] optimizer=adam
python pipelines/run.py -m +sweep=default    # a sweep (see `make sweep`)
"""

from __future__ import annotations

import sys

from mlplab.interrupts import quiet_start

if __name__ == "__main__":
    quiet_start()  # Ctrl-C during the imports: one line, exit 130

from mlplab.tracking.helper import prestart

# The tracking helper (a run's, or a sweep's: the parent's guard, which also logs a
# population's members) starts first and imports MLflow while we import and compose. Not in
# the worker processes that multiprocessing's spawn starts from this file (__mp_main__).
if __name__ == "__main__":
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

"""Hydra entry point: one run of generate → train → evaluate → plot, logged to MLflow.

python pipelines/run.py                      # the tutorial experiment
python pipelines/run.py model.hidden=[8,8] optimizer=adam
python pipelines/run.py -m +sweep=default    # a sweep (see `make sweep`)
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mlplab.cli import finish_main, report, run_job
from mlplab.config import register_configs

register_configs()
CONF = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job; returns its test RMSE (the objective of sweeps)."""
    outcome = run_job(cfg)
    report(outcome, brief=HydraConfig.get().mode == RunMode.MULTIRUN, uri=cfg.tracking.uri)
    return outcome.metrics.get("test_rmse") if outcome else None


if __name__ == "__main__":
    sys.exit(finish_main(main))

"""``hydra/launcher=population``: a sweep's networks trained together, each job its own run.

Hydra finds this launcher as it finds joblib's or Ray's: in the ``hydra_plugins`` namespace
package of an installed distribution. :meth:`PopulationLauncher.launch` runs in two phases:

1. every job in Hydra's job context (its output folder, ``.hydra/``, logging), with
   :func:`mlplab.population.prepare_job` as the task: config, data and initial weights;
2. :func:`mlplab.population.run_jobs`: the jobs whose networks stack trained as one
   population, every member recorded as a run of its own.

Each job's return value is its test RMSE, as with the other launchers.
"""

# No ``from __future__ import annotations``: Hydra's plugin scan executes this module
# without registering it in sys.modules, and dataclasses then cannot resolve string types.
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from mlplab.population import prepare_job, run_jobs

log = logging.getLogger(__name__)


@dataclass
class PopulationLauncherConf:
    """The launcher's config node (it has no settings of its own)."""

    _target_: str = "hydra_plugins.mlplab_population.population_launcher.PopulationLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="population", node=PopulationLauncherConf, provider="mlplab"
)


class PopulationLauncher(Launcher):
    """Prepares every job, then trains the jobs whose networks stack as one population."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Hydra's setup: the task function is replaced by mlplab's two phases."""
        self.config, self.hydra_context = config, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Prepare each job in its own context, run them all, return each job's outcome."""
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Preparing {len(job_overrides)} jobs to train as populations")
        returns = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=prepare_job,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        ready = [r for r in returns if r.status == JobStatus.COMPLETED and r.return_value]
        for ret, outcome in zip(ready, run_jobs([r.return_value for r in ready]), strict=True):
            ret.return_value = outcome.metrics.get("test_rmse")
        for ret in returns:
            if ret not in ready and ret.status == JobStatus.COMPLETED:
                ret.return_value = None  # refused: reported, recorded FAILED
        return returns

"""``hydra/launcher=population``: a sweep's networks trained together, each job its own run.

Hydra finds this launcher as it finds joblib's or Ray's: in the ``hydra_plugins`` namespace
package of an installed distribution. :meth:`PopulationLauncher.launch` runs in two phases:

1. every job composed here and run in Hydra's job context (its output folder, ``.hydra/``,
   logging) with :func:`mlplab.population.prepare_job` as the task (config, data and
   initial weights) by the worker processes of :func:`mlplab.pipeline.population_workers`,
   which then draw the figures (a sweep of one job is prepared in this process);
2. :func:`mlplab.population.run_jobs`: the jobs whose networks stack trained as one
   population, every member recorded as a run of its own.

Each job's return value is its test RMSE, as with the other launchers.
"""

# No ``from __future__ import annotations``: Hydra's plugin scan executes this module
# without registering it in sys.modules, and dataclasses then cannot resolve string types.
import contextlib
import copy
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Hydra's own way of applying a value override and of naming a job's folder: private, but the
# derived configs are checked against full compositions (tests/test_population.py).
from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.singleton import Singleton
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
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mlplab.config import register_configs
from mlplab.pipeline import population_workers, warm_up
from mlplab.population import prepare_job, run_jobs

log = logging.getLogger(__name__)


@dataclass
class PopulationLauncherConf:
    """The launcher's config node (it has no settings of its own)."""

    _target_: str = "hydra_plugins.mlplab_population.population_launcher.PopulationLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="population", node=PopulationLauncherConf, provider="mlplab"
)


class Composer:
    """Each job's config, composed by Hydra once per set of config-group choices.

    Hydra composes a config from its YAML files in ~0.25 s; the jobs of a sweep mostly
    differ in values only (seeds, learning rates). A job's config is then the composition of
    its group choices (made once, by Hydra) with its value overrides applied as Hydra applies
    them; a job with anything else (an appended or deleted key, a Hydra override, a key the
    first composition does not know) is composed by Hydra in full.
    """

    def __init__(self, loader: ConfigLoader, master: DictConfig) -> None:
        self.loader, self.master = loader, master
        self.groups = set(master.hydra.runtime.choices)
        self.bases: dict[tuple[str, ...], DictConfig] = {}
        self.parser = OverridesParser.create()
        self.ready: dict[tuple[str, ...], DictConfig] = {}  # composed once, used once

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        """The sweep config of the job with ``overrides`` (the sweeper asks first, to check
        the batch, the launcher then: the second gets the first's config)."""
        if tuple(overrides) in self.ready:
            return self.ready.pop(tuple(overrides))
        cfg = self.ready[tuple(overrides)] = self._compose(overrides)
        return cfg

    def _compose(self, overrides: Sequence[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(list(overrides))
        groups = [o for o in parsed if o.key_or_group in self.groups]
        values = [o for o in parsed if o.key_or_group not in self.groups]
        unusual = [o for o in values if o.is_add() or o.is_delete() or o.is_force_add()]
        if unusual or any(o.is_hydra_override() or o.package is not None for o in parsed):
            return self.loader.load_sweep_config(self.master, list(overrides))
        key = tuple(str(o.input_line) for o in groups)
        if key not in self.bases:
            self.bases[key] = self.loader.load_sweep_config(self.master, list(key))
        cfg = copy.deepcopy(self.bases[key])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except Exception:  # Hydra's own message, from a full composition
            return self.loader.load_sweep_config(self.master, list(overrides))
        self._name(cfg, parsed)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg

    @staticmethod
    def _name(cfg: DictConfig, parsed: list[Override]) -> None:
        """The job's overrides and folder name, as Hydra records them."""
        naming = cfg.hydra.job.config.override_dirname
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [str(o.input_line) for o in parsed]
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=parsed,
                kv_sep=naming.kv_sep,
                item_sep=naming.item_sep,
                exclude_keys=naming.exclude_keys,
            )


class ComposingLoader:
    """Hydra's config loader with the sweep configs of ``master`` made by a :class:`Composer`.

    The basic sweeper composes every job to check its batch before launching it: the
    launcher hands it this loader (their shared :class:`HydraContext`), so that the check
    costs a derived config, which the launcher then uses.
    """

    def __init__(self, loader: ConfigLoader, master: DictConfig) -> None:
        self.loader, self.master = loader, master
        self.compose = Composer(loader, master)

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        """A job's config: derived when it is one of ``master``'s jobs."""
        if master_config is self.master:
            return self.compose(sweep_overrides)
        return self.loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class PopulationLauncher(Launcher):
    """Prepares every job, then trains the jobs whose networks stack as one population."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Hydra's setup: the task function is replaced by mlplab's two phases, the loader's
        sweep configs by derived ones."""
        if not isinstance(hydra_context.config_loader, ComposingLoader):
            hydra_context.config_loader = ComposingLoader(hydra_context.config_loader, config)  # type: ignore[assignment]
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
        plots = bool(OmegaConf.select(self.config, "plot.enabled", default=True))
        helped = len(job_overrides) > 1
        # the workers take Hydra's singletons (its plugins aside, as joblib's launcher does;
        # the resolvers are each process's own: the sweep's interpolations are resolved there)
        singletons = Singleton.get_state()["instances"] if helped else None
        with (
            population_workers(adopt_hydra_state, singletons)
            if helped
            else contextlib.nullcontext()
        ) as pool:
            returns = self._prepare(job_overrides, initial_job_idx, pool, plots)
            ready = [r for r in returns if r.status == JobStatus.COMPLETED and r.return_value]
            outcomes = run_jobs([r.return_value for r in ready], pool)
        for ret, outcome in zip(ready, outcomes, strict=True):
            ret.return_value = outcome.metrics.get("test_rmse")
        for ret in returns:
            if ret not in ready and ret.status == JobStatus.COMPLETED:
                ret.return_value = None  # refused: reported, recorded FAILED
        return returns

    def _prepare(
        self,
        job_overrides: Sequence[Sequence[str]],
        initial_job_idx: int,
        pool: ProcessPoolExecutor | None,
        plots: bool,
    ) -> list[JobReturn]:
        """Phase 1: each job in its Hydra job context, prepared (nothing trained): composed
        here, run by ``pool``'s workers if given (then made ready to draw, if ``plots``)."""
        assert self.config is not None and self.hydra_context is not None
        configs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            configs.append(sweep_config)
        if pool is None:
            return [prepare_in_context(self.hydra_context, config) for config in configs]
        loader = self.hydra_context.config_loader
        if isinstance(loader, ComposingLoader):  # Hydra's own, which pickles
            loader = loader.loader
        context = HydraContext(config_loader=loader, callbacks=self.hydra_context.callbacks)
        jobs = [pool.submit(prepare_in_context, context, config) for config in configs]
        if plots:
            warm_up(pool)
        return [job.result() for job in jobs]


def adopt_hydra_state(singletons: dict[Any, Any]) -> None:
    """A worker's setup: the sweep's Hydra singletons, with this process's resolvers (the
    project's registered here: the worker's main module need not be pipelines/run.py)."""
    setup_globals()
    register_configs()
    resolvers = Singleton.get_state()["omegaconf_resolvers"]
    Singleton.set_state({"instances": singletons, "omegaconf_resolvers": resolvers})


def prepare_in_context(hydra_context: HydraContext, config: DictConfig) -> JobReturn:
    """Phase 1 of one job: :func:`mlplab.population.prepare_job` in Hydra's job context;
    then the process logs as Hydra does, not to the job's log file."""
    ret = run_job(
        hydra_context=hydra_context,
        task_function=prepare_job,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return ret

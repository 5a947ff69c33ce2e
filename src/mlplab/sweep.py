"""Sweeps: one MLflow parent run per Hydra multirun, a child run per job, a report at the end.

:class:`MlflowSweepCallback` is registered under ``hydra.callbacks``. In the launching
process, *before any job starts*, ``on_multirun_start`` creates the store, the experiment
and the parent run, then appends ``tracking.uri``, ``tracking.experiment`` and
``tracking.parent_run_id`` to ``hydra.overrides.task``: Hydra reads that list after the
callback and hands it to the sweeper, so every job, in this process, in a joblib worker or
on another machine, receives them in its own config. Parallel jobs therefore never race to
migrate a fresh SQLite schema or to create the experiment.

``on_multirun_end`` collects the children, writes the report on the parent
(``summary.csv``, ``plots/sweep_rmse.png``, ``plots/sweep_params.png``, the best child's id
and metrics), prints the table and closes the parent: FINISHED when every planned job
finished, FAILED otherwise (the command then exits 1). Hydra skips ``on_multirun_end`` when
the sweep stops early (Ctrl-C, SIGTERM, a launcher that raised): the callback then writes
the report of the children there are and closes the parent KILLED as the process exits.
The process may also be killed outright: the parent is guarded by the tracking helper
(:class:`~mlplab.tracking.Guard`), which closes it KILLED, with its RUNNING children, once
this process is gone. A parent is never left RUNNING.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.types import Override
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

import mlplab
from mlplab import build, environment, plots
from mlplab.config import (
    ENTRY_POINT_ENV,
    OVERRIDES,
    SWEEP_ENV,
    SWEEP_PROCESS_ENV,
    TrackingConfig,
    choice_error,
    recorded_config,
    user_overrides,
    value_error,
)
from mlplab.errors import JobExit, UserError, say_error
from mlplab.pipeline import (
    OVERRIDES_TAG,
    check_inputs,
    configure,
    entry_point,
    model_request,
    prepare,
)
from mlplab.project import git_commit
from mlplab.report import (
    METRICS,
    ChildRecord,
    best_row,
    format_replicates,
    format_table,
    replicate_rows,
    summary_rows,
    write_summary_csv,
)
from mlplab.tracking import Guard, open_store, release_unused
from mlplab.tracking.uris import check_store, configure_http, resolve_uri
from mlplab.weights import load_weights

if TYPE_CHECKING:  # the store's module imports MLflow: single runs must not pay for it
    from mlplab.tracking.mlflow_store import RunStore

log = logging.getLogger("mlplab")


# -- the parent run --------------------------------------------------------------------------
@dataclass
class Parent:
    """A sweep's or a study's parent run, guarded until it is closed."""

    store: RunStore
    run_id: str
    guard: Guard

    def close(self, status: str) -> None:
        """End the parent run and release its guard."""
        try:
            self.store.end_run(self.run_id, status)
        finally:
            self.guard.release()


def start_parent(
    uri: str, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, str]
) -> Parent:
    """Create the store (if new), the experiment and a RUNNING, guarded parent run."""
    store = open_store(uri)
    all_tags = {
        "mlplab_version": mlplab.__version__,
        "git_commit": git_commit(),
        **environment.source_tags(entry_point()),  # the UI's Source and Version columns
        **tags,
    }
    run_id = store.create_run(experiment, run_name, all_tags, params)
    return Parent(store, run_id, Guard(uri, run_id))


def reopen_parent(uri: str, run_id: str) -> Parent | None:
    """A parent from an earlier session, RUNNING and guarded again (None if it is gone)."""
    store = open_store(uri)
    run = store.get_run(run_id)
    if run is None or run.lifecycle_stage != "active":
        return None
    store.reopen(run_id)
    return Parent(store, run_id, Guard(uri, run_id))


def tracking_settings(config: DictConfig) -> TrackingConfig:
    """The typed ``tracking`` node of a composed config, its URI made absolute."""
    node = OmegaConf.to_container(config.tracking, resolve=True) if "tracking" in config else {}
    tracking = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrackingConfig), node))
    assert isinstance(tracking, TrackingConfig)
    tracking.uri = resolve_uri(tracking.uri)
    return tracking


# -- the plan of a sweep ---------------------------------------------------------------------
def hydra_override(key: str, value: str) -> str:
    """``key=value`` for Hydra's override grammar: the value arrives as written (quoted when
    it needs it; an ``${...}`` in it is text, resolved later where it is used)."""
    plain = f"{key}={value}"
    try:
        parsed = OVERRIDES.parse_override(plain)
        if "${" not in value and not parsed.is_sweep_override() and parsed.value() == value:
            return plain
    except Exception:
        pass
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("${", "\\${")
    return f"{key}='{escaped}'"


def child_name_template(keys: Sequence[str], groups: Sequence[str]) -> str | None:
    """``tracking.run_name`` for the jobs: an interpolation of the swept values only.

    ``hidden=${model.hidden} optimizer=${hydra:runtime.choices.optimizer} lr=${optimizer.lr}``:
    each job resolves it in its own config, whatever launcher runs it. Labels are the
    keys' last components unless two of them clash (then the whole key).
    """
    if not keys:
        return None
    last = [k.split(".")[-1] for k in keys]
    parts = []
    for key, short in zip(keys, last, strict=True):
        label = short if last.count(short) == 1 else key
        value = f"${{hydra:runtime.choices.{key}}}" if key in groups else f"${{oc.select:{key},?}}"
        parts.append(f"{label}={value}")
    return " ".join(parts)


def task_overrides(config: DictConfig) -> list[str]:
    """The command line's overrides as typed (an ``${...}`` in one is not resolved)."""
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    return [str(o) for o in task] if isinstance(task, list) else []


def sweep_plan(config: DictConfig) -> tuple[list[str], list[str], int | None]:
    """What a multirun will run: (swept keys, task overrides, number of jobs or None).

    The number of jobs is known for Hydra's basic sweeper (the Cartesian product of
    ``hydra.sweeper.params`` and the command line's sweeps); None for other sweepers.
    """
    task = task_overrides(config)
    parsed = _sweep_overrides(config)
    if parsed is None:
        return [], task, None
    swept: dict[str, bool] = {}
    for o in parsed:
        key = o.get_key_element().lstrip("+~")
        if not user_overrides([key]):
            continue
        if o.is_sweep_override():
            swept[key] = True
        else:
            swept.pop(key, None)  # a later plain value replaces an earlier sweep
    jobs = job_overrides(config)
    return list(swept), task, None if jobs is None else len(jobs)


def _sweep_overrides(config: DictConfig) -> list[Override] | None:
    """The sweeper's params and the command line's overrides, parsed (None: they don't parse)."""
    params = config.hydra.sweeper.get("params") or {}
    items = [f"{k}={v}" for k, v in params.items()] + task_overrides(config)
    try:
        return OVERRIDES.parse_overrides(items)
    except Exception:
        return None


def job_overrides(config: DictConfig) -> list[list[str]] | None:
    """Each job's overrides, as Hydra's basic sweeper makes them (None for other sweepers)."""
    return _jobs(config, _sweep_overrides(config))


def _basic_sweeper(config: DictConfig) -> bool:
    """The multirun's sweeper is Hydra's basic one (the jobs are the product of the values)."""
    return str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper")


def _jobs(config: DictConfig, parsed: list[Override] | None) -> list[list[str]] | None:
    """:func:`job_overrides` from the sweep's overrides, parsed."""
    if parsed is None or not _basic_sweeper(config):
        return None
    try:
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception:
        return None


def refuse_bad_values(config: DictConfig) -> None:
    """Refuse the sweep before any run when every job of it would be refused: a swept
    config-group option that does not exist (one line, with the options), or a bad value on the
    command line that no swept value replaces, in the config or in a file it reads (CSV
    data, initial weights: its one message, as a run's).

    The sweep's own config (none of the swept values) is checked first; only when it is
    refused are the jobs checked, each derived by its swept values from the sweep's config
    or, for a job that chooses config-group options, from one composition by Hydra per set
    of choices.
    """
    loader = (
        GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    )
    parsed = _sweep_overrides(config)
    swept = [o for o in parsed or [] if o.is_sweep_override()]
    interval = next((o for o in swept if o.is_interval_sweep()), None)
    if interval is not None and _basic_sweeper(config):  # it runs lists of jobs
        raise UserError(
            f"{interval.input_line}: interval() is a range to search (make tune, tune.space), "
            "not jobs to run: give values (a,b), range(...) or choice(...)"
        )
    groups = set(config.hydra.runtime.choices)  # and the groups only the jobs choose (+sweep=)
    if loader is not None:
        options = {o.key_or_group: loader.get_group_options(o.key_or_group) for o in swept}
        groups |= {key for key, found in options.items() if found}
        unknown = choice_error(swept, lambda group: options[group])
        if unknown is not None:
            raise unknown
    base = _without_hydra(config)
    bad = value_error([o for o in swept if o.key_or_group not in groups], base)
    if bad is not None:
        raise bad
    try:
        check_inputs(configure(base))
        return
    except UserError as exc:
        refusal = exc
    jobs = _jobs(config, parsed)
    if jobs is None:  # another sweeper chooses the values: its jobs refuse themselves
        return
    sweeps = {o.key_or_group for o in swept}
    bases: dict[tuple[str, ...], DictConfig] = {(): base}
    first: UserError | None = None
    for overrides in jobs:
        parsed = [o for o in OVERRIDES.parse_overrides(overrides) if o.key_or_group in sweeps]
        chosen = tuple(str(o.input_line) for o in parsed if o.key_or_group in groups)
        if any(o.is_hydra_override() for o in parsed) or (chosen and loader is None):
            return
        try:
            if chosen not in bases:
                assert loader is not None
                bases[chosen] = _without_hydra(loader.load_sweep_config(config, overrides))
            job = copy.deepcopy(bases[chosen])
            values = [o for o in parsed if o.key_or_group not in groups]
            ConfigLoaderImpl._apply_overrides_to_config(values, job)
            check_inputs(configure(job))
            return  # a job that runs: the others are refused one by one, as FAILED children
        except UserError as exc:  # the first job's reason names a value the user gave
            first = first or exc
        except Exception:
            continue
    raise first or refusal


def _without_hydra(config: DictConfig) -> DictConfig:
    """A copy of a sweep's (or job's) config without its ``hydra`` node."""
    out = copy.deepcopy(config)
    with read_write(out), open_dict(out):
        out.pop("hydra")
    return out


# -- the children and the report -------------------------------------------------------------
def collect_children(
    store: RunStore, parent_id: str, close_orphans: bool = True, orphans: str = "FAILED"
) -> list[ChildRecord]:
    """The report's view of the children: overrides, final metrics, RMSE history.

    With ``close_orphans`` a child still RUNNING (its job is over: a worker died, or was
    killed by its launcher on Ctrl-C) is closed with the status ``orphans``, so that no run
    is left RUNNING.
    """
    records = []
    for run in store.children(parent_id):
        status, reason = run.status, run.tags.get("failure_reason", "")
        if status == "RUNNING" and close_orphans:
            reason = reason or (
                "stopped with the sweep before its job closed it"
                if orphans == "KILLED"
                else "the job ended without closing its run (its worker died?)"
            )
            if store.close_if_running(run.run_id, orphans, reason):
                status = orphans
        points = store.history(run.run_id, "train_rmse")
        loaded = json.loads(run.tags.get(OVERRIDES_TAG, "[]"))
        overrides = [str(x) for x in loaded] if isinstance(loaded, list) else []
        records.append(
            ChildRecord(
                run_id=run.run_id,
                run_name=run.run_name,
                status=status,
                overrides=user_overrides(overrides),
                metrics=run.metrics,
                params=run.params,
                failure_reason=reason,
                history=[value for _, value in points],
                steps=[step for step, _ in points],
            )
        )
    return records


def publish_report(
    store: RunStore,
    parent_id: str,
    children: Sequence[ChildRecord],
    param_keys: Sequence[str],
    out_dir: Path,
    title: str = "",
    chosen: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[dict[str, Any]]]:
    """Write ``summary.csv`` and the figures, log them and the best child on the parent.

    With seeds as replicates (``seed`` swept with other keys) also ``replicates.csv`` (each
    config's mean, std and 95 % interval across seeds, and its figure), and the best child
    is the best run of the config with the best mean. ``chosen``: the best child's run id
    as the caller chose it (a study, on its objective), instead.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(children, param_keys)
    write_summary_csv(rows, out_dir / "summary.csv")
    plots.plot_sweep_curves(children, out_dir / "plots" / "sweep_rmse.png", title=title)
    plots.plot_sweep_params(rows, param_keys, out_dir / "plots" / "sweep_params.png")
    reps = replicate_rows(rows, param_keys)
    best = best_row(rows)
    metrics = {
        "n_children": float(len(rows)),
        "n_failed": float(sum(row["status"] != "FINISHED" for row in rows)),
    }
    if reps:
        write_summary_csv(reps, out_dir / "replicates.csv")
        plots.plot_sweep_replicates(reps, out_dir / "plots" / "sweep_replicates.png")
    if reps and reps[0]["n_seeds"]:  # the best config has a mean
        best = next(r for r in rows if r["run_id"] == reps[0]["best_run_id"])
        metrics.update({f"best_config_{k}": float(v) for k, v in reps[0].items()
                        if isinstance(v, float | int) and not isinstance(v, bool)})  # fmt: skip
    best = next((r for r in rows if r["run_id"] == chosen), best)
    store.log_artifacts(parent_id, out_dir)
    tags: dict[str, str] = {}
    if best is not None:
        tags = {"best_run_id": str(best["run_id"]), "best_run_name": str(best["run_name"])}
        for key in METRICS:  # the summary's final metrics, as best_<key> on the parent
            if key in best and best[key] == best[key]:  # present and not NaN
                metrics[f"best_{key}"] = float(best[key])
    store.log_metrics(parent_id, metrics)
    if tags:
        store.set_tags(parent_id, tags)
    return rows, best, reps


def register_best(
    store: RunStore, run_id: str, name: str, tags: dict[str, str] | None = None
) -> str:
    """The child's model registered as ``models:/<name>@best`` (the version with ``tags``:
    which sweep chose it); returns its version.

    A child that logged no model (sweeps skip it: ``tracking.log_model``) gets it built from
    its record first: its config, its data again (seeded), its final weights.
    """
    if store.read_text(run_id, "model/MLmodel") is None:
        text = store.read_text(run_id, "config.yaml")
        if text is None:
            raise UserError(f"run {run_id} has no config.yaml: its model cannot be built")
        with tempfile.TemporaryDirectory(prefix="mlplab-best-") as tmp:
            cfg = recorded_config(text)
            job = prepare(cfg, Path(tmp))
            weights = store.download(run_id, "weights/final.npz", Path(tmp))
            if weights is None:
                raise UserError(f"run {run_id} has no weights/final.npz: no model to register")
            net = build.network(cfg, job.sizes)
            net.set_weights(load_weights(weights))
            store.log_model(run_id, model_request(job, net, weights))
    return store.register_model(run_id, name, "best", tags)


def print_report(
    rows: list[dict[str, Any]],
    best: dict[str, Any] | None,
    header: str,
    reps: Sequence[dict[str, Any]] = (),
) -> None:
    """The summary table on the terminal, the configs across seeds, and the best child."""
    lines = [header, format_table(rows)]
    if reps:
        lines += ["", "across seeds (best mean first):", format_replicates(reps)]
    if best is not None:
        lines.append(
            f"best: {best['run_name']} (run {best['run_id']}), test RMSE {best['test_rmse']:.6g}"
        )
    elif rows:
        lines.append(
            "best: none (no job has a test RMSE: each failed or was stopped, "
            "or data.test_fraction=0)"
        )
    print("\n".join(lines), flush=True)


# -- the Hydra callback ----------------------------------------------------------------------
class MlflowSweepCallback(Callback):
    """Parent run before the jobs, report and status after them (see the module doc)."""

    def __init__(self, report: bool = True) -> None:
        self.report = report
        self.parent: Parent | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Launchers send the callbacks to their workers: the parent stays in this process."""
        return {**self.__dict__, "parent": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a bad value every job has; create store, experiment and parent run; hand
        their ids to every job."""
        os.environ[SWEEP_PROCESS_ENV] = str(os.getpid())  # see config.in_sweep_process
        try:
            refuse_bad_values(config)
            self._start(config)
            if self.parent is not None:  # closed here if on_multirun_end never comes
                atexit.register(self._close_stopped, config)
        except UserError as exc:
            say_error(str(exc))
            raise JobExit(exc.exit_code) from None
        except Exception as exc:
            # Hydra would only warn and start the jobs without a parent: stop here.
            log.exception("could not start the sweep's parent run")
            if self.parent is not None:
                self.parent.close("FAILED")
            raise JobExit(1) from exc

    def _start(self, config: DictConfig) -> None:
        tracking = tracking_settings(config)
        if not tracking.enabled:  # the helper started first has nothing to guard or log
            release_unused()
            return
        assert tracking.uri is not None
        configure_http(tracking.timeout, tracking.retries)
        # a bad store refused with a single run's message (not MLflow's, once it is opened)
        check_store(tracking.uri, tracking.timeout, tracking.retries)
        keys, task, jobs = sweep_plan(config)
        choices = config.hydra.runtime.get("choices") or {}
        self.name = str(choices.get("sweep") or "multirun")
        sweeper_params = {
            str(k): str(v) for k, v in (config.hydra.sweeper.get("params") or {}).items()
        }
        visible = " ".join(user_overrides(task))
        tags = {
            "sweep": self.name,
            "sweep_overrides": visible,
            "sweep_params": json.dumps(sweeper_params),
            "sweep_keys": ",".join(keys),
            "sweep_dir": str(Path(str(config.hydra.sweep.dir)).resolve()),
            "mlplab_role": "sweep",
            "mlflow.note.content": (
                f"Sweep `{self.name}`: {jobs if jobs is not None else 'several'} jobs over "
                f"{', '.join(keys) or '(no swept key)'}; command-line overrides: "
                f"`{visible or '(none)'}`. The children are the jobs; "
                "summary.csv and plots/ compare them."
            ),
            **({"sweep_jobs": str(jobs)} if jobs is not None else {}),
        }
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        self.parent = start_parent(
            tracking.uri,
            tracking.experiment,
            f"sweep {self.name} {stamp}",
            tags,
            {f"sweep.{k}": v for k, v in sweeper_params.items()},
        )
        self.keys, self.jobs = keys, jobs
        self.register = tracking.register_best
        self.experiment = tracking.experiment
        injected = {
            "tracking.uri": tracking.uri,
            "tracking.experiment": tracking.experiment,
            "tracking.parent_run_id": self.parent.run_id,
        }
        template = child_name_template(keys, [str(g) for g in choices])
        if template and not tracking.run_name:
            injected["tracking.run_name"] = template
        # through the environment of every job (hydra.job.env_set, added to the overrides of
        # Hydra's own that every job's config is composed with): not on the job lines
        env_set = [
            hydra_override(f"+hydra.job.env_set.{SWEEP_ENV[k]}", v) for k, v in injected.items()
        ]
        entry_point = str(Path(sys.argv[0]).resolve())
        env_set.append(hydra_override(f"+hydra.job.env_set.{ENTRY_POINT_ENV}", entry_point))
        with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
            # unresolved: an override such as hydra.sweep.subdir=${hydra.job.num} is text here
            ours = OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)
            assert isinstance(ours, list)
            config.hydra.overrides.hydra = [*ours, *env_set]
        print(
            f"sweep {self.name}: parent run {self.parent.run_id} in experiment "
            f"{tracking.experiment!r} ({tracking.uri}), {jobs if jobs is not None else '?'} jobs",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Report on the parent, print the table, close the parent FINISHED or FAILED (KILLED
        when Ctrl-C or SIGTERM cuts the report short)."""
        atexit.unregister(self._close_stopped)
        if self.parent is None:
            return
        status, reason = "FAILED", ""
        try:
            status = self._finish(config, self.parent)
        except KeyboardInterrupt:
            status, reason = "KILLED", "interrupted while the sweep report was written"
            raise
        except Exception as exc:
            log.exception("could not write the sweep report")
            reason = f"the sweep report failed: {type(exc).__name__}: {exc}"[:1000]
        finally:
            if reason:
                with contextlib.suppress(Exception):  # the store may be what failed
                    self.parent.store.set_tags(self.parent.run_id, {"failure_reason": reason})
            self.parent.close(status)
        if status != "FINISHED":
            raise JobExit(1)

    def _close_stopped(self, config: DictConfig) -> None:
        """At exit, when the sweep stopped before its end (Ctrl-C, SIGTERM, a launcher that
        raised: Hydra skips ``on_multirun_end``): the report of the children there are, and
        the parent KILLED. A second interrupt leaves the parent to its guard."""
        parent, self.parent = self.parent, None
        if parent is None:
            return
        try:
            self._finish(config, parent, stopped=True)
        except KeyboardInterrupt:
            log.warning("interrupted again: the stopped sweep's report was not written")
        except Exception:
            log.warning("the stopped sweep's report was not written", exc_info=True)
        with contextlib.suppress(BaseException):
            parent.close("KILLED")

    def _finish(self, config: DictConfig, parent: Parent, stopped: bool = False) -> str:
        children = collect_children(
            parent.store, parent.run_id, orphans="KILLED" if stopped else "FAILED"
        )
        finished = sum(c.status == "FINISHED" for c in children)
        expected = self.jobs if self.jobs is not None else len(children)
        ok = finished == len(children) >= max(expected, 1)
        status = "KILLED" if stopped else "FINISHED" if ok else "FAILED"
        if stopped:
            reason = f"stopped (Ctrl-C, SIGTERM or an error) after {finished}/{expected} jobs"
            parent.store.set_tags(parent.run_id, {"failure_reason": reason})
        if not self.report:
            return status
        out_dir = Path(str(config.hydra.sweep.dir)) / "report"
        title = f"sweep {self.name}: train RMSE per epoch"
        rows, best, reps = publish_report(
            parent.store, parent.run_id, children, self.keys, out_dir, title
        )
        if best is not None and self.register and not stopped:
            chosen_by = {
                "sweep": self.name,
                "sweep_parent_run_id": parent.run_id,
                "test_rmse": f"{best['test_rmse']:.6g}",
            }
            version = register_best(parent.store, str(best["run_id"]), self.experiment, chosen_by)
            print(
                f"registered model {self.experiment!r} version {version} (alias best): "
                f"mlflow models predict -m 'models:/{self.experiment}@best' -i <input.csv> "
                "-t csv --env-manager local",
                flush=True,
            )
        missing = max(0, expected - len(children))
        if missing and not stopped:
            reason = f"{missing} of {expected} jobs left no run"
            parent.store.set_tags(parent.run_id, {"failure_reason": reason})
        others = len(children) - finished
        header = (
            f"\nsweep {self.name}: {finished}/{expected} jobs finished"
            + (f", {others} {'not finished' if stopped else 'failed'}" if others else "")
            + (f", {missing} left no run" if missing else "")
            + f" -> parent run {parent.run_id} {status}; report in {out_dir}"
        )
        print_report(rows, best, header, reps)
        return status

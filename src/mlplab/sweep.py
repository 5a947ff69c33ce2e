"""Sweeps: one MLflow parent run per Hydra multirun, a child run per job, a report at the end.

:class:`MlflowSweepCallback` is registered under ``hydra.callbacks``. In the launching
process, *before any job starts*, ``on_multirun_start`` creates the store, the
experiment and the parent run, then appends ``tracking.uri``, ``tracking.experiment`` and
``tracking.parent_run_id`` to ``hydra.overrides.task``: Hydra reads that list after the
callback and hands it to the sweeper, so every job, in this process, in a joblib worker
or on another machine, receives them in its own config. Parallel jobs therefore never
race to migrate a fresh SQLite schema or to create the experiment.

``on_multirun_end`` collects the children, writes the report on the parent
(``summary.csv``, ``plots/sweep_rmse.png``, ``plots/sweep_params.png``, the best child's
id and metrics), prints the table and closes the parent: FINISHED when every planned job
finished, FAILED otherwise. Hydra skips ``on_multirun_end`` when the sweeper raises and on
Ctrl-C, so :func:`close_open_parent` (called by :func:`mlplab.cli.finish_main`) closes a
parent that is still RUNNING: a parent is never left RUNNING.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

import mlplab
from mlplab.config import TrackingConfig
from mlplab.errors import UserError
from mlplab.report import (
    METRICS,
    ChildRecord,
    best_row,
    format_table,
    plot_curves,
    plot_params,
    summary_frame,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

log = logging.getLogger("mlplab")

#: Overrides added to every job of a sweep (never part of a run name or output folder).
INJECTED_KEYS = (
    "tracking.uri",
    "tracking.experiment",
    "tracking.parent_run_id",
    "tracking.run_name",
)

_lock = threading.Lock()
_open: dict[str, str] = {}  # the parent run this process opened and has not closed: uri, run_id
_guarded: list[bool] = []  # the atexit hook is registered


# -- the parent run ----------------------------------------------------------------------
def _remember(uri: str, run_id: str) -> None:
    with _lock:
        _open.clear()
        _open.update(uri=uri, run_id=run_id)


def _forget() -> None:
    with _lock:
        _open.clear()


def open_parent() -> tuple[str, str] | None:
    """``(uri, run_id)`` of the parent run this process opened and has not closed yet."""
    with _lock:
        return (_open["uri"], _open["run_id"]) if _open else None


def close_open_parent(status: str) -> None:
    """Close the parent run opened by this process if it is still RUNNING (else no-op).

    Called at the end of every command (FINISHED, FAILED, or KILLED on Ctrl-C), so that
    a parent whose ``on_multirun_end`` never ran is not left RUNNING.
    """
    opened = open_parent()
    if opened is None:
        return
    uri, run_id = opened
    _forget()
    try:
        from mlplab.tracking import get_client

        client = get_client(uri)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status=status)
            log.info("sweep parent run %s closed as %s", run_id, status)
    except Exception as exc:
        log.warning("could not close the sweep's parent run %s: %s", run_id, exc)


def _close_at_exit() -> None:
    close_open_parent("FAILED")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_guards() -> None:
    """Make SIGTERM an interrupt (unless someone handles it already) and close at exit."""
    if not _guarded:
        atexit.register(_close_at_exit)
        _guarded.append(True)
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _raise_interrupt)


def tracking_settings(config: DictConfig) -> TrackingConfig:
    """The typed ``tracking`` node of a composed config, its URI made absolute."""
    from mlplab.tracking import resolve_uri

    node = OmegaConf.to_container(config.tracking, resolve=True) if "tracking" in config else {}
    merged = OmegaConf.merge(OmegaConf.structured(TrackingConfig), node)
    tracking = OmegaConf.to_object(merged)
    assert isinstance(tracking, TrackingConfig)
    tracking.uri = resolve_uri(tracking.uri)
    return tracking


def start_parent(
    uri: str,
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, str] | None = None,
) -> tuple[Any, str, str]:
    """Create the store (if new), the experiment and a RUNNING parent run.

    Returns ``(client, experiment_id, run_id)``; the run is remembered so that
    :func:`close_open_parent` can close it. Raises :class:`TrackingError`.
    """
    from mlflow.entities import Param

    from mlplab.errors import TrackingError
    from mlplab.pipeline import git_commit
    from mlplab.tracking import PARAM_MAX_LEN, ensure_experiment, get_client

    client = get_client(uri)
    experiment_id = ensure_experiment(client, experiment, uri)
    all_tags = {"mlplab_version": mlplab.__version__, "git_commit": git_commit(), **tags}
    try:
        run = client.create_run(
            experiment_id,
            run_name=run_name,
            tags={k: str(v)[:PARAM_MAX_LEN] for k, v in all_tags.items()},
        )
    except Exception as exc:
        raise TrackingError(f"tracking.uri={uri!r}: cannot create the parent run ({exc})") from None
    run_id = run.info.run_id
    _remember(uri, run_id)
    if params:
        client.log_batch(
            run_id, params=[Param(k, str(v)[:PARAM_MAX_LEN]) for k, v in params.items()]
        )
    return client, experiment_id, run_id


# -- the plan of a sweep -----------------------------------------------------------------
def hydra_override(key: str, value: str) -> str:
    """``key=value`` for Hydra's override grammar, quoted when the value needs it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = f"{key}={value}"
    try:
        parsed = OverridesParser.create().parse_override(plain)
        if not parsed.is_sweep_override() and parsed.value() == value:
            return plain
    except Exception:
        pass
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
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
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = task_overrides(config)
    params = config.hydra.sweeper.get("params") or {}
    items = [f"{k}={v}" for k, v in params.items()] + task
    try:
        parsed = OverridesParser.create().parse_overrides(items)
    except Exception:
        return [], task, None
    swept: dict[str, bool] = {}
    for o in parsed:
        key = o.get_key_element().lstrip("+~")
        if key.startswith(("hydra.", "tracking.")):
            continue
        if o.is_sweep_override():
            swept[key] = True
        else:
            swept.pop(key, None)  # a later plain value replaces an earlier sweep
    jobs: int | None = None
    target = str(config.hydra.sweeper.get("_target_", ""))
    if target.endswith("BasicSweeper"):
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        try:
            jobs = sum(len(b) for b in BasicSweeper.split_arguments(parsed, None))
        except Exception:
            jobs = None
    return list(swept), task, jobs


# -- the children ------------------------------------------------------------------------
@contextlib.contextmanager
def quiet_downloads() -> Iterator[None]:
    old = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = old


def read_overrides(client: MlflowClient, run_id: str) -> list[str] | None:
    """A run's ``overrides.yaml`` artifact, or None if it has none."""
    import yaml

    try:
        with tempfile.TemporaryDirectory() as tmp, quiet_downloads():
            path = client.download_artifacts(run_id, "overrides.yaml", tmp)
            loaded = yaml.safe_load(Path(path).read_text())
    except Exception:
        return None
    return [str(x) for x in loaded] if isinstance(loaded, list) else None


def child_runs(client: MlflowClient, parent_id: str) -> list[Any]:
    """Every run whose ``mlflow.parentRunId`` is ``parent_id``, oldest first."""
    from mlflow.entities import ViewType

    parent = client.get_run(parent_id)
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            run_view_type=ViewType.ALL,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        out.extend(page)
        token = page.token
        if not token:
            return out


def collect_children(
    client: MlflowClient, parent_id: str, close_orphans: bool = True
) -> list[ChildRecord]:
    """The report's view of the children: overrides, final metrics, RMSE history.

    With ``close_orphans`` a child still RUNNING (its job is over: a worker died) is
    marked FAILED, so that no run is left RUNNING.
    """
    records = []
    for run in child_runs(client, parent_id):
        info, data = run.info, run.data
        tags = data.tags
        status = info.status
        reason = tags.get("failure_reason", "")
        if status == "RUNNING" and close_orphans:
            reason = reason or "the job ended without closing its run (its worker died?)"
            with contextlib.suppress(Exception):
                client.set_tag(info.run_id, "failure_reason", reason)
                client.set_terminated(info.run_id, status="FAILED")
                status = "FAILED"
        try:
            points = client.get_metric_history(info.run_id, "train_rmse")
            history = [m.value for m in sorted(points, key=lambda m: m.step)]
        except Exception:
            history = []
        overrides = read_overrides(client, info.run_id)
        if overrides is None:
            overrides = []
        visible = [o for o in overrides if not o.lstrip("+~").startswith(("tracking.", "hydra."))]
        records.append(
            ChildRecord(
                run_id=info.run_id,
                run_name=info.run_name or tags.get("mlflow.runName", ""),
                status=status,
                overrides=visible,
                metrics=dict(data.metrics),
                params=dict(data.params),
                failure_reason=reason,
                history=history,
            )
        )
    return records


def publish_report(
    client: MlflowClient,
    parent_id: str,
    children: Sequence[ChildRecord],
    param_keys: Sequence[str],
    out_dir: Path,
    title: str = "",
) -> tuple[pd.DataFrame, pd.Series | None]:
    """Write ``summary.csv`` and the two figures, log them and the best child on the parent."""
    from mlflow.entities import Metric, RunTag

    out_dir.mkdir(parents=True, exist_ok=True)
    frame = summary_frame(children, param_keys)
    frame.to_csv(out_dir / "summary.csv", index=False, float_format="%.17g")
    plot_curves(children, out_dir / "plots" / "sweep_rmse.png", title=title)
    plot_params(frame, param_keys, out_dir / "plots" / "sweep_params.png")
    client.log_artifacts(parent_id, str(out_dir))
    best = best_row(frame)
    now = int(datetime.now().timestamp() * 1000)
    failed = int((frame["status"] != "FINISHED").sum()) if len(frame) else 0
    metrics = [
        Metric("n_children", float(len(frame)), now, 0),
        Metric("n_failed", float(failed), now, 0),
    ]
    tags: list[RunTag] = []
    if best is not None:
        tags += [
            RunTag("best_run_id", str(best["run_id"])),
            RunTag("best_run_name", str(best["run_name"])[:5000]),
        ]
        for key in METRICS:  # the summary's final metrics, as best_<key> on the parent
            if key in frame.columns and best[key] == best[key]:  # not NaN
                metrics.append(Metric(f"best_{key}", float(best[key]), now, 0))
    client.log_batch(parent_id, metrics=metrics, tags=tags)
    return frame, best


def _print_report(
    frame: pd.DataFrame, best: pd.Series | None, header: str, param_keys: Sequence[str]
) -> None:
    lines = [header, format_table(frame, param_keys)]
    if best is not None:
        lines.append(
            f"best: {best['run_name']} (run {best['run_id']}), test RMSE {best['test_rmse']:.6g}"
        )
    print("\n".join(lines), flush=True)


# -- the Hydra callback ------------------------------------------------------------------
class MlflowSweepCallback(Callback):
    """Parent run before the jobs, report and status after them (see the module doc)."""

    def __init__(self, report: bool = True) -> None:
        self.report = report

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create store, experiment and parent run; hand their ids to every job."""
        try:
            self._start(config)
        except UserError as exc:
            from mlplab.cli import error

            error(str(exc))
            raise SystemExit(exc.exit_code) from None
        except Exception as exc:
            # Hydra would only warn and start the jobs without a parent: stop here.
            log.exception("could not start the sweep's parent run")
            close_open_parent("FAILED")
            raise SystemExit(1) from exc

    def _start(self, config: DictConfig) -> None:
        tracking = tracking_settings(config)
        self.parent_id: str | None = None
        if not tracking.enabled:
            return
        from mlplab.tracking import configure_http

        assert tracking.uri is not None
        configure_http(tracking.timeout, tracking.retries)
        keys, task, jobs = sweep_plan(config)
        choices = config.hydra.runtime.get("choices") or {}
        name = str(choices.get("sweep") or "multirun")
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        sweeper_params = {
            str(k): str(v) for k, v in (config.hydra.sweeper.get("params") or {}).items()
        }
        visible = [o for o in task if not o.lstrip("+~").startswith(("tracking.", "hydra."))]
        tags = {
            "sweep": name,
            "sweep_overrides": " ".join(visible),
            "sweep_params": json.dumps(sweeper_params),
            "sweep_keys": ",".join(keys),
            "sweep_dir": str(Path(str(config.hydra.sweep.dir)).resolve()),
            "mlplab_role": "sweep",
            "mlflow.note.content": (
                f"Sweep `{name}`: {jobs if jobs is not None else 'several'} jobs over "
                f"{', '.join(keys) or '(no swept key)'}; command-line overrides: "
                f"`{' '.join(visible) or '(none)'}`. The children are the jobs; "
                "summary.csv and plots/ compare them."
            ),
        }
        if jobs is not None:
            tags["sweep_jobs"] = str(jobs)
        params = {f"sweep.{k}": v for k, v in sweeper_params.items()}
        client, _, run_id = start_parent(
            tracking.uri, tracking.experiment, f"sweep {name} {stamp}", tags, params
        )
        del client
        install_guards()
        self.parent_id, self.uri = run_id, tracking.uri
        self.name, self.keys, self.jobs = name, keys, jobs
        injected = {
            "tracking.uri": tracking.uri,
            "tracking.experiment": tracking.experiment,
            "tracking.parent_run_id": run_id,
        }
        template = child_name_template(keys, [str(g) for g in choices])
        if template and not tracking.run_name:
            injected["tracking.run_name"] = template
        with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
            kept = [
                o
                for o in task_overrides(config)
                if o.partition("=")[0].lstrip("+~") not in injected
            ]
            config.hydra.overrides.task = kept + [hydra_override(k, v) for k, v in injected.items()]
        print(
            f"sweep {name}: parent run {run_id} in experiment {tracking.experiment!r} "
            f"({tracking.uri}), {jobs if jobs is not None else '?'} jobs",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Report on the parent, print the table, close the parent FINISHED or FAILED."""
        if not getattr(self, "parent_id", None):
            return
        assert self.parent_id is not None
        status = "FAILED"
        try:
            status = self._finish(config)
        except Exception:
            log.exception("could not write the sweep report")
        finally:
            if status != "FINISHED":
                from mlplab.cli import STATE

                STATE.failed = True
            close_open_parent(status)

    def _finish(self, config: DictConfig) -> str:
        from mlplab.tracking import get_client

        assert self.parent_id is not None
        client = get_client(self.uri)
        children = collect_children(client, self.parent_id)
        finished = sum(c.status == "FINISHED" for c in children)
        expected = self.jobs if self.jobs is not None else len(children)
        ok = finished == len(children) and len(children) >= expected and len(children) > 0
        status = "FINISHED" if ok else "FAILED"
        if not self.report:
            return status
        out_dir = Path(str(config.hydra.sweep.dir)) / "report"
        frame, best = publish_report(
            client,
            self.parent_id,
            children,
            self.keys,
            out_dir,
            title=f"sweep {self.name}: train RMSE per epoch",
        )
        missing = max(0, expected - len(children))
        if missing:
            client.set_tag(
                self.parent_id, "failure_reason", f"{missing} of {expected} jobs left no run"
            )
        header = (
            f"\nsweep {self.name}: {finished}/{expected} jobs finished"
            + (f", {len(children) - finished} failed" if len(children) > finished else "")
            + (f", {missing} left no run" if missing else "")
            + f" -> parent run {self.parent_id} {status}; report in {out_dir}"
        )
        _print_report(frame, best, header, self.keys)
        return status


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - convenience
    """``python -m mlplab.sweep <parent id> [uri]``: print the report of a sweep again."""
    from mlplab.tracking import default_uri, get_client

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m mlplab.sweep <parent run id> [tracking uri]", file=sys.stderr)
        return 2
    client = get_client(args[1] if len(args) > 1 else default_uri())
    children = collect_children(client, args[0], close_orphans=False)
    keys = [k for k in client.get_run(args[0]).data.tags.get("sweep_keys", "").split(",") if k]
    frame = summary_frame(children, keys)
    _print_report(frame, best_row(frame), f"sweep {args[0]}", keys)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

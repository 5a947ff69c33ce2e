"""Glue between Hydra's entry points and the pipeline: exit statuses, messages, the sink.

Exit statuses: 0 success; 2 a user error (bad config value, bad data file, unreachable
store), one line on stderr and no traceback; 1 a run that failed (divergence, failed
gradient check, a failed sweep child); 130 an interrupt (SIGINT or SIGTERM).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlplab.config import Config, to_config
from mlplab.errors import RunFailed, UserError
from mlplab.pipeline import RunOutcome, run
from mlplab.tracking import (
    CHECKED_STORES,
    MlflowSink,
    NullSink,
    check_store,
    configure_http,
    repo_root,
    resolve_uri,
)

log = logging.getLogger("mlplab")
# MLflow's per-file download bars (shown while the model is saved) are noise here.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class _State:
    started = False  # the task function was entered: Hydra's composition succeeded
    failed = False  # a job failed (sweeps go on; the exit status says so at the end)
    user_error = False


STATE = _State()


def error(message: str) -> None:
    """Print one user-facing error line on stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def make_sink(cfg: Config) -> Any:
    """The tracking sink for ``cfg``; a bad store is a :class:`TrackingError` here.

    A single run on a SQLite or HTTP store is checked without MLflow and then written
    from the helper process (:mod:`mlplab.background`), unless ``tracking.background=false``.
    Other stores, and the children of sweeps and tuning studies (whose siblings keep the
    other cores busy: a helper would only compete with them), connect in this process.
    """
    t = cfg.tracking
    if not t.enabled:
        return NullSink()
    uri = str(t.uri)
    child = t.parent_run_id is not None
    if t.background and not child and uri.startswith(CHECKED_STORES):
        from mlplab.background import BackgroundSink

        check_store(uri, t.timeout, t.retries)
        return BackgroundSink(uri, t.experiment, t.parent_run_id)
    return MlflowSink(uri, t.experiment, t.parent_run_id)


def _hydra_context() -> tuple[list[str], Path, bool]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    # unresolved: an override holding ${...} is the user's text, not an interpolation to run
    task = OmegaConf.to_container(hc.overrides.task, resolve=False)
    overrides = [str(o) for o in task] if isinstance(task, list) else []
    return overrides, Path(hc.runtime.output_dir), hc.mode == RunMode.MULTIRUN


def resolve_path(path: str | None) -> str | None:
    """A relative path as given if it exists from here, else from the repository root."""
    if not path or Path(path).is_absolute() or Path(path).exists():
        return str(Path(path).resolve()) if path and Path(path).exists() else path
    candidate = repo_root() / path
    return str(candidate) if candidate.exists() else path


def prepare(cfg: DictConfig | Config) -> Config:
    """Typed config with the tracking URI made absolute and HTTP limits applied."""
    typed = to_config(cfg)
    typed.tracking.uri = resolve_uri(typed.tracking.uri)
    typed.data.path = resolve_path(typed.data.path)
    typed.model.init_file = resolve_path(typed.model.init_file)
    configure_http(typed.tracking.timeout, typed.tracking.retries)
    # a dead server is reported once, by us; urllib3's "Retrying ..." lines are noise
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    return typed


def run_job(cfg: DictConfig, extra_tags: dict[str, str] | None = None) -> RunOutcome | None:
    """Run one Hydra job. In a multirun a failed job is recorded and the sweep goes on."""
    STATE.started = True
    overrides, out_dir, multirun = _hydra_context()
    try:
        typed = prepare(cfg)
    except UserError as exc:  # e.g. +model.depth=3: composed by Hydra, refused by the schema
        STATE.user_error = STATE.failed = True
        if not multirun:
            error(str(exc))
            raise SystemExit(exc.exit_code) from None
        log.error("job %s: %s", " ".join(overrides), exc)
        return None
    try:
        return run(typed, make_sink, out_dir, overrides, extra_tags)
    except UserError as exc:
        STATE.user_error = True
        if not multirun:
            error(str(exc))
            raise SystemExit(exc.exit_code) from None
        STATE.failed = True
        log.error("job %s: %s", " ".join(overrides), exc)
        _record_failed_job(typed, overrides, str(exc))
    except RunFailed as exc:
        STATE.failed = True
        if not multirun:
            error(f"run failed: {exc}")
            raise SystemExit(exc.exit_code) from None
        log.error("job %s failed: %s", " ".join(overrides), exc)
    except KeyboardInterrupt:
        raise
    except Exception:
        if not multirun:
            raise
        STATE.failed = True
        log.exception("job %s crashed", " ".join(overrides))
    return None


def _record_failed_job(cfg: Config, overrides: list[str], reason: str) -> None:
    """A sweep job refused by validation still shows in the sweep, as a FAILED child."""
    if not (cfg.tracking.enabled and cfg.tracking.parent_run_id):
        return
    from dataclasses import asdict

    from mlplab.pipeline import run_name_from_overrides
    from mlplab.tracking import flatten

    try:
        sink = make_sink(cfg)
        sink.start(
            flatten(asdict(cfg)),
            {"failure_reason": reason},
            cfg.tracking.run_name or run_name_from_overrides(overrides),
        )
        sink.end("FAILED")
    except Exception as exc:  # the store itself may be the problem
        log.error("could not record the failed job: %s", exc)


def report(outcome: RunOutcome | None, brief: bool = False, uri: str | None = None) -> None:
    """What the user sees at the end of a run (one line per job in a sweep: ``brief``)."""
    if outcome is None:
        return
    m = outcome.metrics
    if brief:
        print(
            f"job {outcome.out_dir.name}: {outcome.status}, {outcome.epochs_run} epochs, "
            f"test RMSE {m.get('test_rmse', float('nan')):.6f}",
            flush=True,
        )
        return
    lines = [
        f"run {outcome.run_id or '(tracking off)'}: {outcome.status}, "
        f"{outcome.epochs_run} epochs, weights sha256 {outcome.weights_sha256[:12]}",
        f"  train RMSE {m.get('final_train_rmse', float('nan')):.6f}   "
        f"test RMSE {m.get('test_rmse', float('nan')):.6f}"
        + (f"   test accuracy {m['test_accuracy']:.3f}" if "test_accuracy" in m else ""),
        f"  files: {outcome.out_dir}",
    ]
    if outcome.run_id and uri and uri.startswith("http"):
        lines.append(f"  look at it: {uri}")
    elif outcome.run_id:
        lines.append("  look at it: make ui  (MLflow UI on http://127.0.0.1:5000)")
    print("\n".join(lines), flush=True)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def finish_main(main: Callable[[], Any]) -> int:
    """Call a ``@hydra.main`` function and turn its outcome into an exit status."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 1 and not STATE.started:
            _explain_refusal()
            return 2  # Hydra refused the config (unknown option, wrong type): a user error
        _close_sweep("FAILED" if code else "FINISHED")
        return code
    except KeyboardInterrupt:
        _close_sweep("KILLED")
        error("interrupted")
        return 130
    _close_sweep("FAILED")
    return 1 if STATE.failed else 0


def _explain_refusal() -> None:
    """After Hydra's message on an unknown key, say which keys are allowed there."""
    from mlplab.config import unknown_key_hint

    conf = repo_root() / "conf"
    groups = tuple(p.name for p in conf.iterdir() if p.is_dir()) if conf.is_dir() else ()
    hint = unknown_key_hint(sys.argv[1:], groups)
    if hint:
        error(hint)


def _close_sweep(status: str) -> None:
    """Close a sweep's parent run that is still open (no-op outside sweeps)."""
    try:
        from mlplab.sweep import close_open_parent
    except ImportError:
        return
    if status == "KILLED":
        _close_interrupted_children()
    close_open_parent(status)


def _close_interrupted_children() -> None:
    """On Ctrl-C joblib kills its workers at once: close their runs KILLED, not RUNNING."""
    from mlplab.sweep import child_runs, open_parent
    from mlplab.tracking import get_client

    opened = open_parent()
    if opened is None:
        return
    try:
        client = get_client(opened[0])
        for child in child_runs(client, opened[1]):
            if child.info.status == "RUNNING":
                client.set_tag(
                    child.info.run_id,
                    "failure_reason",
                    "interrupted: the sweep was stopped while this job ran",
                )
                client.set_terminated(child.info.run_id, status="KILLED")
    except Exception as exc:  # best effort while the command ends
        log.warning("could not close the interrupted sweep's runs: %s", exc)

"""The tracking helper process (mlplab.tracking.helper): same record, failures, a dead job."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import (
    ROOT,
    artifact_paths,
    fresh_store,
    python_output,
    run_cli,
    wait_for_file,
    wait_for_run,
)
from mlplab.pipeline import run
from mlplab.tracking import make_sink
from mlplab.tracking.fallback import FOLDER_NAME
from mlplab.tracking.helper import BackgroundSink
from mlplab.tracking.mlflow_store import StoreSink


def _record(client: MlflowClient, run_id: str) -> dict:
    """What a run holds, without what differs between any two runs (ids, times)."""
    r = client.get_run(run_id)
    volatile = {"train_seconds"}
    return {
        "status": r.info.status,
        "params": {k: v for k, v in r.data.params.items() if k != "tracking.background"},
        "metrics": {k: v for k, v in r.data.metrics.items() if k not in volatile},
        "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
        "history": [(m.step, m.value) for m in client.get_metric_history(run_id, "train_rmse")],
        "artifacts": artifact_paths(client, run_id),
    }


def test_helper_and_in_process_record_the_same_run(make_cfg, store, tmp_path):
    common = ("train.epochs=300", "train.tol=0", "trace.enabled=true", f"tracking.uri={store}")
    helper = make_cfg(*common)
    inline = make_cfg(*common, "tracking.background=false")
    assert isinstance(make_sink(inline.tracking), StoreSink)
    sink = make_sink(helper.tracking)
    assert isinstance(sink, BackgroundSink)
    sink.end("FINISHED")  # an empty run: opened and closed, nothing else
    a = run(helper, tmp_path / "a")
    b = run(inline, tmp_path / "b")
    assert a.run_id and b.run_id and a.run_id != b.run_id
    assert a.weights_sha256 == b.weights_sha256
    client = MlflowClient(store)
    ra, rb = _record(client, a.run_id), _record(client, b.run_id)
    assert ra["status"] == "FINISHED" and len(ra["history"]) == 300
    assert "model/MLmodel" in ra["artifacts"] and "plots/network.gif" in ra["artifacts"]
    assert ra == rb


def test_helper_that_dies_mid_run_leaves_a_complete_fallback(make_cfg, tmp_path_factory, tmp_path):
    """The store fails after training: the run FINISHED, its record in the fallback folder.

    The store's tables exist before the run: the sink's calls are asynchronous, so the kill
    could otherwise land while the helper is still creating a fresh store (MLflow's schema
    migration, which a killed process leaves half done; not what this test is about)."""
    store = fresh_store(tmp_path_factory)
    cfg = make_cfg("train.epochs=50", "plot.enabled=false", f"tracking.uri={store}")
    sink = make_sink(cfg.tracking)
    assert isinstance(sink, BackgroundSink)
    real = sink.log_history

    def log_history_then_die(history, steps=None):
        real(history, steps)
        sink.helper.proc.kill()  # as the OOM killer would
        sink.helper.proc.wait()

    sink.log_history = log_history_then_die  # type: ignore[method-assign]
    outcome = run(cfg, tmp_path / "out", sink=sink)
    folder = tmp_path / "out" / FOLDER_NAME
    assert outcome.status == "FINISHED" and outcome.epochs_run == 50
    assert outcome.fallback == folder
    assert "HelperExited" in outcome.recorder.notice and str(folder) in outcome.recorder.notice
    assert {"weights/final.npz", "model/MLmodel", "config.yaml"} <= {
        str(p.relative_to(folder / "artifacts")) for p in (folder / "artifacts").rglob("*")
    }
    # the next run starts a new helper
    again = run(make_cfg("train.epochs=5", "plot.enabled=false", f"tracking.uri={store}"),
                tmp_path / "again")  # fmt: skip
    assert again.status == "FINISHED" and again.run_id and again.fallback is None


def test_a_job_killed_outright_has_its_run_closed_by_the_helper(tmp_path: Path) -> None:
    """SIGKILL leaves the job no chance to end its run: the helper ends it KILLED."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    args = ["train.epochs=100000000", "train.tol=0", "plot.enabled=false", "trace.enabled=false"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "pipelines/run.py",
            *args,
            f"tracking.uri={uri}",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_run(tmp_path / "mlflow.db", "mlplab", proc)
        wait_for_file(tmp_path / "out" / "data" / "test.csv", proc)  # the last input written
        time.sleep(2)  # training: the inputs are handed to the helper as it begins
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        client = MlflowClient(uri)
        (exp,) = client.search_experiments(filter_string="name = 'mlplab'")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            (r,) = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
            if r.info.status != "RUNNING":
                break
            time.sleep(0.2)
        assert r.info.status == "KILLED"
        assert r.data.tags["failure_reason"].startswith("killed")
        assert r.data.params["train.epochs"] == "100000000"  # logged before the kill
        # and its inputs: the run can be rerun, its config and data read
        inputs = {"config.yaml", "weights/initial.npz", "environment.json", "data/train.csv"}
        assert inputs <= artifact_paths(client, r.info.run_id)
        again = run_cli(
            r.info.run_id, "train.epochs=30", "--source-uri", uri, "--out", str(tmp_path / "re"),
            script="pipelines/rerun.py",
        )  # fmt: skip
        assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr[-3000:]
        assert "DIFFER: original weights sha256 (none recorded)" in again.stdout, again.stdout
        assert "train_rmse departs at epoch " in again.stdout  # from the points MLflow kept
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


PRESTART_THEN = """
from mlplab.config import TrackingConfig
from mlplab.tracking import helper, make_sink
helper.prestart()
proc = helper.helper().proc
{then}
try:
    code = proc.wait(timeout={wait})
except Exception:
    code = "still running"
print(code, helper._HELPER is None)
"""


def _prestarted(then: str, wait: float) -> str:
    """What became of a prestarted helper ``wait`` seconds (at most) after ``then`` ran in its
    job, which still lives."""
    return python_output(PRESTART_THEN.format(then=then, wait=wait))[-1]


def test_a_prestarted_helper_is_let_go_when_tracking_is_off() -> None:
    """``make_sink`` of a run that does not log through the helper lets it go: the helper
    exits (status 0) while its job goes on, whatever it was importing."""
    assert _prestarted("make_sink(TrackingConfig(enabled=False))", wait=60) == "0 True"
    in_use = "helper.helper().send(None, 0, 'release', 'no-run')"  # a call: the helper is in use
    off = "make_sink(TrackingConfig(enabled=False))"
    assert _prestarted(f"{in_use}; {off}", wait=3) == "still running False"


def test_the_helper_needs_no_hydra() -> None:
    """The helper imports MLflow's side of the tracking layer without Hydra or the schema."""
    script = (
        "import sys, mlplab.tracking.helper, mlplab.tracking.mlflow_store, mlplab.serving;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'omegaconf'}))"
    )
    assert python_output(script) == ["[]"]


def _entry_point_helper(run_name: str, *args: str) -> bool:
    """Whether ``pipelines/run.py`` run as ``run_name`` with ``args`` started a helper."""
    script = (
        "import runpy, sys; from mlplab.tracking import helper\n"
        f"sys.argv = ['pipelines/run.py', *{list(args)!r}]\n"
        "try:\n"
        f"    runpy.run_path('pipelines/run.py', run_name={run_name!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(helper._HELPER is not None)"
    )
    started = python_output(script)[-1]
    assert started in ("True", "False")
    return started == "True"


def test_the_entry_point_prestarts_the_helper_but_not_in_worker_processes() -> None:
    """A run and a sweep start their helper first; a worker process that multiprocessing's
    spawn starts by running ``pipelines/run.py`` as ``__mp_main__`` (a population's
    workers) does not."""
    assert _entry_point_helper("__main__", "--help")
    assert _entry_point_helper("__main__", "-m", "--help")
    assert not _entry_point_helper("__mp_main__")

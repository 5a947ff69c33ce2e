"""Issue 7 items 2-4: divergence, interrupts and a tracking server that dies mid-run.

Every test drives ``pipelines/run.py`` as a real subprocess against temporary stores: a
diverging run ends FAILED with its history; SIGTERM and SIGINT end a run KILLED with its
history and weights; a server killed mid-run loses nothing (the fallback folder and its
one-command import).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import (
    ROOT,
    SPEC_ARTIFACTS,
    artifact_paths,
    default_sigint,
    python_output,
    run_cli,
    start_run,
    wait_for_file,
    wait_for_run,
)
from mlplab.config import TrackingConfig
from mlplab.interrupts import BetweenEpochs
from mlplab.pipeline import LiveHistory, logged_steps
from mlplab.weights import load_weights, weights_sha256

pytestmark = pytest.mark.slow

#: One BLAS thread per process: these tests share two cores with the rest of the suite.
ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_TRACKING_URI": "sqlite:////nonexistent-dir/do-not-use.db",
}


def _env() -> dict[str, str]:
    return {**os.environ, **ENV}


def _only_run(uri: str) -> tuple[MlflowClient, object]:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(ids, run_view_type=ViewType.ALL)
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    return client, runs[0]


def _history(client: MlflowClient, run_id: str, key: str = "train_rmse") -> list:
    return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)


# -- divergence --------------------------------------------------------------------------
def test_divergence_fails_the_run_and_keeps_the_history(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(
        "data=regression",
        "model=mlp",
        "model.hidden=[8]",
        "optimizer=sgd",
        "optimizer.lr=1e6",
        "train.epochs=500",
        "train.tol=0",
        "plot.animate=false",
        "trace.enabled=false",
        f"tracking.uri={uri}",
        f"hydra.run.dir={tmp_path / 'out'}",
        env=ENV,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert "RuntimeWarning" not in output, "numpy's overflow warnings reach the user"
    assert "diverged at epoch" in proc.stderr
    client, run = _only_run(uri)
    assert run.info.status == "FAILED"
    reason = run.data.tags["failure_reason"]
    m = re.match(r"diverged at epoch (\d+): loss=(\S+)", reason)
    assert m, reason
    epoch = int(m.group(1))
    assert epoch >= 2 and not np.isfinite(float(m.group(2)))
    history = _history(client, run.info.run_id)
    assert len(history) == epoch - 1
    assert [p.step for p in history] == list(range(1, epoch))
    assert all(np.isfinite(p.value) for p in history)
    assert run.data.metrics["epochs_run"] == epoch - 1
    assert run.data.tags["stop_reason"] == "diverged"
    assert run.info.run_name == "regression · sgd lr=1e+06 · [8]"  # the data chosen, not "tutorial"
    # the rest of its record too (SPEC §5): its data, and the figures of how it diverged
    assert {
        "weights/initial.npz",
        "weights/final.npz",
        "config.yaml",
        "data/train.csv",
        "data/test.csv",
        "plots/rmse.png",
        "plots/predictions.png",
        "plots/network.png",
    } <= artifact_paths(client, run.info.run_id)


# -- interrupts --------------------------------------------------------------------------
LONG_RUN = [
    "data=regression",
    "model=mlp",
    "model.hidden=[16]",
    "optimizer=adam",
    "train.reduction=mean",
    "train.epochs=10000000",
    "train.tol=0",
    "plot.enabled=false",
    "trace.enabled=false",
]
#: The train_rmse points a run's history keeps in MLflow (thinned beyond; a fast machine
#: trains more epochs than that in the seconds before the signal)
MAX_POINTS = TrackingConfig().max_points


#: A run's live history whose call to the store is interrupted (a real SIGINT) midway; then
#: the run is finished as an interrupted one. Prints the steps handed to the store.
LIVE_HISTORY_INTERRUPTED = """
import os, signal, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job's may be ignored
from types import SimpleNamespace as NS
import numpy as np
from mlplab.pipeline import LiveHistory

class Recorder:
    steps = []
    def log_history(self, rows, steps):
        first, self.steps = not self.steps, self.steps + steps  # handed to the store
        if first:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # where Ctrl-C would cut the call in two

rec, values = Recorder(), np.linspace(1.0, 0.1, 5000)
job = NS(cfg=NS(train=NS(epochs=10_000_000), tracking=NS(max_points=10_000)))
live = LiveHistory([job], [rec], every=0.0)
try:
    live(NS(active=[0], history=NS(length=np.array([5000]), data={"r": values[:, None]})))
except KeyboardInterrupt:
    print(rec.steps)
live.finish(0, NS(epochs_run=5000, history={"r": values}), 10_000_000)
print(sorted(rec.steps) == list(range(1, 5001)))
"""


def test_an_interrupt_during_a_live_history_call_sends_no_step_twice() -> None:
    """Ctrl-C arriving while the live history hands its points to the store is taken once
    they are noted as sent: finishing the interrupted run sends the rest, every step once."""
    live, once = python_output(LIVE_HISTORY_INTERRUPTED)
    assert live == "[1, 1002, 2003, 3004, 4005]"  # the live points: every 1 001st epoch
    assert once == "True"  # then every epoch of the 5 000 it ran (no more than max_points)


def test_a_signal_in_training_is_taken_between_two_epochs() -> None:
    """The first Ctrl-C or SIGTERM waits for the next check (the end of an epoch); a second
    Ctrl-C does not wait; a second SIGTERM is ignored, then too; one that came after the
    last check reaches the previous handler as training ends."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with BetweenEpochs() as signals:
            signal.raise_signal(signal.SIGINT)  # noted, not raised
            with pytest.raises(KeyboardInterrupt):
                signals.check(None)
            signals.check(None)  # taken once
        with BetweenEpochs(), pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # the second: at once
        with pytest.raises(KeyboardInterrupt), BetweenEpochs():
            signal.raise_signal(signal.SIGINT)  # after the last check: raised at the end
        with BetweenEpochs() as signals:
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # make's copy
            with pytest.raises(KeyboardInterrupt, match=f"signal {int(signal.SIGTERM)}"):
                signals.check(None)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # the copy may still come
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_run_stopped_right_after_a_live_call_still_logs_its_last_epoch() -> None:
    """The live history covered epoch 20 000 (sending only its strided points) and the run
    stopped there (an interrupt held over that call comes right after it): the last epoch
    is still sent, once, as the first and last epochs always are."""
    NS = SimpleNamespace
    sent: list[int] = []
    rec = NS(log_history=lambda rows, steps: sent.extend(steps))
    job = NS(cfg=NS(train=NS(epochs=10_000_000), tracking=NS(max_points=10_000)))
    live, values = LiveHistory([job], [rec], every=0.0), np.linspace(1.0, 0.1, 20_000)
    live(NS(active=[0], history=NS(length=np.array([20_000]), data={"r": values[:, None]})))
    assert sent[-1] == 19_020  # the last point on the stride of 1 001
    live.finish(0, NS(epochs_run=20_000, history={"r": values}), 10_000_000)
    assert sent == logged_steps(10_000_000, 20_000, 10_000).tolist()
    assert sent[-1] == 20_000


SIGTERM_TWICE = """
import os, signal, time
from mlplab.interrupts import sigterm_interrupts

sigterm_interrupts()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
except KeyboardInterrupt as exc:
    print(exc)
os.kill(os.getpid(), signal.SIGTERM)  # the copy make forwards: it must not cut the cleanup
time.sleep(0.1)
print("closing the runs")
"""


def test_the_first_sigterm_interrupts_and_the_next_are_ignored() -> None:
    assert python_output(SIGTERM_TWICE) == [f"signal {int(signal.SIGTERM)}", "closing the runs"]


INTERRUPTED_WHILE_RECORDING = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job's may be ignored
from pathlib import Path
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from mlplab.config import register_configs, to_config
from mlplab.pipeline import prepare, run_group
from mlplab.tracking import make_sink
from mlplab.tracking.sink import Relay

class CtrlC(Relay):  # Ctrl-C comes as the second member's metrics are handed to the store
    def log_metrics(self, metrics):
        os.kill(os.getpid(), signal.SIGINT)
        super().log_metrics(metrics)

tmp, register = Path(sys.argv[1]), register_configs()
uri = f"sqlite:///{tmp}/mlflow.db"
with initialize_config_dir(config_dir=os.path.abspath("conf"), version_base="1.3"):
    cfgs = [to_config(compose(config_name="config", overrides=[
        f"seed={seed}", f"tracking.uri={uri}", "plot.enabled=false"])) for seed in range(3)]
jobs = [prepare(cfg, tmp / str(seed)) for seed, cfg in enumerate(cfgs)]
sinks = [make_sink(cfg.tracking, in_helper=True) for cfg in cfgs]
sinks[1] = CtrlC(sinks[1])
try:
    run_group(jobs, sinks, progress=False)
except KeyboardInterrupt as exc:  # with each run's outcome, as it ended
    print("interrupted", *[outcome.status for outcome in exc.outcomes])
client = MlflowClient(uri)
runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
for run in sorted(runs, key=lambda r: int(r.data.params["seed"])):
    points = len(client.get_metric_history(run.info.run_id, "train_rmse"))
    files = sorted(a.path for a in client.list_artifacts(run.info.run_id, "weights"))
    ran = int(run.data.metrics["epochs_run"])
    print(run.info.status, run.data.tags.get("failure_reason"), points == ran, *files)
"""


def test_an_interrupt_while_a_population_is_recorded_closes_every_run(tmp_path: Path) -> None:
    """Ctrl-C after training, while the members are recorded: it waits until the member
    being recorded is whole, that and the members before it end as they would have, the
    members after it KILLED with their history, weights and inputs; then it is raised."""
    code = INTERRUPTED_WHILE_RECORDING.replace("sys.argv[1]", repr(str(tmp_path)))
    lines = python_output(code)
    assert lines[0] == "interrupted FINISHED FINISHED KILLED", lines
    weights = "weights/final.npz weights/initial.npz"
    assert lines[1:] == [
        f"FINISHED None True {weights}",
        f"FINISHED None True {weights}",
        f"KILLED interrupted while recording, after training (tolerance) True {weights}",
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupt_ends_the_run_killed_with_history_and_weights(
    tmp_path: Path, sig: signal.Signals
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    proc = start_run(*LONG_RUN, f"tracking.uri={uri}", f"hydra.run.dir={out}", env=_env())
    wait_for_file(out / "config.yaml", proc)  # written as training begins
    time.sleep(4)  # some epochs of training (and the run created by the tracking helper)
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    seconds = time.monotonic() - t0
    output = stdout + stderr
    assert proc.returncode == 130, output[-3000:]
    assert seconds < 30, f"took {seconds:.1f} s to stop"
    assert "Traceback" not in output, output[-3000:]
    assert "interrupted" in stderr
    client, run = _only_run(uri)
    assert run.info.status == "KILLED"
    assert run.data.tags["stop_reason"] == "interrupted"
    assert run.data.tags["failure_reason"].startswith("interrupted at epoch")
    history = _history(client, run.info.run_id)
    n = int(run.data.metrics["epochs_run"])
    assert 0 < n < 10_000_000
    steps = [p.step for p in history]  # every epoch, or thinned to tracking.max_points
    assert steps == list(range(1, n + 1)) if n <= MAX_POINTS else len(steps) <= MAX_POINTS
    assert steps[0] == 1 and steps[-1] == n and steps == sorted(set(steps))
    assert all(np.isfinite(p.value) for p in history)
    # the weights at that moment, logged and matching the recorded hash
    kept = {"weights/initial.npz", "weights/final.npz", "data/train.csv", "data/test.csv"}
    assert kept <= artifact_paths(client, run.info.run_id)  # and the data it trained on
    local = client.download_artifacts(run.info.run_id, "weights/final.npz", str(tmp_path))
    weights = load_weights(local)
    assert weights_sha256(weights) == run.data.tags["weights_sha256"]
    initial = load_weights(out / "weights" / "initial.npz")
    assert any(not np.array_equal(a, b) for a, b in zip(weights, initial, strict=True))
    print(f"\n{sig.name}: stopped {seconds:.2f} s after the signal, {n} epochs kept")


@pytest.mark.parametrize(
    ("how", "launcher"),
    [
        *(("ctrl-c", "joblib"), ("sigterm", "joblib"), ("sigkill", "joblib")),
        *(("ctrl-c", "basic"), ("sigterm-a-worker", "joblib")),
    ],
)
def test_interrupted_sweep_closes_its_parent_and_children(
    tmp_path: Path, how: str, launcher: str
) -> None:
    """Ctrl-C on a sweep (SIGINT to the whole process group, as a terminal sends it),
    SIGTERM to the launching process alone (as a batch scheduler sends it), or SIGKILL
    (the out-of-memory killer): no run is left RUNNING, no job starts after it (the basic
    launcher runs them one after the other), every child keeps its inputs (joblib kills its
    workers on Ctrl-C: they were logged when the run started), and the sweep process, when
    it lives on, closes its parent itself with the report of the children there are."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    started = 2 if launcher == "joblib" else 1
    proc = subprocess.Popen(
        [
            sys.executable,
            "pipelines/run.py",
            "-m",
            "+sweep=base",
            f"hydra/launcher={launcher}",
            *(["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []),
            *LONG_RUN,
            "seed=0,1",
            f"tracking.uri={uri}",
            "tracking.experiment=interrupted",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=ROOT,
        env=_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    try:
        t0 = time.monotonic()
        while len(list(sweep_dir.glob("*/config.yaml"))) < started:
            if proc.poll() is not None or time.monotonic() - t0 > 240:
                pytest.fail(f"the jobs did not start: {proc.communicate()[1][-3000:]}")
            time.sleep(0.1)
        time.sleep(3)
        if how == "sigterm-a-worker":  # stops its job only: the sweep goes on, until Ctrl-C
            os.kill(_loky_worker(proc.pid), signal.SIGTERM)
            _wait_for_a_killed_run(uri, proc)
            time.sleep(2)
            assert proc.poll() is None, "the sweep stopped with the job its worker ran"
        if how in ("ctrl-c", "sigterm-a-worker"):
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        if how == "sigkill":  # its orphaned workers still hold the pipes: don't wait for them
            proc.wait(timeout=120)
            stdout = stderr = ""
        else:
            stdout, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("interrupted")
    deadline = time.monotonic() + 60  # the tracking helper closes what the sweep left open
    while True:
        runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
        if all(r.info.status != "RUNNING" for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    parents = [r for r in runs if r.data.tags.get("mlplab_role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == started, [r.data.tags for r in runs]
    parent = parents[0]
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] == ["KILLED"] * started
    reasons = [c.data.tags.get("failure_reason", "") for c in children]
    assert all(r.startswith(("interrupted at epoch", "killed", "stopped")) for r in reasons)
    if how == "sigkill":
        assert parent.data.tags["failure_reason"].startswith("killed")
        return
    assert parent.data.tags["failure_reason"] == (
        "stopped (Ctrl-C, SIGTERM or an error) after 0/2 jobs"
    )
    assert "summary.csv" in artifact_paths(client, parent.info.run_id)
    assert f"parent run {parent.info.run_id} KILLED" in stdout
    for child in children:
        assert "config.yaml" in artifact_paths(client, child.info.run_id), reasons


def _loky_worker(session: int) -> int:
    """A joblib (loky) worker process of the sweep started in session ``session``."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            pid = int(entry.name)
            command = (entry / "cmdline").read_bytes()
            if os.getsid(pid) == session and b"popen_loky" in command:  # not its tracker
                return pid
    raise AssertionError("no loky worker")


def _wait_for_a_killed_run(uri: str, proc: subprocess.Popen) -> None:
    client, t0 = MlflowClient(uri), time.monotonic()
    exp = client.get_experiment_by_name("interrupted")
    while not client.search_runs([exp.experiment_id], "attributes.status = 'KILLED'"):
        assert proc.poll() is None and time.monotonic() - t0 < 120, "no job ended KILLED"
        time.sleep(0.2)


# -- a tracking server that dies mid-run -------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """``mlflow server`` on a SQLite backend and a free port; killed (group) at the end."""
    port = _free_port()
    db = folder / "server.db"
    log = open(folder / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            str(folder / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=folder,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/health", timeout=2) as r,
            ):
                if r.status == 200:
                    break
            if proc.poll() is not None or time.monotonic() - t0 > 240:
                pytest.fail(f"mlflow server did not start:\n{(folder / 'server.log').read_text()}")
            time.sleep(0.3)
        yield url, proc, db
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def test_server_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    epochs = 8000  # ~9 s of training: the server dies long before the history is sent
    with mlflow_server(tmp_path) as (url, server, server_db):
        proc = subprocess.Popen(
            [
                sys.executable,
                "pipelines/run.py",
                "data=regression",
                "model=mlp",
                "model.hidden=[16]",
                "optimizer=adam",
                "train.reduction=mean",
                f"train.epochs={epochs}",
                "train.tol=0",
                "plot.animate=false",
                "trace.enabled=false",
                f"tracking.uri={url}",
                "tracking.experiment=fragile",
                f"hydra.run.dir={out}",
            ],
            cwd=ROOT,
            env=_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_for_run(server_db, "fragile", proc)  # the run exists on the server: kill it now
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        killed = time.monotonic()
        stdout, stderr = proc.communicate(timeout=600)
        after_kill = time.monotonic() - killed
    output = stdout + stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    folder = out / "mlflow-fallback"
    assert str(folder) in stderr
    assert f"  its record: {folder} (the store failed; see below)" in stdout
    assert "look at it" not in stdout  # a link to the dead server's stub would mislead
    # the server's store holds the half-written run: params, no history
    half = MlflowClient(f"sqlite:///{server_db}")
    exp = half.get_experiment_by_name("fragile")
    (original,) = half.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    assert original.info.status == "RUNNING"
    assert original.data.params["train.epochs"] == str(epochs)
    assert half.get_metric_history(original.info.run_id, "train_rmse") == []
    # the one command the message gives, pointed at a fresh store
    line = next(x for x in stderr.splitlines() if "import them with:" in x)
    command = shlex.split(line.split("import them with:", 1)[1])
    assert command[:4] == ["python", "-m", "mlplab.tracking.fallback", "import"], command
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    t0 = time.monotonic()
    imp = subprocess.run(
        [sys.executable, *command[1:], "--tracking-uri", fresh],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    import_seconds = time.monotonic() - t0
    assert imp.returncode == 0, imp.stdout + imp.stderr
    assert "Warning" not in imp.stderr, imp.stderr  # runpy's "found in sys.modules" was
    client = MlflowClient(fresh)
    exp = client.get_experiment_by_name("fragile")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlplab_fallback_of"] == original.info.run_id
    assert run.data.params == original.data.params  # every param, as first logged
    history = _history(client, run.info.run_id)
    assert [p.step for p in history] == list(range(1, epochs + 1))
    assert all(np.isfinite(p.value) for p in history)
    for key in ("test_rmse", "test_mae", "test_r2", "epochs_run", "train_seconds"):
        assert key in run.data.metrics, key
    assert run.data.metrics["epochs_run"] == epochs
    artifacts = artifact_paths(client, run.info.run_id)
    expected = SPEC_ARTIFACTS | {"model/MLmodel"}
    assert expected <= artifacts, expected - artifacts
    assert not any(a.startswith("mlflow-fallback") for a in artifacts)
    (output,) = run.outputs.model_outputs  # the model is a logged model there too
    assert client.get_logged_model(output.model_id).source_run_id == run.info.run_id
    final = client.download_artifacts(run.info.run_id, "weights/final.npz", str(tmp_path))
    assert weights_sha256(load_weights(final)) == run.data.tags["weights_sha256"]
    # the import is recorded: a second one into the same store is refused
    again = subprocess.run(
        [sys.executable, *command[1:], "--tracking-uri", fresh],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "already imported" in again.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [i["run_id"] for i in manifest["imports"]] == [run.info.run_id]
    print(
        f"\nserver killed: the run exited {after_kill:.1f} s later (training included), "
        f"{manifest['seconds_lost_to_store']:.1f} s of it waiting for the dead server; "
        f"import took {import_seconds:.1f} s"
    )


def test_fallback_import_into_the_same_store_closes_the_half_written_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_cfg
) -> None:
    """In process: the store starts failing after the run was created; the import (into
    the store the run was meant for, the default) completes it and closes the original."""
    from mlplab.pipeline import run
    from mlplab.tracking import fallback
    from mlplab.tracking.mlflow_store import StoreSink

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # in process (tracking.background=false): the store's client is patched below
    cfg = make_cfg("train.epochs=30", "plot.enabled=false", "trace.enabled=false",
                   "tracking.log_model=false", "tracking.background=false",
                   f"tracking.uri={uri}")  # fmt: skip
    calls = []

    def broken(self, *args, **kwargs):
        calls.append(args)
        raise ConnectionError("the store went away")

    real_start = StoreSink.start

    def start_then_break(self, *args, **kwargs):
        real_start(self, *args, **kwargs)
        monkeypatch.setattr(self.store.client, "log_batch", broken.__get__(self))
        monkeypatch.setattr(self.store.client, "log_artifacts", broken.__get__(self))
        monkeypatch.setattr(self.store.client, "set_terminated", broken.__get__(self))

    monkeypatch.setattr(StoreSink, "start", start_then_break)
    out = tmp_path / "out"
    outcome = run(cfg, out, ["train.epochs=30"])  # training ended: a fallback, not an error
    folder = out / fallback.FOLDER_NAME
    assert outcome.status == "FINISHED" and outcome.epochs_run == 30
    assert outcome.fallback == folder
    message = outcome.recorder.notice
    assert str(folder) in message and fallback.import_command(folder) in message
    assert calls, "the store was never called after it broke"
    client = MlflowClient(uri)
    (original,) = client.search_runs(["1"], run_view_type=ViewType.ALL)
    assert original.info.status == "RUNNING"  # the store could not be told otherwise
    monkeypatch.undo()
    assert fallback.main(["import", str(folder)]) == 0  # into the manifest's store
    runs = {r.info.run_id: r for r in client.search_runs(["1"], run_view_type=ViewType.ALL)}
    assert len(runs) == 2
    original = runs.pop(original.info.run_id)
    (imported,) = runs.values()
    assert original.info.status == "FAILED"
    assert imported.info.run_id in original.data.tags["failure_reason"]
    assert imported.info.status == "FINISHED"
    assert imported.data.tags["mlplab_fallback_of"] == original.info.run_id
    steps = [m.step for m in client.get_metric_history(imported.info.run_id, "train_rmse")]
    assert sorted(steps) == list(range(1, 31))
    assert fallback.main(["import", str(folder)]) == 2  # once per store
    assert fallback.main(["import", str(tmp_path)]) == 2  # not a fallback folder


def test_two_runs_started_together_on_a_new_store_are_both_logged(tmp_path: Path) -> None:
    """The first to open the new SQLite store creates MLflow's tables; the other waits for it
    (without that, the second failed: "table ... already exists", its record a fallback)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [
        start_run(
            f"seed={seed}",
            "plot.enabled=false",
            f"tracking.uri={uri}",
            f"hydra.run.dir={tmp_path / str(seed)}",
            env=_env(),
        )
        for seed in (0, 1)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, run_view_type=ViewType.ALL)
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert not list(tmp_path.glob("*/mlflow-fallback"))

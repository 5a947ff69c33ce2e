"""Sweeps at the cost of one run (issue 13): the population engine and launcher.

A population member must be the same run as the same config alone: same history, same
stopping epoch and reason, same weights bit for bit. The engine is checked across update
rules, schedules, weight decay, stopping rules, mini-batches with shuffling, float32,
classification and divergence; the launcher through real Hydra multiruns into real SQLite
stores, against the same configs run alone.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import ROOT, compose_config, default_sigint, run_cli
from mlplab.nn import MLP, OptimizerSpec, TrainData, TrainSettings, fit, make_optimizer
from mlplab.pipeline import logged_steps, run
from mlplab.tracking import NullSink
from mlplab.weights import weights_sha256

S, O = TrainSettings, OptimizerSpec


# -- the engine: a member equals the same network alone -----------------------------------
def _member(seed: int, sizes: list[int], classes: bool) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(50, sizes[0]))
    Y = (
        np.eye(sizes[-1])[rng.integers(0, sizes[-1], 50)]
        if classes
        else rng.uniform(size=(50, sizes[-1]))
    )
    return X, Y


def _train(members: list[int], sizes, acts, specs, settings, dtype="float64", val=0, classes=False):  # type: ignore[no-untyped-def]
    """Train the given members (seeds) as one population; each member's result."""
    P = len(members)
    net = MLP(sizes, acts[0], acts[1], 0.1, dtype, P)
    data = [_member(m, sizes, classes) for m in members]
    for i, m in enumerate(members):
        rng = np.random.default_rng(1000 + m)
        net.set_member(i, [rng.standard_normal((a + 1, b)) for a, b in itertools.pairwise(sizes)])
    X = data[0][0] if P == 1 else np.stack([d[0] for d in data])
    Y = data[0][1] if P == 1 else np.stack([d[1] for d in data])
    train = TrainData(X[..., val:, :], Y[..., val:, :], X[..., :val, :], Y[..., :val, :])
    rngs = [np.random.default_rng(100 + m) for m in members]
    return fit(net, train, make_optimizer(net.weights, specs), settings, rngs)


LRS = (0.01, 0.02, 0.005, 0.03)
CASES: dict[str, tuple[Any, ...]] = {
    "sgd-tolerance": (
        [2, 2, 2], ("sigmoid", "sigmoid"),
        [O("sgd", lr) for lr in (0.5, 0.3, 0.7, 0.2)], [S(epochs=3000, tol=1e-6)] * 4, {},
    ),
    "sgd-diverging-member": (
        [2, 4, 2], ("tanh", "identity"),
        [O("sgd", lr) for lr in (0.5, 50.0, 0.1, 0.01)], [S(epochs=300, tol=0)] * 4, {},
    ),
    "nesterov-shuffled-batches": (
        [2, 4, 2], ("relu", "identity"),
        [O("momentum", lr, momentum=m, nesterov=True)
         for lr, m in zip(LRS, (0.9, 0.5, 0.8, 0.1), strict=True)],
        [S(epochs=150, tol=0, batch_size=16)] * 4, {},
    ),
    "momentum-decay-schedules": (
        [2, 4, 2], ("leaky_relu", "identity"),
        [O("momentum", lr, momentum=0.9, weight_decay=0.01) for lr in LRS],
        [S(epochs=e, tol=0, batch_size=16, schedule=sc, step_size=50, gamma=0.5)
         for e, sc in ((150, "step"), (100, "exponential"), (150, "constant"), (60, "step"))],
        {},
    ),
    "adam-mean-sum": (
        [3, 8, 8, 2], ("tanh", "sigmoid"),
        [O("adam", lr, beta1=b) for lr, b in zip(LRS, (0.9, 0.8, 0.95, 0.9), strict=True)],
        [S(epochs=100, tol=0, batch_size=7, reduction=r) for r in ("mean", "sum") * 2], {},
    ),
    "adam-float32-decay": (
        [3, 8, 2], ("relu", "identity"), [O("adam", lr, weight_decay=0.01) for lr in LRS],
        [S(epochs=150, tol=1e-5, batch_size=10)] * 4, {"dtype": "float32"},
    ),
    "plain-sgd-float32-schedule": (
        [3, 8, 2], ("sigmoid", "identity"), [O("sgd", lr) for lr in LRS],
        [S(epochs=150, tol=0, batch_size=10, schedule="exponential", gamma=0.99)] * 4,
        {"dtype": "float32"},
    ),
    "classification-early-stopping": (
        [3, 16, 4], ("relu", "softmax"), [O("adam", lr) for lr in LRS],
        [S(epochs=300, tol=1e-4, batch_size=8, loss="cross_entropy", reduction="mean",
           classification=True, patience=p) for p in (5, 10, 3, 1)],
        {"val": 10, "classes": True},
    ),
    # the third member stops first (its epochs), then the second by its tolerance while the
    # others have none: the live members are 0, 1, 3 and then 0, 3 (not a contiguous run)
    "out-of-order-stops": (
        [2, 3, 2], ("sigmoid", "sigmoid"), [O("sgd", 0.5)] * 4,
        [S(epochs=300, tol=0.0), S(epochs=300, tol=1e-4), S(epochs=20, tol=0.0),
         S(epochs=300, tol=0.0)], {},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_member_equals_the_same_network_alone(case: str) -> None:
    sizes, acts, specs, settings, extra = CASES[case]
    members = list(range(len(specs)))
    together = _train(members, sizes, acts, specs, settings, **extra)
    reasons = set()
    for i in members:
        (alone,) = _train([i], sizes, acts, [specs[i]], [settings[i]], **extra)
        got = together[i]
        assert weights_sha256(got.weights) == weights_sha256(alone.weights), (case, i)
        assert (got.epochs_run, got.stop_reason) == (alone.epochs_run, alone.stop_reason)
        for key, series in alone.history.items():
            np.testing.assert_array_equal(got.history[key], series, err_msg=key)
        reasons.add(got.stop_reason)
    if case == "sgd-diverging-member":  # the diverged member stopped, the others went on
        assert "diverged" in reasons and "max_epochs" in reasons
    if case in ("sgd-tolerance", "classification-early-stopping"):
        assert len({r.epochs_run for r in together}) > 1  # members stopped at their own epochs
    if case == "out-of-order-stops":
        runs = [(r.epochs_run, r.stop_reason) for r in together]
        assert runs[2] == (20, "max_epochs") and runs[1][1] == "tolerance", runs
        assert 20 < runs[1][0] < 300 and runs[0] == runs[3] == (300, "max_epochs"), runs


# -- the launcher --------------------------------------------------------------------------
def _sweep(
    tmp: Path, *args: str, experiment: str = "pop", command: Sequence[str] = ("pipelines/run.py",)
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``python <command> --multirun <args>`` on a store of its own; its process and the URI."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    proc = run_cli(
        *command[1:],
        "--multirun",
        *args,
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
        f"hydra.sweep.dir={tmp / 'multirun'}",
        "plot.enabled=false",
        "tracking.log_model=false",
        script=command[0],
        timeout=600,
    )
    return proc, uri


def _children(uri: str) -> tuple[Any, list[Any]]:
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], run_view_type=ViewType.ALL
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    return parents[0], [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def _alone(*overrides: str, tmp: Path) -> str:
    """The weights' hash of the same config run alone (in this process, no tracking)."""
    cfg = compose_config(*overrides, "tracking.enabled=false", "plot.enabled=false")
    return run(cfg, tmp, sink=NullSink(), progress=False).weights_sha256


POPULATION = [
    "experiment=sine",  # mini-batches of 32, shuffled, Adam
    "data.val_fraction=0.2",
    "train.patience=5",
    "train.tol=1e-4",
    "train.epochs=60",
]


def test_a_sweep_trains_one_population_and_each_member_is_its_config_alone(
    tmp_path: Path,
) -> None:
    proc, uri = _sweep(tmp_path, "+sweep=base", *POPULATION, "seed=0,1,2", "optimizer.lr=0.01,0.05")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training 6 network(s) as one population" in proc.stdout + proc.stderr
    parent, children = _children(uri)
    assert parent.info.status == "FINISHED" and len(children) == 6
    stops = set()
    for child in children:
        assert child.info.status == "FINISHED"
        p = child.data.params
        overrides = [f"seed={p['seed']}", f"optimizer.lr={p['optimizer.lr']}"]
        alone = _alone(*POPULATION, *overrides, tmp=tmp_path / "alone" / child.info.run_id)
        assert child.data.tags["weights_sha256"] == alone, overrides
        history = MlflowClient(uri).get_metric_history(child.info.run_id, "train_rmse")
        assert len(history) == int(child.data.metrics["epochs_run"])
        stops.add(child.data.tags["stop_reason"])
    assert "early_stopping" in stops  # some members stopped early, on their own epochs


def test_a_mixed_sweep_makes_two_groups_and_records_every_run(tmp_path: Path) -> None:
    proc, uri = _sweep(
        tmp_path, "+sweep=base", "model.hidden=[2],[4]", "seed=0,1", "train.epochs=30"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert output.count("training 2 network(s) as one population") == 2
    parent, children = _children(uri)
    assert parent.info.status == "FINISHED"
    assert sorted(c.info.run_name for c in children) == [
        "hidden=[2] seed=0", "hidden=[2] seed=1", "hidden=[4] seed=0", "hidden=[4] seed=1",
    ]  # fmt: skip
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["weights_sha256"]
        assert int(child.data.metrics["epochs_run"]) == 30
    # the job lines show the user's overrides only: the sweep's tracking keys go by env_set
    assert "tracking.parent_run_id" not in output and "MLPLAB_" not in proc.stdout


def test_jobs_prepared_in_the_workers_keep_their_own_records(tmp_path: Path) -> None:
    """The jobs are prepared in worker processes, one after another in each: every job's
    Hydra record and log are its own, and a job refused there is a FAILED child."""
    proc, uri = _sweep(tmp_path, "+sweep=base", "optimizer.lr=0.5,-1,0.25", "train.epochs=5")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    parent, children = _children(uri)
    assert parent.info.status == "FAILED"
    status = {c.data.params["optimizer.lr"]: c.info.status for c in children}
    assert status == {"0.5": "FINISHED", "-1.0": "FAILED", "0.25": "FINISHED"}
    for num, lr in enumerate(("0.5", "-1", "0.25")):
        (folder,) = (tmp_path / "multirun").glob(f"{num}-*")
        recorded = OmegaConf.load(folder / ".hydra" / "config.yaml")
        assert str(recorded.optimizer.lr) == str(float(lr))
        assert OmegaConf.load(folder / ".hydra" / "hydra.yaml").hydra.job.num == num
        refusal = "optimizer.lr" in (folder / "run.log").read_text()
        assert refusal == (lr == "-1"), folder  # the refusal in the refused job's log only


def test_a_sweep_under_another_main_module_prepares_its_jobs(tmp_path: Path) -> None:
    """A profiled sweep: the worker processes, which spawn starts from the main module
    (here cProfile, not pipelines/run.py), register the project's resolvers themselves."""
    profile = tmp_path / "sweep.prof"
    command = ("-m", "cProfile", "-o", str(profile), "pipelines/run.py")
    proc, uri = _sweep(tmp_path, "+sweep=base", "seed=0,1", "train.epochs=5", command=command)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    parent, children = _children(uri)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    assert profile.stat().st_size > 0


def test_an_interrupted_population_ends_killed_with_partial_histories(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "multirun"
    proc = subprocess.Popen(
        [sys.executable, "pipelines/run.py", "--multirun", "+sweep=base", "seed=0,1,2",
         "train.epochs=100000000", "train.tol=0", "plot.enabled=false", "trace.enabled=false",
         f"tracking.uri={uri}", "tracking.experiment=stopped", f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=default_sigint,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        while len(list(sweep_dir.glob("*/config.yaml"))) < 3:  # every member's inputs written
            assert proc.poll() is None and time.monotonic() - t0 < 240, proc.communicate()[1][
                -3000:
            ]
            time.sleep(0.1)
        time.sleep(3)  # training
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    client = MlflowClient(uri)
    deadline = time.monotonic() + 60
    while True:  # the sweep closes its parent as it exits (else the tracking helper)
        parent, children = _children(uri)
        if parent.info.status != "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert parent.info.status == "KILLED"
    reason = "stopped (Ctrl-C, SIGTERM or an error) after 0/3 jobs"
    assert parent.data.tags["failure_reason"] == reason  # by the sweep, with its report:
    assert f"3 not finished -> parent run {parent.info.run_id} KILLED" in stdout, stdout
    assert len(children) == 3
    for child in children:
        assert child.info.status == "KILLED", (child.data.tags, stderr[-2000:])
        reason = child.data.tags.get("failure_reason", "")
        assert reason.startswith("interrupted at epoch"), (reason, stderr[-2000:])
        n = int(child.data.metrics["epochs_run"])
        assert 0 < n < 100000000
        # a history as long as it ran, at the stride its planned epochs allow, ending on n
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_rmse")]
        assert sorted(steps) == logged_steps(100000000, n, 10000).tolist()
        assert child.data.tags["weights_sha256"]


def _session(sid: int) -> list[int]:
    """The processes of session ``sid`` still alive."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    alive.append(int(entry.name))
            except ProcessLookupError:
                continue
    return alive


def test_a_killed_population_sweep_leaves_no_worker_behind(tmp_path: Path) -> None:
    """SIGKILL (the out-of-memory killer) on the sweep's process: its worker processes,
    which ignore Ctrl-C and SIGTERM, exit too; the tracking helper closes the runs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "multirun"
    proc = subprocess.Popen(
        [sys.executable, "pipelines/run.py", "--multirun", "+sweep=base", "seed=0,1",
         "train.epochs=100000000", "train.tol=0", "trace.enabled=false",
         f"tracking.uri={uri}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        while len(list(sweep_dir.glob("*/config.yaml"))) < 2:  # the workers prepared them
            assert proc.poll() is None and time.monotonic() - t0 < 240
            time.sleep(0.1)
        assert len(_session(proc.pid)) >= 3  # the sweep's process and its two workers
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _session(proc.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (parent := _children(uri)[0]).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    parent, children = _children(uri)
    assert [r.info.status for r in (parent, *children)] == ["KILLED"] * 3


def test_hydra_lists_the_launcher() -> None:
    proc = run_cli("--info", "plugins")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PopulationLauncher" in proc.stdout


def test_derived_job_configs_equal_full_compositions() -> None:
    """The launcher composes once per set of group choices and derives the jobs that
    differ in values only: the same config as Hydra's full composition, key for key."""
    from hydra.core.global_hydra import GlobalHydra

    from hydra_plugins.mlplab_population.population_launcher import Composer

    GlobalHydra.instance().clear()
    from hydra import initialize_config_dir

    from mlplab.project import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["+sweep=smoke"], run_mode=_multirun())
        compose = Composer(loader, master)
        for overrides in (
            ["model.hidden=[4]", "optimizer=adam", "seed=3"],
            ["model.hidden=[8]", "optimizer=adam", "seed=4", "optimizer.lr=0.2"],
            ["model.hidden=[2]", "optimizer=sgd", "train.tol=0"],
            ["model.hidden=[2]", "optimizer=sgd", "+extra=1"],  # an appended key: composed in full
        ):
            try:
                full = loader.load_sweep_config(master, overrides)
            except Exception:
                with pytest.raises(Exception):  # noqa: B017 - Hydra's own error either way
                    compose(overrides)
                continue
            derived = compose(overrides)
            assert OmegaConf.to_container(derived) == OmegaConf.to_container(full), overrides
        assert len(compose.bases) == 2  # sgd and adam: two compositions for three jobs


def _multirun() -> Any:
    from hydra.types import RunMode

    return RunMode.MULTIRUN

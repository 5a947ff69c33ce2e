"""SPEC §6 / issue 7 item 1: every bad input ends the command before any work.

Each case runs ``pipelines/run.py`` as a real subprocess against its own temporary SQLite
store and must: exit with status 2, print a message naming the key or the file, print no
traceback, and leave no run in the store. The subprocesses are started by one module
fixture, a few at a time, so that the module takes about two minutes rather than several.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import ROOT

pytestmark = pytest.mark.slow

PARALLEL = 2  # each case is two processes: the job and the tracking helper it starts first
TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write(d: Path, name: str, text: str | bytes) -> str:
    path = d / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def _npz(d: Path, shapes: list[tuple[int, int]]) -> str:
    path = d / "weights.npz"
    np.savez(path, **{f"W{i}": np.zeros(s) for i, s in enumerate(shapes)})
    return str(path)


GOOD_CSV = "a,b,y\n" + "".join(f"{i},{i * 2},{i % 3}\n" for i in range(20))
FAST = ["train.epochs=5", "plot.enabled=false", "trace.enabled=false"]


@dataclass
class Case:
    """One bad input: overrides built in the case folder, what the message must name."""

    id: str
    args: Callable[[Path], list[str]]
    names: list[str]
    store: Callable[[Path], str] | None = None  # a tracking URI other than <dir>/mlflow.db
    extra: list[str] = field(default_factory=lambda: list(FAST))


def _csv(text: str | bytes, *more: str) -> Callable[[Path], list[str]]:
    return lambda d: ["data=csv", f"data.path={_write(d, 'data.csv', text)}", *more]


CASES = [
    # -- an unknown group option: one line with the group's options (not Hydra's dozen) ----
    Case("unknown-group-option", lambda d: ["model=nope"], ["model=nope", "classifier, mlp"]),
    Case(
        "unknown-optimizer-group",
        lambda d: ["optimizer=rmsprop"],
        ["optimizer=rmsprop is not an option: optimizer has adam, momentum, sgd"],
    ),
    Case("unknown-sweep", lambda d: ["+sweep=nope"], ["sweep=nope", "base, default"]),
    Case("sweep-as-a-group", lambda d: ["sweep=smoke"], ["--multirun +sweep=<name>"]),
    Case("tune-in-a-run", lambda d: ["+tune=default"], ["pipelines/tune.py tune=<name>"]),
    Case("unknown-launcher", lambda d: ["hydra/launcher=nope"], ["has basic, joblib, population"]),
    # a deletion: the key would run at its default, missing from the config shown
    Case("deleted-key", lambda d: ["~seed"], ["~seed: a config key cannot be deleted"]),
    Case("deleted-group", lambda d: ["~model"], ["~model: a config group cannot be removed"]),
    Case("appended-known-key", lambda d: ["+seed=3"], ["+seed=3: seed is in the config already"]),
    # an unknown key: one line (not Hydra's, whose advice +key= fails too), the keys allowed
    Case("unknown-key", lambda d: ["model.depth=3"], ["model.depth", "hidden, activation"]),
    Case("unknown-top-key", lambda d: ["sede=3"], ["sede", "seed, data, model"]),
    # composed by Hydra (an appended key, an interpolation), refused by the schema
    Case("appended-unknown-key", lambda d: ["+model.depth=3"], ["model.depth", "init_scale"]),
    Case("bad-interpolation", lambda d: ["optimizer.lr=${nope}"], ["optimizer.lr", "nope"]),
    # a value of the wrong type: one line, the schema's (checked before Hydra composes)
    Case("wrong-type-float", lambda d: ["optimizer.lr=fast"], ["optimizer.lr", "fast"]),
    Case("wrong-type-int", lambda d: ["train.epochs=ten"], ["train.epochs", "ten"]),
    Case("wrong-type-list", lambda d: ["model.hidden=[a,b]"], ["model.hidden"]),
    # -- values: ranges ----------------------------------------------------------------------
    Case("negative-width", lambda d: ["model.hidden=[-3]"], ["model.hidden[0]", "-3", ">= 1"]),
    Case("zero-width", lambda d: ["model.hidden=[4,0]"], ["model.hidden[1]", ">= 1"]),
    # 3·10¹² weights: refused with its memory estimate before any weight is drawn
    Case(
        "too-big-to-train",
        lambda d: ["model.hidden=[1000000000000]"],
        ["model.hidden=[1000000000000]", "fits in memory", "GiB are available"],
    ),
    Case("lr-zero", lambda d: ["optimizer.lr=0"], ["optimizer.lr", "> 0"]),
    Case("lr-negative", lambda d: ["optimizer.lr=-0.1"], ["optimizer.lr", "-0.1"]),
    Case("lr-nan", lambda d: ["optimizer.lr=nan"], ["optimizer.lr", "nan"]),
    Case("lr-inf", lambda d: ["optimizer.lr=inf"], ["optimizer.lr", "inf"]),
    Case(
        "momentum-one",
        lambda d: ["optimizer=momentum", "optimizer.momentum=1.0"],
        ["optimizer.momentum", "< 1"],
    ),
    Case("test-fraction-one", lambda d: ["data.test_fraction=1.0"], ["data.test_fraction"]),
    Case(
        "fractions-sum-one",
        lambda d: ["data.test_fraction=0.5", "data.val_fraction=0.5"],
        ["data.val_fraction", "< 1"],
    ),
    Case("epochs-zero", lambda d: ["train.epochs=0"], ["train.epochs", ">= 1"], extra=[]),
    Case("batch-size-zero", lambda d: ["train.batch_size=0"], ["train.batch_size", "null"]),
    Case(
        "leaky-slope-above-one",
        lambda d: ["model.activation=leaky_relu", "model.negative_slope=1.5"],
        ["model.negative_slope", "1.5", "< 1"],
    ),
    Case("seed-negative", lambda d: ["seed=-1"], ["seed", ">= 0"]),
    Case(
        "xor-wrong-width",
        lambda d: ["data=xor", "data.n_features=3"],
        ["data.n_features", "data.name=xor"],
    ),
    Case(
        "classification-of-continuous-data",
        lambda d: [
            "data.task=classification",
            "train.loss=cross_entropy",
            "model.output_activation=softmax",
        ],
        ["data.task", "regression"],
    ),
    # -- values: names and combinations ------------------------------------------------------
    # -- choices and types: the schema's, refused in one line (with the list of members) ---
    Case(
        "unknown-activation",
        lambda d: ["model.activation=swish"],
        [
            "model.activation",
            "swish",
            "expected one of [sigmoid, tanh, relu, leaky_relu, identity]",
        ],
    ),
    Case(
        "unknown-output-activation",
        lambda d: ["model.output_activation=gelu"],
        ["model.output_activation", "gelu", "softmax"],
    ),
    # softmax is an output activation only: not a hidden layer's choice
    Case("softmax-hidden", lambda d: ["model.activation=softmax"], ["model.activation"]),
    Case("unknown-init", lambda d: ["model.init=orthogonal"], ["model.init", "xavier"]),
    Case("unknown-loss", lambda d: ["train.loss=hinge"], ["train.loss", "cross_entropy"]),
    Case("unknown-reduction", lambda d: ["train.reduction=max"], ["train.reduction", "mean"]),
    Case("unknown-dtype", lambda d: ["train.dtype=float16"], ["train.dtype", "float32"]),
    Case(
        "unknown-optimizer-name",
        lambda d: ["optimizer.name=rmsprop"],
        ["optimizer.name", "adam"],
    ),
    Case(
        "softmax-with-mse",
        lambda d: ["model.output_activation=softmax"],
        ["train.loss", "cross_entropy"],
    ),
    Case(
        "cross-entropy-regression",
        lambda d: ["model.output_activation=softmax", "train.loss=cross_entropy"],
        ["train.loss", "data.task=classification"],
    ),
    Case(
        "init-file-missing",
        lambda d: ["model.init=file", f"model.init_file={d}/nope.npz"],
        ["model.init_file", "nope.npz"],
    ),
    Case(
        "init-file-wrong-shape",
        lambda d: ["model.init=file", f"model.init_file={_npz(d, [(3, 5), (6, 2)])}"],
        ["model.init_file", "weights.npz", "(3, 2)"],
    ),
    Case(
        "init-file-not-npz",
        lambda d: ["model.init=file", f"model.init_file={_write(d, 'w.npz', 'text')}"],
        ["model.init_file", "w.npz"],
    ),
    # -- the data source ---------------------------------------------------------------------
    Case("csv-no-path", lambda d: ["data=csv"], ["data.path"]),
    Case(
        "csv-missing-file",
        lambda d: ["data=csv", f"data.path={d}/absent.csv"],
        ["data.path", "absent.csv"],
    ),
    Case("csv-empty-file", _csv(""), ["data.path", "data.csv", "empty"]),
    Case("csv-header-only", _csv("a,b,y\n"), ["data.path", "data.csv", "no data rows"]),
    Case(
        "csv-one-column",
        _csv("a;b;y\n1;2;3\n4;5;6\n7;8;9\n"),
        ["data.path", "one column only ('a;b;y')", "target column, separated by commas"],
    ),
    Case(
        "csv-duplicate-columns",
        _csv("a,a,y\n1,2,3\n4,5,6\n7,8,9\n"),
        ["data.path", "duplicate column names ['a', 'a', 'y']"],
    ),
    Case(
        "csv-no-targets",
        _csv("a,b,y\n1,2,3\n4,5,6\n7,8,9\n", "data.targets=[]"),
        ["data.targets: [] names no column"],
    ),
    Case(
        "csv-non-numeric",
        _csv("a,b,y\n1,2,3\n4,five,6\n7,8,9\n1,1,1\n2,2,2\n"),
        ["data.csv", "'b'", "not numeric", "five"],
    ),
    Case(
        "csv-nan",
        _csv("a,b,y\n1,2,3\n4,,6\n7,8,9\n1,1,1\n2,2,2\n"),
        ["data.csv", "'b'", "missing value"],
    ),
    Case(
        "csv-nan-literal", _csv("a,b,y\n1,2,3\n4,NaN,6\n7,8,9\n1,1,1\n2,2,2\n"), ["data.csv", "'b'"]
    ),
    Case(
        "csv-missing-column",
        _csv(GOOD_CSV, "data.targets=[label]"),
        ["data.targets", "'label'", "data.csv"],
    ),
    Case("csv-missing-feature", _csv(GOOD_CSV, "data.features=[a,zz]"), ["data.features", "'zz'"]),
    Case(
        "csv-binary",
        _csv(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\x00garbage"),
        ["data.path", "data.csv"],
    ),
    Case("csv-one-row", _csv("a,b,y\n1,2,3\n"), ["data", "no training sample"]),
    Case("csv-is-a-folder", lambda d: ["data=csv", f"data.path={d}"], ["data.path"]),
    # -- the tracking store: reachable and writable ------------------------------------------
    Case(
        "tracking-dead-port",
        lambda d: [],
        ["tracking.uri", "127.0.0.1"],
        store=lambda d: f"http://127.0.0.1:{_free_port()}",
    ),
    Case(
        "tracking-folder-is-a-file",
        lambda d: [],
        ["tracking.uri", "not a folder"],
        store=lambda d: f"sqlite:///{_write(d, 'afile', 'x')}/mlflow.db",
    ),
    Case(
        "tracking-missing-folder",
        lambda d: [],
        ["tracking.uri", "does not exist"],
        store=lambda d: f"sqlite:///{d}/no/such/dir/mlflow.db",
    ),
    Case(
        "tracking-not-a-database",
        lambda d: [],
        ["tracking.uri", "not a database"],
        store=lambda d: f"sqlite:///{_write(d, 'mlflow.db', 'this is not sqlite' * 100)}",
    ),
    Case(
        "tracking-artifacts-unwritable",
        lambda d: [],
        ["tracking.uri", "mlartifacts"],
        store=lambda d: (
            _write(d, "mlartifacts", "a file where the folder goes"),
            f"sqlite:///{d}/mlflow.db",
        )[1],
    ),
    Case(
        "tracking-empty-experiment", lambda d: ["tracking.experiment=''"], ["tracking.experiment"]
    ),
]


@dataclass
class Result:
    case: Case
    folder: Path
    uri: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Every case run as a subprocess, ``PARALLEL`` at a time."""
    root = tmp_path_factory.mktemp("bad-inputs")
    env = {
        **os.environ,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_TRACKING_URI": "sqlite:////nonexistent-dir/do-not-use.db",
    }
    pending = []
    for case in CASES:
        d = root / case.id
        d.mkdir()
        uri = case.store(d) if case.store else f"sqlite:///{d / 'mlflow.db'}"
        args = [*case.args(d), *case.extra, f"tracking.uri={uri}", f"hydra.run.dir={d / 'out'}"]
        pending.append((case, d, uri, args))
    running: list[tuple[Case, Path, str, subprocess.Popen[str], float]] = []
    done: dict[str, Result] = {}
    while pending or running:
        while pending and len(running) < PARALLEL:
            case, d, uri, args = pending.pop(0)
            fds = [_create(d / "stdout.txt"), _create(d / "stderr.txt")]
            proc = subprocess.Popen(
                [sys.executable, "pipelines/run.py", *args],
                cwd=ROOT,
                env=env,
                text=True,
                stdout=fds[0],
                stderr=fds[1],
            )
            for fd in fds:  # the child holds its own copies
                os.close(fd)
            running.append((case, d, uri, proc, time.monotonic()))
        time.sleep(0.05)
        for item in list(running):
            case, d, uri, proc, t0 = item
            if proc.poll() is None and time.monotonic() - t0 < TIMEOUT:
                continue
            if proc.returncode is None:
                proc.kill()
                proc.wait()
            running.remove(item)
            done[case.id] = Result(
                case,
                d,
                uri,
                proc.returncode,
                (d / "stdout.txt").read_text(),
                (d / "stderr.txt").read_text(),
                time.monotonic() - t0,
            )
    return done


#: SPEC §8's list of bad values, each with the cases above that try it.
SPEC_BAD_INPUTS = {
    "unknown group option": ["unknown-group-option", "unknown-optimizer-group"],
    "negative width": ["negative-width"],
    "lr <= 0": ["lr-zero", "lr-negative"],
    "missing CSV file": ["csv-missing-file"],
    "non-numeric column": ["csv-non-numeric"],
    "NaNs in data": ["csv-nan", "csv-nan-literal"],
    "unreachable tracking server": ["tracking-dead-port"],
}


def test_every_bad_input_the_spec_names_is_refused(results: dict[str, Result]) -> None:
    """Each kind of bad value SPEC §8 lists ran (one result per case: no id is shared) and
    ended with exit status 2 and no traceback."""
    assert len(results) == len(CASES)
    for what, ids in SPEC_BAD_INPUTS.items():
        for case_id in ids:
            r = results[case_id]
            assert r.returncode == 2 and "Traceback" not in r.stderr, (what, case_id)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_any_work(case: Case, results: dict[str, Result]) -> None:
    r = results[case.id]
    output = r.stdout + r.stderr
    assert r.returncode == 2, f"exit {r.returncode} after {r.seconds:.1f}s\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    for name in case.names:
        assert name in output, f"{name!r} not in the message:\n{output[-3000:]}"
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HYDRA_FULL_ERROR" not in r.stderr, r.stderr[-3000:]
    # no training happened: no weights, no figures in the output folder
    assert not list((r.folder / "out").rglob("*.npz")), "training output was written"
    # no run in the store (the store may not even exist)
    if r.uri.startswith("sqlite:///"):
        db = Path(r.uri[len("sqlite:///") :])
        if db.is_file() and case.id != "tracking-not-a-database":
            client = MlflowClient(r.uri)
            ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
            runs = client.search_runs(ids, run_view_type=ViewType.ALL) if ids else []
            assert runs == [], [(x.info.run_id, x.info.status) for x in runs]

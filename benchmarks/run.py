"""`make bench`: mlplab's engine against a bare NumPy loop, scikit-learn and PyTorch; sweeps,
populations and long runs end to end.

    python benchmarks/run.py                 # everything (~25 min on 2 cores)
    python benchmarks/run.py --quick         # tiny sizes, one repetition (a smoke test)
    python benchmarks/run.py --cases tutorial,large --reps 3 --impls ours,bare,torch

Every measurement runs in a fresh process (this script with ``--worker``, or the pipeline
itself), and the measurements of a case are interleaved: repetition r runs every contestant
once, in an order rotated by r, so that a slow spell of a shared machine falls on all of them
alike. The table gives the median over repetitions and the spread (min–max). Results go to
``benchmarks/results/latest.json`` and ``latest.md`` (``--out`` to change the folder).

Cases (see ``impls.py`` for the contestants and README.md beside this file for the details):

* ``tutorial``: µs per epoch of the textbook 2-2-2 net (10 000 epochs), CPU time, one thread.
* ``large``: s per epoch (wall time, all cores) of 100 000 × 64 → 256 → 256 → 8 in float32 and
  float64, and GFLOP/s as a fraction of the machine's measured matrix-multiply peak.
* ``population``: µs per network-epoch of P = 1, 8, 64, 1 024 tutorial jobs (seeds 0..P-1)
  trained as one stacked population against a loop of P single networks, and the peak memory
  of 1 024 members in one group.
* ``tracking``: the tutorial run end to end (``pipelines/run.py``), tracking off versus on.
* ``sweep``: a 16-job multirun with the basic, joblib and population launchers, and the fixed
  cost of one job.
* ``sweep64``: ``make sweep SWEEP=base ARGS="seed=range(0,64)"`` against one ``make run`` (wall
  time, interleaved), every child's record checked, and where the sweep's time goes.
* ``long``: a 1 000 000-epoch run with tracking on versus off, its points in MLflow, and the
  seconds from SIGTERM to exit of a long run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
SCHEMA = "mlplab-bench/2"

TUTORIAL_IMPLS = ("ours", "bare", "textbook", "sklearn", "torch")
LARGE_IMPLS = ("ours", "bare", "products", "sklearn", "torch")
ALL_CASES = ("tutorial", "large", "population", "tracking", "sweep", "sweep64", "long")
QUICK_CASES = ("tutorial", "large", "population")
OPTIONAL = {"sklearn": "sklearn", "torch": "torch"}  # contestant -> module it needs
LABELS = {
    "ours": "mlplab.nn.fit",
    "bare": "bare NumPy loop (floor)",
    "products": "its matrix products alone (ceiling)",
    "textbook": "textbook NumPy (allocating)",
    "sklearn": "scikit-learn MLPRegressor",
    "torch": "PyTorch (CPU)",
}
SWEEP_LAUNCHERS = ("basic", "joblib", "population")
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
UNBUFFERED = {"PYTHONUNBUFFERED": "1"}  # output lines arrive when printed (timestamps)
BLAS_ENV = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)
#: What every finished run must hold (SPEC §5, issue 16): artifacts, beside the history and sha.
REQUIRED_ARTIFACTS = (
    "weights/final.npz",
    "plots/rmse.png",
    "plots/predictions.png",
    "plots/network.png",
    "history/train_rmse.npy",
)
MAX_POINTS = 10_000  # tracking.max_points' default
KILLED_EXIT = 130  # cli.EXIT_STATUS["KILLED"]


# -- sizes -----------------------------------------------------------------------------------
def sizes(quick: bool) -> dict[str, Any]:
    """Problem sizes: the real ones, or tiny ones for ``--quick``."""
    common = {"population_sizes": [1, 8, 64, 1024], "memory_members": 1024}
    if quick:
        return {
            **common,
            "tutorial_epochs": 300,
            "warmup_epochs": 20,
            "large_n": 2048,
            "large_epochs": 2,
            "peak_n": 384,
            "sweep_epochs": 20,
            "population_epochs": 10,
            "memory_epochs": 20,
            "sweep64_jobs": 4,
            "long_epochs": 3000,
            "sigterm_wait": 2.0,
            "reps": dict.fromkeys(ALL_CASES, 1),
        }
    return {
        **common,
        "tutorial_epochs": 10_000,
        "warmup_epochs": 300,
        "large_n": 100_000,
        "large_epochs": 2,
        "peak_n": 2048,
        "sweep_epochs": 3000,
        "population_epochs": 1000,
        "memory_epochs": 10_000,
        "sweep64_jobs": 64,
        "long_epochs": 1_000_000,
        "sigterm_wait": 10.0,
        "reps": {
            "tutorial": 5,
            "large": 3,
            "population": 3,
            "tracking": 3,
            "sweep": 2,
            "sweep64": 3,
            "long": 2,
        },
    }


# -- worker side -----------------------------------------------------------------------------
def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this (fresh) process."""
    sys.path.insert(0, str(HERE))
    import impls

    kind = spec["kind"]
    if kind == "tutorial":
        fn = impls.TUTORIAL[spec["impl"]]
        fn(spec["warmup_epochs"])  # imports, first calls, allocator: not timed
        return fn(spec["epochs"])
    if kind == "population":
        train = impls.POPULATION[spec["impl"]]
        if spec["warmup_epochs"]:
            train(min(spec["members"], 8), spec["warmup_epochs"])
        return train(spec["members"], spec["epochs"], spec.get("tol", 0.0))
    if kind == "large":
        return impls.LARGE[spec["impl"]](spec["n"], spec["dtype"], spec["epochs"])
    if kind == "peak":
        return impls.gemm_peak(spec["n"], spec["dtype"])
    if kind == "store":
        return store_report(spec["uri"])
    if kind == "blas":
        try:
            from threadpoolctl import threadpool_info
        except ImportError:  # comes with scikit-learn
            return {"threadpools": []}
        return {"threadpools": threadpool_info()}
    raise ValueError(f"unknown worker kind {kind!r}")


def store_report(uri: str) -> dict[str, Any]:
    """Every run of a store, read back through MLflow: what the record checks need."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=50_000)
    with tempfile.TemporaryDirectory() as tmp:
        return {"runs": [_run_facts(client, run, Path(tmp)) for run in runs]}


def _run_facts(client: Any, run: Any, tmp: Path) -> dict[str, Any]:
    """One run's status, epochs, train_rmse points, artifacts, sha and history length."""
    import numpy as np

    rid = run.info.run_id
    steps = [m.step for m in client.get_metric_history(rid, "train_rmse")]
    present = {
        a.path
        for folder in ("weights", "plots", "history")
        for a in client.list_artifacts(rid, folder)
    }
    history = None
    if "history/train_rmse.npy" in present:
        (tmp / rid).mkdir()
        path = client.download_artifacts(rid, "history/train_rmse.npy", str(tmp / rid))
        history = int(np.load(path).shape[0])
    epochs = run.data.metrics.get("epochs_run")
    return {
        "id": rid,
        "name": run.info.run_name,
        "status": run.info.status,
        "parent": run.data.tags.get("mlflow.parentRunId"),
        "epochs_run": int(epochs) if epochs is not None else None,
        "points": len(steps),
        "steps": [min(steps), max(steps)] if steps else [],
        "artifacts": sorted(present),
        "sha256": run.data.tags.get("weights_sha256"),
        "history_len": history,
    }


# -- orchestrator side -----------------------------------------------------------------------
def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        **(extra or {}),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _tail(text: str) -> str:
    return (text.strip().splitlines() or ["(no output)"])[-1][:300]


def run_worker(
    spec: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [PY, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {_tail(proc.stderr)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group of a command this script started (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_command(
    args: Sequence[str],
    timeout: float = 900,
    env: dict[str, str] | None = None,
    keep_lines: bool = False,
) -> dict[str, Any]:
    """Wall time of a whole command (start to exit), its CPU time and peak RSS (``wait4``:
    of it and the children it waited for, its helper and worker processes); with
    ``keep_lines``, every output line (stdout and stderr) with the second it arrived, and
    the start as a Unix time."""
    started, t0 = time.time(), time.perf_counter()
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env=_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, _kill_group, (proc,))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # Ctrl-C: the command's whole session goes too
        _kill_group(proc)
        raise
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)  # a grandchild may hold the pipe: don't wait for it
    out: dict[str, Any] = {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }
    if wall >= timeout:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        out["error"] = f"exit {proc.returncode}: {_tail(chr(10).join(t for _, t in lines))}"
    if keep_lines:
        out.update(lines=lines, started_at=started)
    return out


def interrupt_after(
    args: Sequence[str], db: Path, run_name: str, wait: float, timeout: float = 300
) -> dict[str, Any]:
    """Start a command, wait until its run ``run_name`` is in the SQLite store ``db`` and then
    ``wait`` seconds, send it SIGTERM: the seconds until it exits, and its exit status."""
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while not _run_in_store(db, run_name):
                if proc.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    why = f"exit {proc.returncode}" if proc.returncode is not None else "no run"
                    return {
                        "error": f"{why} before its run appeared: {_tail(output.read().decode())}"
                    }
                time.sleep(0.2)
            time.sleep(wait)
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:  # a miss, timed as such
                return {"error": "still running 120 s after SIGTERM", "seconds": 120.0}
            return {"seconds": time.perf_counter() - t0, "exit_code": code}
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()


def _run_in_store(db: Path, run_name: str) -> bool:
    """Whether the MLflow SQLite store ``db`` holds a run named ``run_name`` (read only)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            return (
                con.execute("SELECT 1 FROM runs WHERE name = ?", (run_name,)).fetchone() is not None
            )
    except sqlite3.Error:
        return False


def _describe(result: dict[str, Any]) -> str:
    """A one-line summary of a measurement: its error, or its numbers."""
    if "error" in result:
        return str(result["error"])
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}=[{', '.join(f'{x:.4g}' for x in v)}]"
        for k, v in result.items()
        if isinstance(v, float) or (isinstance(v, list) and v and isinstance(v[0], float))
    )


def round_robin(
    tasks: dict[str, Callable[[], dict[str, Any]]], reps: int, log: Callable[[str], None]
) -> dict[str, list[dict[str, Any]]]:
    """Run every task ``reps`` times, repetition r in an order rotated by r."""
    names = list(tasks)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            result = tasks[name]()
            out[name].append(result)
            log(f"  rep {rep + 1}/{reps} {name}: {_describe(result)}")
    return out


def stats(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and spread ((max − min)/median) of a list of samples."""
    if not samples:
        return {"n": 0}
    med = statistics.median(samples)
    return {
        "n": len(samples),
        "median": med,
        "min": min(samples),
        "max": max(samples),
        "spread": (max(samples) - min(samples)) / med if med else 0.0,
        "samples": list(samples),
    }


def _summarise(
    runs: list[dict[str, Any]], value: Callable[[dict[str, Any]], float]
) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    errors = [r["error"] for r in runs if "error" in r]
    entry = stats([value(r) for r in good])
    if errors:
        entry["errors"] = errors
    if good and "final_rmse" in good[0]:
        entry["final_rmse"] = good[-1]["final_rmse"]
    return entry


def _wall(r: dict[str, Any]) -> float:
    return float(r["wall"])


def _cpu(r: dict[str, Any]) -> float:
    return float(r["cpu"])


def _median(entry: dict[str, Any] | None) -> float | None:
    return entry.get("median") if entry and entry.get("n") else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def available(impls: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The contestants whose package is installed, and why the others are skipped."""
    keep, skipped = [], {}
    for impl in impls:
        module = OPTIONAL.get(impl)
        if module and importlib.util.find_spec(module) is None:
            skipped[impl] = f"{module} is not installed (pip install -e '.[bench]')"
        else:
            keep.append(impl)
    return keep, skipped


def _pipeline(*overrides: str) -> list[str]:
    return [PY, str(ROOT / "pipelines" / "run.py"), *overrides]


class Scratch:
    """A temporary folder with a SQLite store, where the pipeline's commands run and write."""

    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"mlplab-bench-{name}-"))
        self.db = self.dir / "mlflow.db"
        self.uri = f"sqlite:///{self.db}"
        self.tracked = f"tracking.uri={self.uri}"
        self._numbers = itertools.count()

    def folder(self, kind: str) -> Path:
        """A new numbered folder name under ``kind`` (``outputs``, ``multirun``)."""
        return self.dir / kind / str(next(self._numbers))

    def run(self, *overrides: str, **kwargs: Any) -> dict[str, Any]:
        """``pipelines/run.py`` with ``overrides``, in a folder of its own: its wall time."""
        return run_command(
            _pipeline(*overrides, f"hydra.run.dir={self.folder('outputs')}"), **kwargs
        )

    def multirun(self, *overrides: str, **kwargs: Any) -> dict[str, Any]:
        """``pipelines/run.py --multirun`` with ``overrides``: its wall time and folder."""
        folder = self.folder("multirun")
        res = run_command(
            _pipeline("--multirun", *overrides, f"hydra.sweep.dir={folder}"), **kwargs
        )
        return {**res, "folder": str(folder)}

    def create_store(self) -> dict[str, Any]:
        """An untimed 1-epoch tracked run: the store's schema and the experiment."""
        return self.run("train.epochs=1", "plot.enabled=false", "trace.enabled=false", self.tracked)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# -- cases: the engine -----------------------------------------------------------------------
def case_tutorial(
    cfg: dict[str, Any], impls: Sequence[str], log: Callable[[str], None]
) -> dict[str, Any]:
    keep, skipped = available([i for i in TUTORIAL_IMPLS if i in impls])
    epochs = cfg["tutorial_epochs"]
    tasks: dict[str, Callable[[], dict[str, Any]]] = {
        impl: partial(
            run_worker,
            {
                "kind": "tutorial",
                "impl": impl,
                "epochs": epochs,
                "warmup_epochs": cfg["warmup_epochs"],
            },
            ONE_THREAD,
        )
        for impl in keep
    }
    runs = round_robin(tasks, cfg["reps"]["tutorial"], log)
    results = {
        impl: _summarise(runs[impl], lambda r: r["cpu"] / r["epochs"] * 1e6) for impl in keep
    }
    for impl in keep:
        results[impl]["wall_us_per_epoch"] = _summarise(
            runs[impl], lambda r: r["wall"] / r["epochs"] * 1e6
        ).get("median")
    return {
        "unit": "us/epoch (CPU time, 1 thread)",
        "epochs": epochs,
        "results": results,
        "skipped": skipped,
    }


def case_large(
    cfg: dict[str, Any], impls: Sequence[str], log: Callable[[str], None]
) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import impls as contestants

    keep, skipped = available([i for i in LARGE_IMPLS if i in impls])
    n, epochs = cfg["large_n"], cfg["large_epochs"]
    tasks: dict[str, Callable[[], dict[str, Any]]] = {}
    for dtype in ("float32", "float64"):
        tasks[f"peak/{dtype}"] = partial(
            run_worker, {"kind": "peak", "n": cfg["peak_n"], "dtype": dtype}
        )
        for impl in keep:
            tasks[f"{impl}/{dtype}"] = partial(
                run_worker,
                {"kind": "large", "impl": impl, "n": n, "dtype": dtype, "epochs": epochs},
            )
    runs = round_robin(tasks, cfg["reps"]["large"], log)
    flops = 6.0 * contestants.n_weights() * n
    out: dict[str, Any] = {
        "unit": "s/epoch (wall time, all cores)",
        "n": n,
        "epochs_per_rep": epochs,
        "flops_per_epoch": flops,
        "skipped": skipped,
        "peak_gflops": {},
        "dtypes": {},
    }
    for dtype in ("float32", "float64"):
        peaks = [r["gflops"] for r in runs[f"peak/{dtype}"] if "error" not in r]
        peak = max(peaks) if peaks else math.nan
        out["peak_gflops"][dtype] = {"best": peak, **stats(peaks)}
        results = {}
        for impl in keep:
            # the faster epoch of each repetition (same work; a neighbour's burst hits one)
            entry = _summarise(runs[f"{impl}/{dtype}"], lambda r: min(r["epoch_seconds"]))
            if entry.get("n"):
                entry["gflops"] = flops / entry["median"] / 1e9
                entry["peak_fraction"] = entry["gflops"] / peak
            results[impl] = entry
        out["dtypes"][dtype] = results
    return out


def case_population(cfg: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Stacked populations of P tutorial jobs against loops of P single networks."""
    tasks: dict[str, Callable[[], dict[str, Any]]] = {}
    for members in cfg["population_sizes"]:
        for impl in ("stacked", "loop"):
            spec = {
                "kind": "population",
                "impl": impl,
                "members": members,
                "epochs": cfg["population_epochs"],
                "warmup_epochs": cfg["warmup_epochs"],
            }
            tasks[f"{impl}/{members}"] = partial(run_worker, spec, ONE_THREAD)
    runs = round_robin(tasks, cfg["reps"]["population"], log)
    log(f"  memory: {cfg['memory_members']} members, the tutorial's stopping rule ...")
    memory = run_worker(
        {
            "kind": "population",
            "impl": "stacked",
            "members": cfg["memory_members"],
            "epochs": cfg["memory_epochs"],
            "tol": 1e-6,
            "warmup_epochs": 0,
        }
    )
    return summarise_population(runs, memory, cfg)


def _per_network_epoch(r: dict[str, Any]) -> float:
    return float(r["cpu"]) / r["network_epochs"] * 1e6


def summarise_population(
    runs: dict[str, list[dict[str, Any]]], memory: dict[str, Any], cfg: dict[str, Any]
) -> dict[str, Any]:
    """Per P: µs per network-epoch stacked and looped, their ratio, whether the final weights
    agree; and the memory run's numbers."""
    by_size: dict[str, Any] = {}
    for members in cfg["population_sizes"]:
        stacked, loop = runs.get(f"stacked/{members}", []), runs.get(f"loop/{members}", [])
        entry: dict[str, Any] = {
            "stacked": _summarise(stacked, _per_network_epoch),
            "loop": _summarise(loop, _per_network_epoch),
        }
        entry["ratio"] = _ratio(_median(entry["loop"]), _median(entry["stacked"]))
        sha = [{r["weights_sha256"] for r in rs if "error" not in r} for rs in (stacked, loop)]
        entry["identical"] = len(sha[0] | sha[1]) == 1 if sha[0] and sha[1] else None
        by_size[str(members)] = entry
    mem = {k: memory.get(k) for k in ("peak_rss_mib", "rss_before_mib", "network_epochs", "wall")}
    mem.update(members=cfg["memory_members"], epochs=cfg["memory_epochs"], tol=1e-6)
    if "error" in memory:
        mem["error"] = memory["error"]
    return {
        "unit": "us per network-epoch (CPU time, 1 thread)",
        "epochs": cfg["population_epochs"],
        "sizes": by_size,
        "memory": mem,
    }


# -- cases: whole commands -------------------------------------------------------------------
def case_tracking(cfg: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    epochs = cfg["tutorial_epochs"]
    lean = ("plot.enabled=false", "trace.enabled=false")
    inline = ("tracking.background=false",)
    with Scratch("tracking") as s:

        def job(tracking: str, extra: Sequence[str]) -> Callable[[], dict[str, Any]]:
            return partial(s.run, "train.tol=0", f"train.epochs={epochs}", tracking, *extra)

        on, off = s.tracked, "tracking.enabled=false"
        first = job(on, lean)()  # creates the store's schema and the experiment: not timed
        if "error" in first:
            return {"skipped": f"the tracked run failed: {first['error']}"}
        tasks = {
            f"{variant}/{state}": job(on if state == "on" else off, extra)
            for variant, extra in (("defaults", ()), ("inline", inline), ("lean", lean))
            for state in ("off", "on")
        }
        runs = round_robin(tasks, cfg["reps"]["tracking"], log)
    results = {name: _summarise(r, _wall) for name, r in runs.items()}
    overhead = {}
    for variant in ("defaults", "inline", "lean"):
        a, b = results[f"{variant}/off"], results[f"{variant}/on"]
        if a.get("n") and b.get("n"):
            overhead[variant] = b["median"] / a["median"] - 1.0
    return {
        "unit": "s/run (wall time, end to end)",
        "epochs": epochs,
        "variants": {
            "defaults": "as make run (MLflow in a helper process)",
            "inline": "tracking.background=false (MLflow in the job's process)",
            "lean": "plot.enabled=false trace.enabled=false (nothing to overlap with)",
        },
        "results": results,
        "overhead": overhead,
    }


def case_sweep(cfg: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    if importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None:
        return {"skipped": "the joblib launcher (hydra-joblib-launcher) is not installed"}
    grid = ("model.hidden=[2],[3],[4],[5]", "optimizer.lr=0.1,0.2,0.3,0.5")
    quiet = ("plot.enabled=false", "trace.enabled=false")
    with Scratch("sweep") as s:
        common = (f"train.epochs={cfg['sweep_epochs']}", *quiet, s.tracked)

        def snippet(code: str) -> Callable[[], dict[str, Any]]:
            return partial(run_command, [PY, "-c", code])

        first = s.create_store()
        if "error" in first:
            return {"skipped": f"a tracked job failed: {first['error']}"}
        tasks: dict[str, Callable[[], dict[str, Any]]] = {
            **{
                f"sweep16/{launcher}": partial(
                    s.multirun, *grid, *common, f"hydra/launcher={launcher}"
                )
                for launcher in SWEEP_LAUNCHERS
            },
            "job/interpreter": snippet("pass"),
            "job/imports": snippet("import hydra, numpy, omegaconf, mlplab.cli, mlplab.pipeline"),
            "job/import_mlflow": snippet("import mlflow"),
            "job/untracked": partial(s.run, "train.epochs=1", *quiet, "tracking.enabled=false"),
            "job/tracked": partial(s.run, "train.epochs=1", *quiet, s.tracked),
        }
        runs = round_robin(tasks, cfg["reps"]["sweep"], log)
    results = {name: _summarise(r, _wall) for name, r in runs.items()}
    out: dict[str, Any] = {
        "unit": "s (wall time, end to end)",
        "jobs": 16,
        "epochs": cfg["sweep_epochs"],
        "results": results,
    }
    jps = {k: 16 / m for k in SWEEP_LAUNCHERS if (m := _median(results[f"sweep16/{k}"]))}
    if jps:
        out["jobs_per_second"] = jps
    return out


def case_sweep64(cfg: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """A seed sweep of tutorial jobs (population launcher) against one run, interleaved."""
    jobs = cfg["sweep64_jobs"]
    with Scratch("sweep64") as s:
        first = s.create_store()
        if "error" in first:
            return {"skipped": f"the tracked run failed: {first['error']}"}

        def sweep() -> dict[str, Any]:
            res = s.multirun(
                "+sweep=base", f"seed=range(0,{jobs})", s.tracked, env=UNBUFFERED, keep_lines=True
            )
            lines, started = res.pop("lines"), res.pop("started_at")
            res["phases"] = sweep_phases(lines, Path(res.pop("folder")), started, res["wall"])
            return res

        tasks: dict[str, Callable[[], dict[str, Any]]] = {
            "sweep": sweep,
            "run": partial(s.run, s.tracked, env=UNBUFFERED),
        }
        runs = round_robin(tasks, cfg["reps"]["sweep64"], log)
        log("  reading the store back ...")
        store = run_worker({"kind": "store", "uri": s.uri})
    return summarise_sweep64(runs, store, jobs)


#: When a population sweep's phases end: the first output line matching each pattern.
SWEEP_LINES = {
    "parent": r"parent run \w+ in experiment",
    "composed": r"Preparing \d+ jobs",
    "prepared": r"training \d+ network\(s\) as one population",
    "reported": r"jobs finished -> parent run",
}
#: What each phase (ending at that mark) covers, in order.
SWEEP_PHASES = {
    "parent": "start-up, imports, composition, MLflow, the store, the parent run",
    "composed": "Hydra composes every job's config (the sweeper's batch check)",
    "prepared": "the jobs prepared: job folders, configs, data, initial weights",
    "trained": "runs opened, inputs written (configs, trace), the population trained",
    "recorded": "every member recorded: evaluation, CSVs, the three figures, artifacts",
    "reported": "runs closed, the sweep report, the best model registered",
    "exit": "the process exits (the helper's last writes)",
}


def sweep_phases(
    lines: Sequence[tuple[float, str]], folder: Path, started_at: float, wall: float
) -> dict[str, float]:
    """Seconds spent in each phase of :data:`SWEEP_PHASES`, measured from the sweep's output
    lines and the times its jobs wrote their files (the first history, the last figure);
    a phase whose mark is missing is merged into the next one."""
    marks: dict[str, float] = {}
    for key, pattern in SWEEP_LINES.items():
        hit = next((t for t, text in lines if re.search(pattern, text)), None)
        if hit is not None:
            marks[key] = hit
    for key, pattern, pick in (
        ("trained", "*/history/train_rmse.npy", min),
        ("recorded", "*/plots/network.png", max),
    ):
        times = [p.stat().st_mtime - started_at for p in folder.glob(pattern)]
        if times:
            marks[key] = pick(times)
    marks["exit"] = wall
    phases, last = {}, 0.0
    for key in SWEEP_PHASES:
        if key in marks and marks[key] >= last:
            phases[key], last = marks[key] - last, marks[key]
    return phases


def run_problems(
    run: dict[str, Any],
    status: str = "FINISHED",
    required: Sequence[str] = REQUIRED_ARTIFACTS,
    max_points: int = MAX_POINTS,
) -> list[str]:
    """What a run's record lacks (empty when complete): its status, a train_rmse history of
    one point per epoch (at most ``max_points``, the first and last epoch among them), the
    whole history as an artifact, the ``required`` artifacts, the weights' sha."""
    n = run.get("epochs_run")
    problems = [] if run.get("status") == status else [f"status {run.get('status')}"]
    if not n:
        return [*problems, "no epochs_run"]
    points = run.get("points", 0)
    if (points != n) if n <= max_points else (points > max_points):
        problems.append(f"{points} train_rmse points for {n} epochs")
    if run.get("steps") != [1, n]:
        problems.append(f"train_rmse steps {run.get('steps')}, not 1..{n}")
    if run.get("history_len") is not None and run["history_len"] != n:
        problems.append(f"history artifact of {run['history_len']} epochs for {n}")
    missing = sorted(set(required) - set(run.get("artifacts", ())))
    if missing:
        problems.append("missing " + ", ".join(missing))
    if not re.fullmatch(r"[0-9a-f]{64}", str(run.get("sha256") or "")):
        problems.append("no weights_sha256")
    return problems


def sweep_children(runs: Sequence[dict[str, Any]], jobs: int, sweeps: int) -> dict[str, Any]:
    """The children of every sweep parent in the store, and how many have a complete record
    (of the ``jobs`` × ``sweeps`` expected)."""
    children: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run.get("parent"):
            children.setdefault(run["parent"], []).append(run)
    problems = sorted({p for kids in children.values() for k in kids for p in run_problems(k)})
    complete = sum(not run_problems(k) for kids in children.values() for k in kids)
    expected = jobs * sweeps
    return {
        "parents": len(children),
        "children": [len(kids) for kids in children.values()],
        "complete": complete,
        "expected": expected,
        "fraction": complete / expected if expected else None,
        "problems": problems[:10],
    }


def summarise_sweep64(
    runs: dict[str, list[dict[str, Any]]],
    store: dict[str, Any],
    jobs: int,
    cores: int | None = os.cpu_count(),
) -> dict[str, Any]:
    """Wall times, their ratio (of medians, and rep by rep), the sweep's phases (medians),
    its peak memory, the children's records, and CPU times: the sweep's CPU seconds over
    ``cores`` is the least wall time they allow on this machine (``cpu_floor``)."""
    results = {name: _summarise(r, _wall) for name, r in runs.items()}
    cpu = {name: _summarise([x for x in r if "cpu" in x], _cpu) for name, r in runs.items()}
    sweep_cpu = _median(cpu.get("sweep"))
    pairs = zip(runs.get("sweep", []), runs.get("run", []), strict=False)
    good = [s for s in runs.get("sweep", []) if "error" not in s]
    phases = {
        key: statistics.median(s["phases"][key] for s in good if key in s["phases"])
        for key in SWEEP_PHASES
        if any(key in s["phases"] for s in good)
    }
    out: dict[str, Any] = {
        "unit": "s (wall time, end to end)",
        "jobs": jobs,
        "results": results,
        "ratio": _ratio(_median(results.get("sweep")), _median(results.get("run"))),
        "paired_ratios": [s["wall"] / r["wall"] for s, r in pairs if "error" not in s | r],
        "phases": phases,
        "peak_rss_mib": _summarise(good, lambda r: r["peak_rss_mib"]),
        "cpu_seconds": cpu,
        "cores": cores,
        "cpu_floor": sweep_cpu / cores if sweep_cpu is not None and cores else None,
    }
    if "error" in store:
        out["children"] = {"error": store["error"], "fraction": None}
    else:
        out["children"] = sweep_children(store["runs"], jobs, len(good))
    return out


def case_long(cfg: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """A long run with tracking on and off; a longer one interrupted by SIGTERM."""
    epochs = cfg["long_epochs"]
    with Scratch("long") as s:
        first = s.create_store()
        if "error" in first:
            return {"skipped": f"the tracked run failed: {first['error']}"}
        names = itertools.count()

        def long(*tracking: str) -> Callable[[], dict[str, Any]]:
            return partial(s.run, "train.tol=0", f"train.epochs={epochs}", *tracking)

        def interrupt() -> dict[str, Any]:
            name = f"sigterm-{next(names)}"
            args = _pipeline(
                "train.epochs=100000000",
                "train.tol=0",
                s.tracked,
                f"tracking.run_name={name}",
                f"hydra.run.dir={s.folder('outputs')}",
            )
            return {**interrupt_after(args, s.db, name, cfg["sigterm_wait"]), "name": name}

        tasks = {
            "off": long("tracking.enabled=false"),
            "on": long(s.tracked, "tracking.run_name=long"),
            "sigterm": interrupt,
        }
        runs = round_robin(tasks, cfg["reps"]["long"], log)
        log("  reading the store back ...")
        store = run_worker({"kind": "store", "uri": s.uri})
    return {**summarise_long(runs, store, epochs), "sigterm_wait": cfg["sigterm_wait"]}


def summarise_long(
    runs: dict[str, list[dict[str, Any]]], store: dict[str, Any], epochs: int
) -> dict[str, Any]:
    """Wall times on and off, the tracked runs' points and records, the interrupts."""
    results = {name: _summarise(runs.get(name, []), _wall) for name in ("off", "on")}
    stored = store.get("runs", [])
    tracked = [r for r in stored if r.get("name") == "long"]
    killed = {r.get("name"): r for r in stored if str(r.get("name")).startswith("sigterm-")}
    interrupts: list[dict[str, Any]] = []
    for res in runs.get("sigterm", []):
        rec = killed.get(res.get("name"), {})
        problems = run_problems(rec, "KILLED", ("weights/final.npz",)) if rec else ["no run"]
        entry: dict[str, Any] = {k: res[k] for k in ("seconds", "exit_code", "error") if k in res}
        entry.update(epochs_run=rec.get("epochs_run"), points=rec.get("points"))
        entry["problems"] = problems + ([] if res.get("exit_code") == KILLED_EXIT else ["exit"])
        interrupts.append(entry)
    return {
        "unit": "s (wall time, end to end)",
        "epochs": epochs,
        "results": results,
        "ratio": _ratio(_median(results["on"]), _median(results["off"])),
        "tracked": [
            {k: r.get(k) for k in ("points", "steps", "epochs_run", "history_len")}
            | {"problems": run_problems(r)}
            for r in tracked
        ],
        "store_error": store.get("error"),
        "sigterm": interrupts,
        "sigterm_seconds": _summarise(runs.get("sigterm", []), lambda i: i["seconds"]),
    }


# -- machine ---------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    versions: dict[str, str | None] = {}
    for pkg in ("numpy", "scipy", "scikit-learn", "torch", "mlflow", "hydra-core", "mlplab"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    blas = worker({"kind": "blas"})  # numpy's BLAS as this interpreter loads it
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "blas": [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for p in blas.get("threadpools", [])
        ],
        "env": {k: os.environ.get(k) for k in BLAS_ENV},
        "git": _git_state(),
    }


def _git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return (git("rev-parse", "--short", "HEAD") or "unknown") + (
        "+dirty" if git("status", "--porcelain") else ""
    )


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- targets ---------------------------------------------------------------------------------
#: Every target (issues 6, 12, 13, 16): its limit, the comparison that passes, how to show it:
#: ``×``, ``%`` (a fraction), ``s``, ``MiB``, ``bool`` (1 yes, 0 no), or a plain number.
TARGETS: dict[str, tuple[float, str, str]] = {
    "tutorial: ours / bare loop": (1.3, "<=", "×"),
    "tutorial: MLPRegressor / ours": (3.0, ">=", "×"),
    "tutorial: PyTorch / ours": (10.0, ">=", "×"),
    "large float32: PyTorch / ours (s/epoch)": (1.0, ">=", "×"),
    "large float32: MLPRegressor / ours (s/epoch)": (1.0, ">=", "×"),
    "large float64: PyTorch / ours (s/epoch)": (1.0, ">=", "×"),
    "large float64: MLPRegressor / ours (s/epoch)": (1.0, ">=", "×"),
    "large float32: ours / GEMM peak": (0.65, ">=", "%"),
    "population: loop / stacked per network-epoch at P = 64": (10.0, ">=", "×"),
    "population: 1 024 members in one group, peak RSS": (1024.0, "<=", "MiB"),
    "population: stacked weights = single networks' (every P)": (1.0, ">=", "bool"),
    "tracking overhead (the tutorial run, as make run)": (0.10, "<=", "%"),
    "sweep64: the seed sweep / one run (wall time)": (2.0, "<=", "×"),
    "sweep64: children with a complete record": (1.0, ">=", "%"),
    "long: tracking on / off (wall time)": (1.2, "<=", "×"),
    "long: train_rmse points in MLflow (most of a run)": (float(MAX_POINTS), "<=", ""),
    "long: first and last epoch logged, whole history kept": (1.0, ">=", "bool"),
    "long: SIGTERM to exit (slowest)": (5.0, "<=", "s"),
    "long: interrupted runs KILLED with history and weights": (1.0, ">=", "bool"),
}
Values = dict[str, float | None]


def target(name: str, value: float | None) -> dict[str, Any]:
    """The target ``name``: PASS or MISS as ``value compare limit``, SKIP when not measured."""
    limit, compare, unit = TARGETS[name]
    entry = {"target": name, "limit": limit, "compare": compare, "unit": unit}
    if value is None or math.isnan(value):
        return {**entry, "status": "SKIP", "value": None, "note": "not measured"}
    ok = value <= limit if compare == "<=" else value >= limit
    return {**entry, "status": "PASS" if ok else "MISS", "value": float(value)}


def _yes(flags: Sequence[bool | None]) -> float | None:
    """1.0 if every flag is true, 0.0 if one is false, None if there are none or one is None."""
    if not flags or any(f is None for f in flags):
        return None
    return float(all(flags))


def _engine_values(cases: dict[str, Any]) -> Values:
    tut = cases.get("tutorial", {}).get("results", {})
    ours = _median(tut.get("ours"))
    out: Values = {
        "tutorial: ours / bare loop": _ratio(ours, _median(tut.get("bare"))),
        "tutorial: MLPRegressor / ours": _ratio(_median(tut.get("sklearn")), ours),
        "tutorial: PyTorch / ours": _ratio(_median(tut.get("torch")), ours),
    }
    large = cases.get("large", {}).get("dtypes", {})
    for dtype in ("float32", "float64"):
        r = large.get(dtype, {})
        for impl, label in (("torch", "PyTorch"), ("sklearn", "MLPRegressor")):
            value = _ratio(_median(r.get(impl)), _median(r.get("ours")))
            out[f"large {dtype}: {label} / ours (s/epoch)"] = value
    f32 = large.get("float32", {}).get("ours", {})
    out["large float32: ours / GEMM peak"] = f32.get("peak_fraction")
    pop = cases.get("population", {})
    out["population: loop / stacked per network-epoch at P = 64"] = (
        pop.get("sizes", {}).get("64", {}).get("ratio")
    )
    out["population: 1 024 members in one group, peak RSS"] = pop.get("memory", {}).get(
        "peak_rss_mib"
    )
    out["population: stacked weights = single networks' (every P)"] = _yes(
        [e.get("identical") for e in pop.get("sizes", {}).values()]
    )
    return out


def _command_values(cases: dict[str, Any]) -> Values:
    s64, long = cases.get("sweep64", {}), cases.get("long", {})
    tracked, kills = long.get("tracked") or [], long.get("sigterm") or []
    seconds = [k["seconds"] for k in kills if "seconds" in k]
    return {
        "tracking overhead (the tutorial run, as make run)": cases.get("tracking", {})
        .get("overhead", {})
        .get("defaults"),
        "sweep64: the seed sweep / one run (wall time)": s64.get("ratio"),
        "sweep64: children with a complete record": s64.get("children", {}).get("fraction"),
        "long: tracking on / off (wall time)": long.get("ratio"),
        "long: train_rmse points in MLflow (most of a run)": max(
            (t["points"] for t in tracked), default=None
        ),
        "long: first and last epoch logged, whole history kept": _yes(
            [not t["problems"] for t in tracked]
        ),
        "long: SIGTERM to exit (slowest)": max(seconds, default=None),
        "long: interrupted runs KILLED with history and weights": _yes(
            [not k["problems"] for k in kills]
        ),
    }


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of :data:`TARGETS`, whatever was run, with the value it was judged on."""
    cases = res.get("cases", {})
    values = {**_engine_values(cases), **_command_values(cases)}
    return [target(name, values.get(name)) for name in TARGETS]


# -- the table -------------------------------------------------------------------------------
def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _cell(entry: dict[str, Any] | None, scale: float = 1.0) -> str:
    if not entry:
        return "–"
    if not entry.get("n"):
        return "error: " + "; ".join(entry.get("errors", ["no result"]))[:80]
    med, lo, hi = entry["median"] * scale, entry["min"] * scale, entry["max"] * scale
    return f"{_fmt(med)} ({_fmt(lo)}–{_fmt(hi)})"


def _when(c: dict[str, Any]) -> str:
    if "started" not in c:
        return ""
    return (
        f"Run {c['started'][:16].replace('T', ' ')} UTC; load average (1, 5, 15 min) "
        f"{c.get('load_before')} before, {c.get('load_after')} after."
    )


def _heading(title: str, c: dict[str, Any]) -> list[str]:
    """A case's heading, when it ran, and why it was skipped (if it was)."""
    lines = [f"### {title}", "", _when(c), ""]
    if "skipped" in c and isinstance(c["skipped"], str):
        lines += [f"Skipped: {c['skipped']}", ""]
    return lines


def _md_header(res: dict[str, Any]) -> list[str]:
    m = res["machine"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']}" for b in m["blas"])
    env = ", ".join(f"{k}={v}" for k, v in m["env"].items() if v)
    reps = ", ".join(f"{k} {v}" for k, v in res["settings"]["reps"].items() if k in res["cases"])
    return [
        f"## mlplab benchmarks ({res['created'][:16].replace('T', ' ')} UTC)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"NumPy {m['versions'].get('numpy')} ({blas}), scikit-learn "
        f"{m['versions'].get('scikit-learn')}, PyTorch {m['versions'].get('torch')}; git "
        f"{m['git']}. " + (f"BLAS environment: {env}. " if env else "") + f"Median over "
        f"repetitions ({reps}) with the range (min–max); every measurement in a fresh process, "
        "contestants interleaved.",
        "",
    ]


def _md_tutorial(c: dict[str, Any]) -> list[str]:
    lines = _heading(
        f"Tutorial: 2-2-2 sigmoid, 50 samples, full batch, {c['epochs']:,} epochs, float64", c
    )
    lines += [
        "| implementation | µs/epoch (CPU, 1 thread) | × ours | final RMSE |",
        "|---|---|---|---|",
    ]
    ours = _median(c["results"].get("ours"))
    for impl, entry in c["results"].items():
        rel = _fmt(_ratio(_median(entry), ours))
        lines.append(
            f"| {LABELS[impl]} | {_cell(entry)} | {rel} | {_fmt(entry.get('final_rmse'), 6)} |"
        )
    for impl, why in c.get("skipped", {}).items():
        lines.append(f"| {LABELS[impl]} | skipped: {why} | – | – |")
    return [
        *lines,
        "",
        "MLPRegressor's output layer is the identity and its loss the mean squared error (it has "
        "no sigmoid output, no summed loss): the same cost per epoch, a slightly different net.",
        "",
    ]


def _md_large(c: dict[str, Any]) -> list[str]:
    peaks = ", ".join(f"{d} {_fmt(p.get('best'))} GFLOP/s" for d, p in c["peak_gflops"].items())
    lines = _heading(f"Large: {c['n']:,} × 64 → 256 → 256 → 8, relu, mean MSE, SGD batch 256", c)
    lines += [
        f"FLOPs per epoch 6 × weights × samples = {c['flops_per_epoch'] / 1e9:.1f} G. Peak: the "
        f"best n×n np.matmul of the run, all cores: {peaks}. Times: the faster of "
        f"{c['epochs_per_rep']} epochs in each repetition.",
        "",
        "| implementation | dtype | s/epoch | GFLOP/s | % of peak | × ours |",
        "|---|---|---|---|---|---|",
    ]
    for dtype, results in c["dtypes"].items():
        ours = _median(results.get("ours"))
        for impl, entry in results.items():
            frac = entry.get("peak_fraction")
            lines.append(
                f"| {LABELS[impl]} | {dtype} | {_cell(entry)} | {_fmt(entry.get('gflops'))}"
                f" | {_fmt(frac * 100 if frac is not None else None)} | "
                f"{_fmt(_ratio(_median(entry), ours))} |"
            )
    for impl, why in c.get("skipped", {}).items():
        lines.append(f"| {LABELS[impl]} | – | skipped: {why} | | | |")
    return [*lines, ""]


def _md_population(c: dict[str, Any]) -> list[str]:
    lines = _heading(
        f"Populations: P tutorial jobs (seeds 0..P-1, {c['epochs']:,} epochs each, tol 0) "
        "stacked, against a loop of P single networks",
        c,
    )
    lines += [
        "| P | stacked: µs/network-epoch | loop of single networks | loop / stacked "
        "| same final weights |",
        "|---|---|---|---|---|",
    ]
    for size, e in c["sizes"].items():
        same = {True: "yes", False: "**no**", None: "–"}[e.get("identical")]
        lines.append(
            f"| {int(size):,} | {_cell(e['stacked'])} | {_cell(e['loop'])} | "
            f"{_fmt(e.get('ratio'))} | {same} |"
        )
    m = c["memory"]
    lines += [
        "",
        f"Memory: {m['members']:,} tutorial members in one group (the tutorial's own stopping "
        f"rule, tol {m['tol']:g}, at most {m['epochs']:,} epochs): "
        + (
            f"peak RSS {_fmt(m['peak_rss_mib'])} MiB ({_fmt(m['rss_before_mib'])} MiB before "
            f"training), {_fmt(m['network_epochs'])} network-epochs in {_fmt(m['wall'])} s."
            if "error" not in m
            else f"error: {m['error']}"
        ),
        "",
    ]
    return lines


def _md_tracking(c: dict[str, Any]) -> list[str]:
    lines = _heading(
        f"Tracking overhead: the tutorial run end to end ({c.get('epochs', 0):,} epochs, "
        "pipelines/run.py)",
        c,
    )
    if "skipped" in c:
        return lines
    lines += ["| variant | tracking off (s) | tracking on (s) | overhead |", "|---|---|---|---|"]
    for variant, desc in c["variants"].items():
        over = c["overhead"].get(variant)
        lines.append(
            f"| {desc} | {_cell(c['results'].get(f'{variant}/off'))} | "
            f"{_cell(c['results'].get(f'{variant}/on'))} | "
            f"{_fmt(over * 100 if over is not None else None)} % |"
        )
    return [*lines, ""]


SWEEP_ROWS = {
    "sweep16/basic": "16 jobs, hydra/launcher=basic (one process, in turn)",
    "sweep16/joblib": "16 jobs, hydra/launcher=joblib (a worker per core)",
    "sweep16/population": "16 jobs, hydra/launcher=population (4 groups of 4, one process)",
    "job/interpreter": "fixed cost: python -c pass",
    "job/imports": "fixed cost: import hydra, numpy, mlplab.cli, mlplab.pipeline",
    "job/import_mlflow": "fixed cost: import mlflow",
    "job/untracked": "one 1-epoch job, tracking off (pipelines/run.py)",
    "job/tracked": "one 1-epoch job, tracking on (existing SQLite store)",
}


def _md_sweep(c: dict[str, Any]) -> list[str]:
    lines = _heading(
        "Sweep throughput: 16 jobs (4 widths × 4 learning rates), plot and trace off", c
    )
    if "skipped" in c:
        return lines
    lines += ["| what | seconds |", "|---|---|"]
    lines += [f"| {desc} | {_cell(c['results'].get(key))} |" for key, desc in SWEEP_ROWS.items()]
    if "jobs_per_second" in c:
        jps = " → ".join(f"{k} {_fmt(v)}" for k, v in c["jobs_per_second"].items())
        lines.append(f"| jobs/s | {jps} |")
    return [*lines, ""]


def _md_sweep64(c: dict[str, Any]) -> list[str]:
    jobs = c.get("jobs", 64)
    lines = _heading(
        f'Seed sweep: `make sweep SWEEP=base ARGS="seed=range(0,{jobs})"` against one '
        "`make run` (tutorial, tracked, same store)",
        c,
    )
    if "skipped" in c:
        return lines
    r, ch = c["results"], c["children"]
    paired = ", ".join(_fmt(x) for x in c["paired_ratios"])
    lines += [
        "| what | wall time (s) |",
        "|---|---|",
        f"| the {jobs}-job sweep (population launcher) | {_cell(r.get('sweep'))} |",
        f"| one run | {_cell(r.get('run'))} |",
        f"| sweep / run | {_fmt(c.get('ratio'))} × (rep by rep: {paired or '–'}) |",
        f"| the sweep's peak RSS (MiB) | {_cell(c.get('peak_rss_mib'))} |",
        *_md_cpu(c),
        "",
        f"Children with a complete record: {ch.get('complete', '–')} of {ch.get('expected', '–')}"
        f" (sweeps: {ch.get('parents', '–')})"
        + (f"; problems: {'; '.join(ch['problems'])}" if ch.get("problems") else "")
        + (f"; error: {ch['error']}" if ch.get("error") else "")
        + ".",
        "",
        "Where the sweep's time goes (medians; from its output lines and its jobs' files):",
        "",
        "| phase | seconds |",
        "|---|---|",
    ]
    lines += [f"| {SWEEP_PHASES[k]} | {_fmt(v)} |" for k, v in c["phases"].items()]
    return [*lines, ""]


def _md_cpu(c: dict[str, Any]) -> list[str]:
    """The sweep64 rows of CPU time, and the wall time it allows at best (CPU / cores)."""
    cpu, floor = c.get("cpu_seconds", {}), c.get("cpu_floor")
    if floor is None:
        return []
    run = _median(c["results"].get("run"))
    return [
        f"| CPU seconds, all its processes: the sweep | {_cell(cpu.get('sweep'))} |",
        f"| CPU seconds, all its processes: one run | {_cell(cpu.get('run'))} |",
        f"| the least wall time the sweep's CPU allows on {c['cores']} cores (CPU / cores) "
        f"| {_fmt(floor)} ({_fmt(_ratio(floor, run))} × one run) |",
    ]


def _md_long(c: dict[str, Any]) -> list[str]:
    lines = _heading(f"Long runs: {c.get('epochs', 0):,} tutorial epochs (train.tol=0)", c)
    if "skipped" in c:
        return lines
    tracked = "; ".join(
        f"{t['points']:,} points, steps {t['steps']}, history {t['history_len']}"
        + (f" ({', '.join(t['problems'])})" if t["problems"] else "")
        for t in c["tracked"]
    )
    kills = "; ".join(
        f"{_fmt(k.get('seconds'))} s, exit {k.get('exit_code')}, {k['epochs_run']} epochs, "
        f"{k['points']} points" + (f" ({', '.join(k['problems'])})" if k["problems"] else "")
        if not k.get("error")
        else f"error: {k['error']}"
        for k in c["sigterm"]
    )
    return [
        *lines,
        "| what | value |",
        "|---|---|",
        f"| tracking off (s) | {_cell(c['results']['off'])} |",
        f"| tracking on (s) | {_cell(c['results']['on'])} |",
        f"| on / off | {_fmt(c.get('ratio'))} × |",
        f"| train_rmse in MLflow, each tracked run | {tracked or c.get('store_error') or '–'} |",
        f"| SIGTERM {_fmt(c.get('sigterm_wait'))} s into a 10⁸-epoch run: seconds to exit "
        f"| {_cell(c['sigterm_seconds'])} |",
        f"| the interrupted runs | {kills or '–'} |",
        "",
    ]


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "%":
        return f"{value * 100:.1f} %"
    if unit == "bool":
        return "yes" if value >= 1 else "no"
    return f"{_fmt(value)} {unit}".rstrip()


def _md_targets(res: dict[str, Any]) -> list[str]:
    lines = ["### Targets", "", "| target | value | limit | status |", "|---|---|---|---|"]
    for t in res["targets"]:
        sign = "≤" if t["compare"] == "<=" else "≥"
        limit = (
            f"{sign} {_fmt(t['limit'] * 100)} %"
            if t["unit"] == "%"
            else ("yes" if t["unit"] == "bool" else f"{sign} {_shown(t['limit'], t['unit'])}")
        )
        note = f" ({t['note']})" if t.get("note") else ""
        shown = _shown(t["value"], t["unit"])
        lines.append(f"| {t['target']} | {shown} | {limit} | **{t['status']}**{note} |")
    return [*lines, ""]


RENDER: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "tutorial": _md_tutorial,
    "large": _md_large,
    "population": _md_population,
    "tracking": _md_tracking,
    "sweep": _md_sweep,
    "sweep64": _md_sweep64,
    "long": _md_long,
}


def markdown(res: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    lines = _md_header(res)
    for case, c in res["cases"].items():
        lines += RENDER[case](c)
    return "\n".join([*lines, *_md_targets(res)])


# -- main ------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    p.add_argument(
        "--reps",
        type=int,
        help="repetitions of every case (default: tutorial 5, large 3, population 3, "
        "tracking 3, sweep 2, sweep64 3, long 2; quick: 1)",
    )
    p.add_argument(
        "--cases",
        default=None,
        help=f"comma-separated, of {','.join(ALL_CASES)} (default: all; quick: "
        f"{','.join(QUICK_CASES)})",
    )
    p.add_argument(
        "--impls",
        default=",".join(dict.fromkeys(TUTORIAL_IMPLS + LARGE_IMPLS)),
        help="contestants to run (default: all)",
    )
    for key in ("tutorial-epochs", "large-n", "large-epochs", "population-epochs"):
        p.add_argument(f"--{key}", type=int)
    p.add_argument("--sweep64-jobs", type=int, help="jobs of the seed sweep (default 64)")
    p.add_argument("--long-epochs", type=int, help="epochs of the long runs (default 10⁶)")
    p.add_argument(
        "--out", type=Path, default=HERE / "results", help="folder for latest.json and latest.md"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the other cases of the existing latest.json (rerun one case on a quiet machine)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The sizes, with the command line's overrides."""
    cfg = sizes(args.quick)
    for key in (
        "tutorial_epochs",
        "large_n",
        "large_epochs",
        "population_epochs",
        "sweep64_jobs",
        "long_epochs",
    ):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.reps is not None:
        cfg["reps"] = dict.fromkeys(cfg["reps"], args.reps)
    return cfg


def previous_cases(args: argparse.Namespace, cases: Sequence[str]) -> tuple[dict[str, Any], dict]:
    """With ``--merge``: the other cases of the existing results, and their repetitions."""
    path = args.out / "latest.json"
    if not (args.merge and path.exists()):
        return {}, {}
    old = json.loads(path.read_text())
    if old.get("schema") != SCHEMA or old.get("settings", {}).get("quick") != args.quick:
        return {}, {}
    kept = {k: v for k, v in old.get("cases", {}).items() if k not in cases}
    return kept, {k: v for k, v in old["settings"]["reps"].items() if k in kept}


def run_cases(
    cases: Sequence[str],
    runners: dict[str, Callable[[], dict[str, Any]]],
    log: Callable[[str], None],
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each case's result, with when it ran and the load average before and after."""
    for case in cases:
        log(f"{case} ...")
        before, started = _loadavg(), datetime.now(UTC).isoformat()
        result = runners[case]()
        result.update(started=started, load_before=before, load_after=_loadavg())
        yield case, result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    cfg = settings(args)
    cases = (args.cases or ",".join(QUICK_CASES if args.quick else ALL_CASES)).split(",")
    unknown = set(cases) - set(ALL_CASES)
    if unknown:
        print(f"unknown case(s) {sorted(unknown)}; choose from {ALL_CASES}", file=sys.stderr)
        return 2
    impls = args.impls.split(",")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    kept, old_reps = previous_cases(args, cases)
    res: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(),
        "settings": {
            **cfg,
            "reps": {**cfg["reps"], **old_reps},
            "quick": args.quick,
            "cases": cases,
            "impls": impls,
        },
        "load_before": _loadavg(),
    }
    log("machine ...")
    res["machine"] = machine_info()
    t0 = time.perf_counter()
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "tutorial": partial(case_tutorial, cfg, impls, log),
        "large": partial(case_large, cfg, impls, log),
        "population": partial(case_population, cfg, log),
        "tracking": partial(case_tracking, cfg, log),
        "sweep": partial(case_sweep, cfg, log),
        "sweep64": partial(case_sweep64, cfg, log),
        "long": partial(case_long, cfg, log),
    }
    done = {**kept, **dict(run_cases(cases, runners, log))}
    res["cases"] = {k: done[k] for k in ALL_CASES if k in done}
    res.update(seconds=time.perf_counter() - t0, load_after=_loadavg())
    res["targets"] = targets(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(res, indent=2) + "\n")
    table = markdown(res)
    (args.out / "latest.md").write_text(table)
    print(table)
    log(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.md'} ({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

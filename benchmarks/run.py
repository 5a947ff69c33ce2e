"""`make bench`: mlplab's engine against a bare NumPy loop, scikit-learn and PyTorch.

    python benchmarks/run.py                 # everything (~10 min on 2 cores)
    python benchmarks/run.py --quick         # tiny sizes, one repetition (a smoke test)
    python benchmarks/run.py --cases tutorial,large --reps 3 --impls ours,bare,torch

Every measurement runs in a fresh worker process (this script with ``--worker``), and the
measurements of a case are interleaved: repetition r runs every contestant once, in an
order rotated by r, so that a slow spell of a shared machine falls on all of them alike.
The table gives the median over repetitions and the spread (min–max). Results go to
``benchmarks/results/latest.json`` and ``latest.md`` (``--out`` to change the folder).

Cases (see ``impls.py`` for the contestants):

* ``tutorial``: µs per epoch of the textbook 2-2-2 net (10 000 epochs), measured as the
  worker's CPU time (one thread everywhere: BLAS, OpenMP and PyTorch are pinned to one),
  which other processes on a shared machine disturb far less than wall time.
* ``large``: seconds per epoch (wall time, all cores) of 100 000 × 64 → 256 → 256 → 8 in
  float32 and float64, and GFLOP/s (6 × weights × samples per epoch) as a fraction of the
  machine's measured matrix-multiply peak (the best large ``np.matmul`` seen in the run).
* ``tracking``: the tutorial run end to end (``pipelines/run.py``, ``train.tol=0``, so all
  10 000 epochs run), tracking off versus on (a temporary SQLite store, created by an
  untimed first run): as ``make run`` runs it (the target: MLflow works in a helper
  process while the job trains and plots), the same with ``tracking.background=false``
  (MLflow in the job's process), and with plot and trace off (nothing left to overlap:
  the MLflow cost itself).
* ``sweep``: a 16-job multirun (4 widths × 4 learning rates, 3000 epochs at most, plot and
  trace off) with Hydra's basic launcher (jobs one after the other in one process) versus
  the joblib launcher (one worker process per core), and the fixed cost of one job: the
  interpreter, the entry point's imports, MLflow's import, a 1-epoch job without and with
  tracking.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
SCHEMA = "mlplab-bench/1"

TUTORIAL_IMPLS = ("ours", "bare", "textbook", "sklearn", "torch")
LARGE_IMPLS = ("ours", "bare", "sklearn", "torch")
ALL_CASES = ("tutorial", "large", "tracking", "sweep")
OPTIONAL = {"sklearn": "sklearn", "torch": "torch"}  # contestant -> module it needs
LABELS = {
    "ours": "mlplab.nn.fit",
    "bare": "bare NumPy loop (floor)",
    "textbook": "textbook NumPy (allocating)",
    "sklearn": "scikit-learn MLPRegressor",
    "torch": "PyTorch (CPU)",
}
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BLAS_ENV = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


# -- sizes -----------------------------------------------------------------------------------
def sizes(quick: bool) -> dict[str, Any]:
    """Problem sizes: the real ones, or tiny ones for ``--quick``."""
    if quick:
        return {
            "tutorial_epochs": 300,
            "warmup_epochs": 20,
            "large_n": 2048,
            "large_epochs": 2,
            "peak_n": 384,
            "sweep_epochs": 20,
            "reps": {"tutorial": 1, "large": 1, "tracking": 1, "sweep": 1},
        }
    return {
        "tutorial_epochs": 10_000,
        "warmup_epochs": 300,
        "large_n": 100_000,
        "large_epochs": 2,
        "peak_n": 2048,
        "sweep_epochs": 3000,
        "reps": {"tutorial": 5, "large": 3, "tracking": 3, "sweep": 2},
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
    if kind == "large":
        return impls.LARGE[spec["impl"]](spec["n"], spec["dtype"], spec["epochs"])
    if kind == "peak":
        return impls.gemm_peak(spec["n"], spec["dtype"])
    if kind == "blas":
        try:
            from threadpoolctl import threadpool_info
        except ImportError:  # comes with scikit-learn
            return {"threadpools": []}
        return {"threadpools": threadpool_info()}
    raise ValueError(f"unknown worker kind {kind!r}")


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
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_command(
    args: Sequence[str], cwd: Path, timeout: float = 900, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Wall time of a whole subprocess (start to exit)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}", "wall": wall}
    return {"wall": wall}


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
            status = result.get("error") or ", ".join(
                f"{k}={v:.4g}"
                if isinstance(v, float)
                else f"{k}=[{', '.join(f'{x:.4g}' for x in v)}]"
                for k, v in result.items()
                if isinstance(v, float) or (isinstance(v, list) and v and isinstance(v[0], float))
            )
            log(f"  rep {rep + 1}/{reps} {name}: {status}")
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


# -- cases -----------------------------------------------------------------------------------
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


def _pipeline(*overrides: str) -> list[str]:
    return [PY, str(ROOT / "pipelines" / "run.py"), *overrides]


def case_tracking(cfg: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mlplab-bench-tracking-"))
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    counter = iter(range(10**6))
    epochs = cfg["tutorial_epochs"]
    lean = ("plot.enabled=false", "trace.enabled=false")

    def job(tracking: str, extra: Sequence[str]) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            return run_command(
                _pipeline(
                    "train.tol=0",
                    f"train.epochs={epochs}",
                    tracking,
                    *extra,
                    f"hydra.run.dir={tmp / 'outputs' / str(next(counter))}",
                ),
                cwd=ROOT,
            )

        return go

    on, off = f"tracking.uri={store}", "tracking.enabled=false"
    inline = ("tracking.background=false",)
    try:
        first = job(on, lean)()  # creates the store's schema and the experiment: not timed
        if "error" in first:
            return {"skipped": f"the tracked run failed: {first['error']}"}
        tasks = {
            "defaults/off": job(off, ()),
            "defaults/on": job(on, ()),
            "inline/off": job(off, inline),
            "inline/on": job(on, inline),
            "lean/off": job(off, lean),
            "lean/on": job(on, lean),
        }
        runs = round_robin(tasks, cfg["reps"]["tracking"], log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {name: _summarise(r, lambda x: x["wall"]) for name, r in runs.items()}
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
    if (
        not (ROOT / "src" / "mlplab" / "sweep.py").exists()
        or importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None
    ):
        return {
            "skipped": "the sweep callback (src/mlplab/sweep.py) or the joblib launcher "
            "is not available yet"
        }
    tmp = Path(tempfile.mkdtemp(prefix="mlplab-bench-sweep-"))
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    counter = iter(range(10**6))
    grid = ("model.hidden=[2],[3],[4],[5]", "optimizer.lr=0.1,0.2,0.3,0.5")
    common = (
        f"train.epochs={cfg['sweep_epochs']}",
        "plot.enabled=false",
        "trace.enabled=false",
        f"tracking.uri={store}",
    )

    def sweep(launcher: str) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            return run_command(
                _pipeline(
                    "--multirun",
                    *grid,
                    *common,
                    f"hydra/launcher={launcher}",
                    f"hydra.sweep.dir={tmp / 'multirun' / str(next(counter))}",
                ),
                cwd=ROOT,
            )

        return go

    def one_job(tracking: str) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            return run_command(
                _pipeline(
                    "train.epochs=1",
                    "plot.enabled=false",
                    "trace.enabled=false",
                    tracking,
                    f"hydra.run.dir={tmp / 'outputs' / str(next(counter))}",
                ),
                cwd=ROOT,
            )

        return go

    def snippet(code: str) -> Callable[[], dict[str, Any]]:
        return lambda: run_command([PY, "-c", code], cwd=ROOT)

    try:
        first = one_job(f"tracking.uri={store}")()  # creates the store: not timed
        if "error" in first:
            return {"skipped": f"a tracked job failed: {first['error']}"}
        tasks = {
            "sweep16/basic": sweep("basic"),
            "sweep16/joblib": sweep("joblib"),
            "job/interpreter": snippet("pass"),
            "job/imports": snippet("import hydra, numpy, omegaconf, mlplab.cli, mlplab.pipeline"),
            "job/import_mlflow": snippet("import mlflow"),
            "job/untracked": one_job("tracking.enabled=false"),
            "job/tracked": one_job(f"tracking.uri={store}"),
        }
        runs = round_robin(tasks, cfg["reps"]["sweep"], log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {name: _summarise(r, lambda x: x["wall"]) for name, r in runs.items()}
    basic, joblib = results["sweep16/basic"], results["sweep16/joblib"]
    out: dict[str, Any] = {
        "unit": "s (wall time, end to end)",
        "jobs": 16,
        "epochs": cfg["sweep_epochs"],
        "results": results,
    }
    if basic.get("n") and joblib.get("n"):
        out["jobs_per_second"] = {"basic": 16 / basic["median"], "joblib": 16 / joblib["median"]}
        out["speedup_joblib"] = basic["median"] / joblib["median"]
    return out


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
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
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
        "git": (commit or "unknown") + ("+dirty" if dirty else ""),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- targets and table -----------------------------------------------------------------------
def _median(entry: dict[str, Any] | None) -> float | None:
    return entry.get("median") if entry and entry.get("n") else None


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each PASS, MISS or SKIP (with the numbers it was judged on)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, better: str, why: str = "") -> None:
        if value is None or math.isnan(value):
            out.append(
                {
                    "target": name,
                    "status": "SKIP",
                    "value": None,
                    "limit": limit,
                    "compare": better,
                    "note": why or "not measured",
                }
            )
            return
        ok = value <= limit if better == "<=" else value >= limit
        out.append(
            {
                "target": name,
                "status": "PASS" if ok else "MISS",
                "value": value,
                "limit": limit,
                "compare": better,
            }
        )

    tut = res.get("cases", {}).get("tutorial", {}).get("results", {})
    ours = _median(tut.get("ours"))

    def ratio(num: float | None, den: float | None) -> float | None:
        return num / den if num is not None and den else None

    add("tutorial: ours / bare loop", ratio(ours, _median(tut.get("bare"))), 1.3, "<=")
    add("tutorial: MLPRegressor / ours", ratio(_median(tut.get("sklearn")), ours), 3.0, ">=")
    add("tutorial: PyTorch / ours", ratio(_median(tut.get("torch")), ours), 10.0, ">=")
    large = res.get("cases", {}).get("large", {}).get("dtypes", {})
    for dtype in ("float32", "float64"):
        r = large.get(dtype, {})
        mine = _median(r.get("ours"))
        for impl, label in (("torch", "PyTorch"), ("sklearn", "MLPRegressor")):
            add(
                f"large {dtype}: {label} / ours (s/epoch)",
                ratio(_median(r.get(impl)), mine),
                1.0,
                ">=",
            )
    f32 = large.get("float32", {}).get("ours", {})
    add("large float32: ours / GEMM peak", f32.get("peak_fraction"), 0.65, ">=")
    trk = res.get("cases", {}).get("tracking", {}).get("overhead", {})
    add("tracking overhead (the tutorial run, as make run)", trk.get("defaults"), 0.10, "<=")
    return out


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


def markdown(res: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    m = res["machine"]
    lines = [
        f"## mlplab benchmarks ({res['created'][:16].replace('T', ' ')} UTC)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
        f"NumPy {m['versions'].get('numpy')} ("
        + ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']}" for b in m["blas"])
        + f"), scikit-learn {m['versions'].get('scikit-learn')}, "
        f"PyTorch {m['versions'].get('torch')}; git {m['git']}. "
        + (
            "BLAS environment: " + ", ".join(f"{k}={v}" for k, v in m["env"].items() if v) + ". "
            if any(m["env"].values())
            else ""
        )
        + "Median over repetitions ("
        + ", ".join(f"{k} {v}" for k, v in res["settings"]["reps"].items() if k in res["cases"])
        + ") with the range (min–max); every measurement "
        "in a fresh process, contestants interleaved.",
        "",
    ]
    cases = res["cases"]
    if "tutorial" in cases:
        c = cases["tutorial"]
        lines += [
            f"### Tutorial: 2-2-2 sigmoid, 50 samples, full batch, {c['epochs']:,} epochs, float64",
            "",
            _when(c),
            "",
            "| implementation | µs/epoch (CPU, 1 thread) | × ours | final RMSE |",
            "|---|---|---|---|",
        ]
        ours = _median(c["results"].get("ours"))
        for impl, entry in c["results"].items():
            med = _median(entry)
            rel = _fmt(med / ours, 3) if med and ours else "–"
            lines.append(
                f"| {LABELS[impl]} | {_cell(entry)} | {rel} | {_fmt(entry.get('final_rmse'), 6)} |"
            )
        for impl, why in c.get("skipped", {}).items():
            lines.append(f"| {LABELS[impl]} | skipped: {why} | – | – |")
        lines += [
            "",
            "MLPRegressor's output layer is the identity and its loss the mean squared "
            "error (it has no sigmoid output, no summed loss): the same cost per epoch, "
            "a slightly different net.",
            "",
        ]
    if "large" in cases:
        c = cases["large"]
        lines += [
            f"### Large: {c['n']:,} × 64 → 256 → 256 → 8, relu, mean MSE, SGD batch 256",
            "",
            _when(c),
            "",
            f"FLOPs per epoch 6 × weights × samples = {c['flops_per_epoch'] / 1e9:.1f} G. "
            "Peak: the best n×n np.matmul of the run, all cores: "
            + ", ".join(f"{d} {_fmt(p.get('best'))} GFLOP/s" for d, p in c["peak_gflops"].items())
            + f". Times: the faster of {c['epochs_per_rep']} epochs in each repetition.",
            "",
            "| implementation | dtype | s/epoch | GFLOP/s | % of peak | × ours |",
            "|---|---|---|---|---|---|",
        ]
        for dtype, results in c["dtypes"].items():
            ours = _median(results.get("ours"))
            for impl, entry in results.items():
                med = _median(entry)
                frac = entry.get("peak_fraction")
                lines.append(
                    f"| {LABELS[impl]} | {dtype} | {_cell(entry)} | {_fmt(entry.get('gflops'))}"
                    f" | {_fmt(frac * 100 if frac is not None else None)} | "
                    f"{_fmt(med / ours) if med and ours else '–'} |"
                )
        for impl, why in c.get("skipped", {}).items():
            lines.append(f"| {LABELS[impl]} | – | skipped: {why} | | | |")
        lines.append("")
    if "tracking" in cases:
        c = cases["tracking"]
        lines += [
            f"### Tracking overhead: the tutorial run end to end ({c.get('epochs', 0):,} "
            "epochs, pipelines/run.py)",
            "",
            _when(c),
            "",
        ]
        if "skipped" in c:
            lines += [f"Skipped: {c['skipped']}", ""]
        else:
            lines += [
                "| variant | tracking off (s) | tracking on (s) | overhead |",
                "|---|---|---|---|",
            ]
            for variant, desc in c["variants"].items():
                over = c["overhead"].get(variant)
                lines.append(
                    f"| {desc} | {_cell(c['results'].get(f'{variant}/off'))} | "
                    f"{_cell(c['results'].get(f'{variant}/on'))} | "
                    f"{_fmt(over * 100 if over is not None else None)} % |"
                )
            lines.append("")
    if "sweep" in cases:
        c = cases["sweep"]
        lines += [
            "### Sweep throughput: 16 jobs (4 widths × 4 learning rates), plot and trace off",
            "",
            _when(c),
            "",
        ]
        if "skipped" in c:
            lines += [f"Skipped: {c['skipped']}", ""]
        else:
            r = c["results"]
            lines += ["| what | seconds |", "|---|---|"]
            names = {
                "sweep16/basic": "16 jobs, hydra/launcher=basic (one process, in turn)",
                "sweep16/joblib": "16 jobs, hydra/launcher=joblib (a worker per core)",
                "job/interpreter": "fixed cost: python -c pass",
                "job/imports": "fixed cost: import hydra, numpy, mlplab.cli, mlplab.pipeline",
                "job/import_mlflow": "fixed cost: import mlflow",
                "job/untracked": "one 1-epoch job, tracking off (pipelines/run.py)",
                "job/tracked": "one 1-epoch job, tracking on (existing SQLite store)",
            }
            for key, desc in names.items():
                lines.append(f"| {desc} | {_cell(r.get(key))} |")
            if "speedup_joblib" in c:
                jps = c["jobs_per_second"]
                lines.append(
                    f"| jobs/s basic → joblib | {_fmt(jps['basic'])} → "
                    f"{_fmt(jps['joblib'])} (×{_fmt(c['speedup_joblib'])}) |"
                )
            lines.append("")
    lines += ["### Targets", "", "| target | value | limit | status |", "|---|---|---|---|"]
    for t in res["targets"]:
        value = t["value"]
        sign = "≤" if t["compare"] == "<=" else "≥"
        if "overhead" in t["target"] or "peak" in t["target"]:
            shown = f"{value * 100:.1f} %" if value is not None else "–"
            limit = f"{sign} {t['limit'] * 100:.0f} %"
        else:
            shown, limit = _fmt(value), f"{sign} {t['limit']:g}"
        note = f" ({t['note']})" if t.get("note") else ""
        lines.append(f"| {t['target']} | {shown} | {limit} | **{t['status']}**{note} |")
    lines.append("")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    p.add_argument(
        "--reps",
        type=int,
        help="repetitions of every case (default: tutorial 5, large 3, tracking 3, sweep 2; "
        "quick: 1)",
    )
    p.add_argument(
        "--cases",
        default=None,
        help=f"comma-separated, of {','.join(ALL_CASES)} (default: all; quick: tutorial,large)",
    )
    p.add_argument(
        "--impls", default=",".join(TUTORIAL_IMPLS), help="contestants to run (default: all)"
    )
    p.add_argument("--tutorial-epochs", type=int)
    p.add_argument("--large-n", type=int)
    p.add_argument("--large-epochs", type=int)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    cfg = sizes(args.quick)
    for key in ("tutorial_epochs", "large_n", "large_epochs"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.reps is not None:
        cfg["reps"] = dict.fromkeys(cfg["reps"], args.reps)
    cases = (args.cases or ("tutorial,large" if args.quick else ",".join(ALL_CASES))).split(",")
    unknown = set(cases) - set(ALL_CASES)
    if unknown:
        print(f"unknown case(s) {sorted(unknown)}; choose from {ALL_CASES}", file=sys.stderr)
        return 2
    impls = args.impls.split(",")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    res: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(),
        "settings": {**cfg, "quick": args.quick, "cases": cases, "impls": impls},
        "load_before": _loadavg(),
    }
    previous = args.out / "latest.json"
    if args.merge and previous.exists():
        old = json.loads(previous.read_text())
        if old.get("schema") == SCHEMA and old.get("settings", {}).get("quick") == args.quick:
            res["cases"] = {k: v for k, v in old.get("cases", {}).items() if k not in cases}
            res["settings"]["reps"] = {
                **old["settings"]["reps"],
                **{k: v for k, v in cfg["reps"].items() if k in cases},
            }
    res.setdefault("cases", {})
    log("machine ...")
    res["machine"] = machine_info()
    t0 = time.perf_counter()
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "tutorial": partial(case_tutorial, cfg, impls, log),
        "large": partial(case_large, cfg, impls, log),
        "tracking": partial(case_tracking, cfg, log),
        "sweep": partial(case_sweep, cfg, log),
    }
    for case in cases:
        log(f"{case} ...")
        before, started = _loadavg(), datetime.now(UTC).isoformat()
        result = runners[case]()
        result.update(started=started, load_before=before, load_after=_loadavg())
        res["cases"][case] = result
    res["cases"] = {k: res["cases"][k] for k in ALL_CASES if k in res["cases"]}
    res["seconds"] = time.perf_counter() - t0
    res["load_after"] = _loadavg()
    res["targets"] = targets(res)
    table = markdown(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "latest.md").write_text(table)
    print(table)
    log(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.md'} ({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

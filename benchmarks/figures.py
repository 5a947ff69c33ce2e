"""The three still figures of a run, drawn for a sweep's members: one-off against a Painter.

    python benchmarks/figures.py                      # 64 members, 3 repetitions, both paths
    python benchmarks/figures.py --members 16 --reps 1 --paths oneoff
    python benchmarks/figures.py --json out.json      # also every sample, as JSON

Each member has the tutorial's shapes (SPEC §1): an RMSE history of 380-490 epochs
(``plots/rmse.png``), 50 samples of 2 inputs and 2 outputs, actual and predicted
(``plots/predictions.png``), and a 2-2-2 network (``plots/network.png``). Their values are
drawn from the member's seed, so every member's figure differs, as in a seed sweep.

Paths:

* ``oneoff``: ``plot_rmse``, ``plot_predictions`` and ``plot_network``, one call per figure
  (a new Figure each time), as ``make run`` draws them;
* ``painter``: one :class:`mlplab.plots.Painter` for all members (its figures are reused).

Every repetition of a path runs in a fresh interpreter (this script with ``--worker``), with
Matplotlib already imported, and draws the members one after the other, each member's three
figures in a row, writing real PNG files to a temporary folder. The table gives, per figure
kind, the first figure of the process (the cold one), the median of the others, and the
mean over all the members (what a sweep pays per figure), as medians over repetitions, in
wall and CPU time. The load average of the machine is printed before and after, since other
processes on a small machine disturb the wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PATHS = ("oneoff", "painter")
KINDS = ("rmse", "predictions", "network")
DPI = 100


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def tutorial_member(seed: int) -> dict[str, Any]:
    """One member's figure inputs, with the tutorial's shapes and plausible values."""
    rng = np.random.default_rng(seed)
    epochs = int(rng.integers(380, 490))
    start, floor = rng.uniform(0.15, 0.45), rng.uniform(0.004, 0.02)
    rmse = floor + (start - floor) * np.exp(-np.arange(epochs) / rng.uniform(40, 90))
    X = rng.random((50, 2))
    Y = _sigmoid(_sigmoid(X) + 0.1 * rng.random()) + 0.1 * rng.random()
    return {
        "history": {"train_rmse": rmse},
        "X": X,
        "Y": Y,
        "Y_pred": Y + rng.normal(0.0, floor, Y.shape),
        "weights": [rng.standard_normal((3, 2)) * 2.0, rng.standard_normal((3, 2)) * 2.0],
        "subtitle": f"{epochs} epochs, final train RMSE {rmse[-1]:.4f}",
    }


def _drawers(path: str) -> dict[str, Callable[[dict[str, Any], Path], Path]]:
    """Per figure kind, a function drawing one member's figure to a file."""
    import mlplab.plots as plots

    names = (["x1", "x2"], ["y1", "y2"])
    if path == "oneoff":
        return {
            "rmse": lambda m, p: plots.plot_rmse(m["history"], p, dpi=DPI),
            "predictions": lambda m, p: plots.plot_predictions(
                m["X"], m["Y"], m["Y_pred"], p, *names, False, dpi=DPI
            ),
            "network": lambda m, p: plots.plot_network(
                m["weights"], p, subtitle=m["subtitle"], dpi=DPI
            ),
        }
    painter = plots.Painter()
    return {
        "rmse": lambda m, p: painter.rmse(m["history"], p, dpi=DPI),
        "predictions": lambda m, p: painter.predictions(
            m["X"], m["Y"], m["Y_pred"], p, *names, False, dpi=DPI
        ),
        "network": lambda m, p: painter.network(m["weights"], p, subtitle=m["subtitle"], dpi=DPI),
    }


def worker(path: str, members: int) -> dict[str, Any]:
    """Draw ``members`` members' figures in this process; seconds per figure, by kind."""
    import matplotlib.figure  # noqa: F401  (imported before timing, as in a pipeline)

    drawers = _drawers(path)
    data = [tutorial_member(seed) for seed in range(members)]
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in KINDS}
    with tempfile.TemporaryDirectory(prefix="mlplab-figures-") as tmp:
        for i, member in enumerate(data):
            for kind in KINDS:
                out = Path(tmp) / str(i) / "plots" / f"{kind}.png"
                wall, cpu = time.perf_counter(), time.process_time()
                drawers[kind](member, out)
                times[kind]["wall"].append(time.perf_counter() - wall)
                times[kind]["cpu"].append(time.process_time() - cpu)
    return {"path": path, "members": members, "times": times}


def run_worker(path: str, members: int) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", path]
    cmd += ["--members", str(members)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"worker {path}: exit {proc.returncode}: {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per kind and clock: first figure, median of the others, mean per figure (ms).

    Each statistic is taken per repetition, then the median over repetitions is kept.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind in KINDS:
        out[kind] = {}
        for clock in ("wall", "cpu"):
            samples = [run["times"][kind][clock] for run in runs]
            out[kind][clock] = {
                "first": 1e3 * statistics.median(s[0] for s in samples),
                "median": 1e3 * statistics.median(statistics.median(s[1:] or s) for s in samples),
                "mean": 1e3 * statistics.median(statistics.fmean(s) for s in samples),
            }
    return out


def table(results: dict[str, dict[str, dict[str, dict[str, float]]]], members: int) -> str:
    """A Markdown table of :func:`summarise` for every path."""
    rows = [
        f"| path | figure | first (ms) | median of the next {members - 1} (ms) "
        f"| mean over {members} (ms) |",
        "|---|---|---|---|---|",
    ]
    for path, kinds in results.items():
        for kind in (*KINDS, "all three"):
            stats = kinds[kind] if kind in kinds else _all_three(kinds)
            cells = [
                " / ".join(f"{stats[clock][stat]:.0f}" for clock in ("wall", "cpu"))
                for stat in ("first", "median", "mean")
            ]
            rows.append(f"| {path} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n\n(wall / CPU; `all three` sums the kinds)"


def _all_three(kinds: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        clock: {stat: sum(kinds[k][clock][stat] for k in KINDS) for stat in kinds[KINDS[0]][clock]}
        for clock in ("wall", "cpu")
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--members", type=int, default=64, help="members per repetition (64)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each path (3)")
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated: oneoff,painter")
    p.add_argument("--json", type=Path, help="also write every sample to this JSON file")
    p.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.members)))
        return 0
    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown or args.members < 2 or args.reps < 1:
        print(f"paths must be among {PATHS}, members >= 2, reps >= 1", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
    for rep in range(args.reps):  # interleaved: a busy spell falls on every path alike
        for path in paths[rep % len(paths) :] + paths[: rep % len(paths)]:
            runs[path].append(run_worker(path, args.members))
    results = {path: summarise(runs[path]) for path in paths}
    load_after = os.getloadavg()
    print(table(results, args.members))
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {load_after}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

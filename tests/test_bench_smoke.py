"""`make bench`: the harness end to end on tiny sizes, and its judging functions on synthetic
results (no timing is asserted: the targets are benchmarks, not tests).

The engine cases (tutorial, large, population) run in their ``--quick`` form (seconds). The
end-to-end cases (sweep64, long) take minutes even when small, so their summaries, record
checks and targets are tested here on made-up measurements, and the two process mechanics
they rely on (timing a command, SIGTERM after a run appears in a store) on tiny scripts.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"

#: The targets the issues set (6, 12, 13, 16): every one is reported, whatever was run.
EXPECTED_TARGETS = {
    "tutorial: ours / bare loop",
    "tutorial: MLPRegressor / ours",
    "tutorial: PyTorch / ours",
    "large float32: PyTorch / ours (s/epoch)",
    "large float32: MLPRegressor / ours (s/epoch)",
    "large float64: PyTorch / ours (s/epoch)",
    "large float64: MLPRegressor / ours (s/epoch)",
    "large float32: ours / GEMM peak",
    "population: loop / stacked per network-epoch at P = 64",
    "population: 1 024 members in one group, peak RSS",
    "population: stacked weights = single networks' (every P)",
    "tracking overhead (the tutorial run, as make run)",
    "sweep64: the seed sweep / one run (wall time)",
    "sweep64: children with a complete record",
    "long: tracking on / off (wall time)",
    "long: train_rmse points in MLflow (most of a run)",
    "long: first and last epoch logged, whole history kept",
    "long: SIGTERM to exit (slowest)",
    "long: interrupted runs KILLED with history and weights",
}
MEASURED_QUICK = {
    "tutorial: ours / bare loop",
    "large float32: ours / GEMM peak",
    "population: loop / stacked per network-epoch at P = 64",
    "population: 1 024 members in one group, peak RSS",
    "population: stacked weights = single networks' (every P)",
}


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mlplab_bench_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _implied(t: dict[str, Any]) -> str:
    """The status a target's value and limit imply (independent of run.py's own logic)."""
    if t["value"] is None:
        return "SKIP"
    passed = t["value"] <= t["limit"] if t["compare"] == "<=" else t["value"] >= t["limit"]
    return "PASS" if passed else "MISS"


def _check_targets(found: list[dict[str, Any]], measured: set[str]) -> None:
    """Every expected target is there once, with a numeric limit; exactly ``measured`` have a
    finite value; each status is the one its value and limit imply."""
    names = [t["target"] for t in found]
    assert sorted(names) == sorted(EXPECTED_TARGETS)
    for t in found:
        assert isinstance(t["limit"], float) and math.isfinite(t["limit"]), t
        assert t["compare"] in {"<=", ">="}, t
        if t["target"] in measured:
            assert isinstance(t["value"], float) and math.isfinite(t["value"]), t
        else:
            assert t["value"] is None, t
        assert t["status"] == _implied(t), t


# -- the harness end to end, on tiny sizes ---------------------------------------------------
@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--quick",
            "--quiet",
            "--cases",
            "tutorial,large,population",
            "--impls",
            "ours,bare,products",
            "--tutorial-epochs",
            "50",
            "--large-n",
            "300",
            "--population-epochs",
            "5",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "latest.json").read_text())
    return res, (out / "latest.md").read_text(), proc.stdout


def test_quick_run_writes_the_table_the_json_and_every_target(
    quick: tuple[dict[str, Any], str, str],
) -> None:
    res, md, stdout = quick
    assert stdout.strip() == md.strip()
    assert res["schema"] == "mlplab-bench/2"
    assert {"cpu", "cores", "versions", "blas", "env", "git"} <= set(res["machine"])
    assert list(res["cases"]) == ["tutorial", "large", "population"]
    _check_targets(res["targets"], MEASURED_QUICK)
    for t in res["targets"]:  # every target is a row of the table, with its status
        assert f"| {t['target']} | " in md and f"**{t['status']}**" in md.split(t["target"])[1]
    for heading in ("### Tutorial", "### Large", "### Populations", "### Targets"):
        assert heading in md


def test_quick_tutorial_and_large_cases(quick: tuple[dict[str, Any], str, str]) -> None:
    res = quick[0]
    tutorial = res["cases"]["tutorial"]
    assert set(tutorial["results"]) == {"ours", "bare"}
    for entry in tutorial["results"].values():
        assert entry["n"] == 1 and entry["median"] > 0 and "errors" not in entry
        assert {"min", "max", "spread", "samples", "final_rmse"} <= set(entry)
    # the engine and the hand-written loop train the same net to the same weights
    ours, bare = tutorial["results"]["ours"], tutorial["results"]["bare"]
    assert abs(ours["final_rmse"] - bare["final_rmse"]) < 1e-12
    (ratio,) = (t["value"] for t in res["targets"] if t["target"] == "tutorial: ours / bare loop")
    assert ratio == pytest.approx(ours["median"] / bare["median"])

    large = res["cases"]["large"]
    assert large["n"] == 300 and large["flops_per_epoch"] > 0
    for dtype in ("float32", "float64"):
        assert large["peak_gflops"][dtype]["best"] > 0
        assert set(large["dtypes"][dtype]) == {"ours", "bare", "products"}
        for entry in large["dtypes"][dtype].values():
            assert entry["n"] == 1 and entry["gflops"] > 0 and entry["peak_fraction"] > 0
        # the ceiling trains nothing: it has no RMSE, the contestants that train have one
        assert "final_rmse" not in large["dtypes"][dtype]["products"]
        assert "final_rmse" in large["dtypes"][dtype]["ours"]


def test_quick_population_case(quick: tuple[dict[str, Any], str, str]) -> None:
    pop = quick[0]["cases"]["population"]
    assert pop["epochs"] == 5 and set(pop["sizes"]) == {"1", "8", "64", "1024"}
    for entry in pop["sizes"].values():
        for impl in ("stacked", "loop"):
            assert entry[impl]["n"] == 1 and entry[impl]["median"] > 0, entry
        assert entry["ratio"] == pytest.approx(entry["loop"]["median"] / entry["stacked"]["median"])
        assert entry["identical"] is True  # a member's weights are those of the net alone
    mem = pop["memory"]
    assert mem["members"] == 1024 and "error" not in mem
    assert 0 < mem["rss_before_mib"] <= mem["peak_rss_mib"]
    # the tutorial's stopping rule: each member runs 2 .. memory_epochs (20) epochs
    assert 2 * 1024 <= mem["network_epochs"] <= 20 * 1024


def test_population_summary_compares_the_stacked_and_the_looped_weights() -> None:
    cfg = {
        "population_sizes": [1, 64],
        "population_epochs": 10,
        "memory_members": 1024,
        "memory_epochs": 20,
    }
    one = {"cpu": 1.0, "network_epochs": 10**5, "weights_sha256": "a"}
    runs = {
        "stacked/1": [one],
        "loop/1": [{**one, "weights_sha256": "b"}],
        "stacked/64": [{**one, "cpu": 0.1}],
        "loop/64": [{"error": "exit 1: boom"}],
    }
    pop = bench.summarise_population(runs, {"error": "exit 9: killed"}, cfg)
    assert pop["sizes"]["1"]["identical"] is False and pop["sizes"]["1"]["ratio"] == 1.0
    assert pop["sizes"]["64"]["identical"] is None and pop["sizes"]["64"]["ratio"] is None
    assert pop["memory"]["error"] == "exit 9: killed" and pop["memory"]["peak_rss_mib"] is None
    found = {t["target"]: t["status"] for t in bench.targets({"cases": {"population": pop}})}
    assert found["population: stacked weights = single networks' (every P)"] == "SKIP"
    assert found["population: loop / stacked per network-epoch at P = 64"] == "SKIP"
    runs["loop/64"] = [{**one, "cpu": 0.5}]
    pop = bench.summarise_population(runs, {"peak_rss_mib": 1500.0}, cfg)
    assert pop["sizes"]["64"]["ratio"] == pytest.approx(5.0)
    found = {t["target"]: t["status"] for t in bench.targets({"cases": {"population": pop}})}
    assert found["population: stacked weights = single networks' (every P)"] == "MISS"
    assert found["population: loop / stacked per network-epoch at P = 64"] == "MISS"
    assert found["population: 1 024 members in one group, peak RSS"] == "MISS"


def test_bench_rejects_unknown_case(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--cases", "nope", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "unknown case" in proc.stderr


# -- targets ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "status"),
    [
        ("tutorial: ours / bare loop", 1.3, "PASS"),
        ("tutorial: ours / bare loop", 1.31, "MISS"),
        ("large float32: ours / GEMM peak", 0.65, "PASS"),
        ("large float32: ours / GEMM peak", 0.649, "MISS"),
        ("long: SIGTERM to exit (slowest)", 120.0, "MISS"),
        ("tutorial: ours / bare loop", None, "SKIP"),
        ("tutorial: ours / bare loop", math.nan, "SKIP"),
    ],
)
def test_a_target_passes_exactly_on_its_side_of_the_limit(
    name: str, value: float | None, status: str
) -> None:
    t = bench.target(name, value)
    assert t["status"] == status
    assert t["value"] is None if status == "SKIP" else t["value"] == value


def test_nothing_run_lists_every_target_as_skipped() -> None:
    found = bench.targets({"cases": {}})
    _check_targets(found, set())
    assert {t["status"] for t in found} == {"SKIP"}


# -- sweep64 on synthetic results ------------------------------------------------------------
def _record(n: int, **changes: Any) -> dict[str, Any]:
    """A complete record of a finished run of ``n`` epochs, with ``changes``."""
    points = min(n, bench.MAX_POINTS)
    rec = {
        "status": "FINISHED",
        "epochs_run": n,
        "points": points,
        "steps": [1, n],
        "history_len": n,
        "artifacts": list(bench.REQUIRED_ARTIFACTS),
        "sha256": "ab" * 32,
    }
    return {**rec, **changes}


def test_a_complete_record_has_no_problem() -> None:
    assert bench.run_problems(_record(435)) == []
    assert bench.run_problems(_record(1_000_000)) == []  # 10 000 points, first and last


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"status": "FAILED"}, "status FAILED"),
        ({"points": 434}, "434 train_rmse points"),
        ({"points": 10_001}, "10001 train_rmse points"),
        ({"steps": [1, 434]}, "train_rmse steps [1, 434]"),
        ({"history_len": 434}, "history artifact of 434"),
        ({"sha256": None}, "no weights_sha256"),
        (
            {"artifacts": list(bench.REQUIRED_ARTIFACTS[:-2])},
            "missing history/train_rmse.npy, plots/network.png",
        ),
        ({"epochs_run": None}, "no epochs_run"),
    ],
)
def test_each_gap_in_a_record_is_named(changes: dict[str, Any], problem: str) -> None:
    n = 10_001 if changes.get("points") == 10_001 else 435
    problems = bench.run_problems(_record(n, **changes))
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_an_interrupted_run_needs_only_its_history_and_weights() -> None:
    killed = _record(
        270_000,
        status="KILLED",
        points=28,
        steps=[1, 270_000],
        history_len=None,
        artifacts=["weights/final.npz"],
    )
    assert bench.run_problems(killed, "KILLED", ("weights/final.npz",)) == []
    assert bench.run_problems(killed) != []  # not a complete finished run


def _sweep_store(jobs: int, sweeps: int, broken: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for s in range(sweeps):
        runs.append({"id": f"p{s}", "parent": None, "epochs_run": None, "status": "FINISHED"})
        runs += [{**_record(400 + j), "parent": f"p{s}"} for j in range(jobs)]
    for run in runs[2 : 2 + broken]:
        run["artifacts"] = ["weights/final.npz"]
    return runs


def test_sweep_children_counts_the_complete_records_of_every_sweep() -> None:
    children = bench.sweep_children(_sweep_store(jobs=4, sweeps=2, broken=1), jobs=4, sweeps=2)
    assert children["parents"] == 2 and children["children"] == [4, 4]
    assert (children["complete"], children["expected"], children["fraction"]) == (7, 8, 7 / 8)
    assert children["problems"] == [
        "missing history/train_rmse.npy, plots/network.png, plots/predictions.png, plots/rmse.png"
    ]
    # a sweep that made no child at all still counts against the expected children
    assert bench.sweep_children(_sweep_store(4, 1, 0), jobs=4, sweeps=2)["fraction"] == 0.5


def test_sweep_phases_split_the_wall_time_at_the_marks(tmp_path: Path) -> None:
    started = 1_000_000.0
    for job, (history, figure) in enumerate([(20.0, 31.0), (20.5, 35.0)]):
        for name, at in (("history/train_rmse.npy", history), ("plots/network.png", figure)):
            path = tmp_path / f"{job}-seed={job}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            os.utime(path, (started + at, started + at))
    lines = [
        (0.5, "starting"),
        (8.0, "sweep base: parent run 0a1b in experiment 'x', 2 jobs"),
        (12.0, "[HYDRA] Preparing 2 jobs to train as populations"),
        (15.0, "[HYDRA] training 2 network(s) as one population"),
        (36.0, "job 0-seed=0: FINISHED"),
        (40.0, "sweep base: 2/2 jobs finished -> parent run 0a1b FINISHED"),
    ]
    phases = bench.sweep_phases(lines, tmp_path, started, wall=41.0)
    assert list(phases) == list(bench.SWEEP_PHASES)
    assert phases == pytest.approx(
        {
            "parent": 8.0,
            "composed": 4.0,
            "prepared": 3.0,
            "trained": 5.0,
            "recorded": 15.0,
            "reported": 5.0,
            "exit": 1.0,
        }
    )
    # without the files and the first lines, the phases merge and still add up to the wall
    merged = bench.sweep_phases(lines[3:], tmp_path / "none", started, wall=41.0)
    assert list(merged) == ["prepared", "reported", "exit"]
    assert sum(merged.values()) == pytest.approx(41.0)


def test_sweep64_summary_and_its_targets() -> None:
    runs = {
        "sweep": [
            {
                "wall": 30.0,
                "cpu": 50.0,
                "peak_rss_mib": 400.0,
                "phases": {"parent": 8.0, "exit": 22.0},
            },
            {
                "wall": 24.0,
                "cpu": 46.0,
                "peak_rss_mib": 380.0,
                "phases": {"parent": 6.0, "exit": 18.0},
            },
            {"error": "exit 1: boom", "wall": 3.0},
        ],
        "run": [
            {"wall": 10.0, "cpu": 9.0},
            {"wall": 14.0, "cpu": 11.0},
            {"wall": 12.0, "cpu": 10.0},
        ],
    }
    s64 = bench.summarise_sweep64(runs, {"runs": _sweep_store(3, 2, 0)}, jobs=3, cores=2)
    assert s64["results"]["sweep"]["errors"] == ["exit 1: boom"]
    # CPU of all the sweep's processes: the median over the good sweeps, over 2 cores
    assert s64["cpu_seconds"]["sweep"]["median"] == 48.0
    assert s64["cpu_seconds"]["run"]["median"] == 10.0
    assert s64["cpu_floor"] == 24.0
    assert (
        "| the least wall time the sweep's CPU allows on 2 cores (CPU / cores) | 24 (2 × one run) |"
        in "\n".join(bench._md_sweep64(s64))
    )
    assert s64["ratio"] == pytest.approx(27.0 / 12.0)  # medians of the good samples
    assert s64["paired_ratios"] == pytest.approx([3.0, 24.0 / 14.0])
    assert s64["phases"] == {"parent": 7.0, "exit": 20.0}
    assert s64["children"]["fraction"] == 1.0  # 2 good sweeps, 3 complete children each
    found = {t["target"]: t for t in bench.targets({"cases": {"sweep64": s64}})}
    assert found["sweep64: the seed sweep / one run (wall time)"]["status"] == "MISS"
    assert found["sweep64: children with a complete record"]["status"] == "PASS"
    s64 = bench.summarise_sweep64({**runs, "run": [{"wall": 15.0}] * 3}, {"runs": []}, jobs=3)
    found = {t["target"]: t for t in bench.targets({"cases": {"sweep64": s64}})}
    assert found["sweep64: the seed sweep / one run (wall time)"]["status"] == "PASS"
    assert found["sweep64: children with a complete record"]["status"] == "MISS"
    assert found["sweep64: children with a complete record"]["value"] == 0.0


# -- long runs on synthetic results ----------------------------------------------------------
def _long_store(kill_status: str = "KILLED") -> dict[str, Any]:
    tracked = {**_record(1_000_000), "name": "long"}
    killed = _record(
        300_000,
        name="sigterm-0",
        status=kill_status,
        points=31,
        steps=[1, 300_000],
        history_len=None,
        artifacts=["weights/final.npz"],
    )
    return {"runs": [tracked, {**tracked}, killed]}


def _long_targets(long: dict[str, Any]) -> dict[str, str]:
    found = bench.targets({"cases": {"long": long}})
    return {t["target"]: t["status"] for t in found if t["target"].startswith("long:")}


def test_long_summary_and_its_targets() -> None:
    runs = {
        "off": [{"wall": 40.0}, {"wall": 42.0}],
        "on": [{"wall": 45.0}, {"wall": 47.0}],
        "sigterm": [{"seconds": 1.5, "exit_code": 130, "name": "sigterm-0"}],
    }
    long = bench.summarise_long(runs, _long_store(), 1_000_000)
    assert long["ratio"] == pytest.approx(46.0 / 41.0)
    assert [t["points"] for t in long["tracked"]] == [10_000, 10_000]
    assert long["sigterm"][0]["problems"] == [] and long["sigterm"][0]["epochs_run"] == 300_000
    assert set(_long_targets(long).values()) == {"PASS"}

    slow = {
        **runs,
        "on": [{"wall": 60.0}] * 2,
        "sigterm": [
            {"seconds": 1.0, "exit_code": 130, "name": "sigterm-0"},
            {"seconds": 6.0, "exit_code": 0, "name": "sigterm-0"},  # the slowest is judged
        ],
    }
    long = bench.summarise_long(slow, _long_store("FINISHED"), 1_000_000)
    assert long["sigterm"][1]["problems"] == ["status FINISHED", "exit"]
    assert _long_targets(long) == {
        "long: tracking on / off (wall time)": "MISS",
        "long: train_rmse points in MLflow (most of a run)": "PASS",
        "long: first and last epoch logged, whole history kept": "PASS",
        "long: SIGTERM to exit (slowest)": "MISS",
        "long: interrupted runs KILLED with history and weights": "MISS",
    }


def test_a_run_that_ignores_sigterm_misses_and_a_short_history_is_caught() -> None:
    hung = {
        "off": [{"wall": 40.0}],
        "on": [{"wall": 41.0}],
        "sigterm": [
            {"error": "still running 120 s after SIGTERM", "seconds": 120.0, "name": "sigterm-0"}
        ],
    }
    store = _long_store()
    store["runs"][0]["steps"] = [1, 999_901]  # the last epoch was not logged
    long = bench.summarise_long(hung, store, 1_000_000)
    targets = _long_targets(long)
    assert targets["long: SIGTERM to exit (slowest)"] == "MISS"
    assert targets["long: interrupted runs KILLED with history and weights"] == "MISS"
    assert targets["long: first and last epoch logged, whole history kept"] == "MISS"


# -- the process mechanics -------------------------------------------------------------------
def test_run_command_times_a_command_and_keeps_its_lines() -> None:
    code = "import sys; print('one'); print('two', file=sys.stderr); sys.exit(3)"
    res = bench.run_command([sys.executable, "-c", code], keep_lines=True)
    assert res["error"].startswith("exit 3") and res["wall"] > 0 and res["peak_rss_mib"] > 1
    assert sorted(text for _, text in res["lines"]) == ["one", "two"]
    assert bench.run_command([sys.executable, "-c", "pass"], timeout=30).keys() == {
        "wall",
        "cpu",
        "peak_rss_mib",
    }
    # CPU time counts the children the command waited for; a sleep costs wall time, not CPU
    burn = "x = 0\nfor i in range(3 * 10**7): x += i"
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"
    busy = bench.run_command([sys.executable, "-c", spawn])
    idle = bench.run_command([sys.executable, "-c", "import time; time.sleep(1.0)"])
    assert busy["cpu"] > 0.5 and idle["wall"] >= 1.0 and idle["cpu"] < 0.5
    assert bench.run_command([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1) == {
        "error": "timed out after 1 s"
    }


def test_interrupt_after_waits_for_the_run_then_times_sigterm_to_exit(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    script = f"""
import signal, sqlite3, sys, time
signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.3), sys.exit(130)))
time.sleep(0.5)
con = sqlite3.connect({str(db)!r})
con.execute("CREATE TABLE runs (name TEXT)")
con.execute("INSERT INTO runs VALUES ('mine')")
con.commit()
while True:
    time.sleep(0.05)
"""
    res = bench.interrupt_after([sys.executable, "-c", script], db, "mine", wait=0.2, timeout=30)
    assert res["exit_code"] == 130 and 0.3 <= res["seconds"] < 5, res
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    never = bench.interrupt_after([sys.executable, "-c", "pass"], db, "other", wait=0.1)
    assert never["error"].startswith("exit 0 before its run appeared")

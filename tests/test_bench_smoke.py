"""`make bench` runs: the harness end to end on tiny sizes (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_writes_table_and_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--quiet",
            "--cases",
            "tutorial,large",
            "--impls",
            "ours,bare",
            "--tutorial-epochs",
            "50",
            "--large-n",
            "300",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "latest.json").read_text())
    md = (tmp_path / "latest.md").read_text()
    assert proc.stdout.strip() == md.strip()
    assert res["schema"] == "mlplab-bench/1"
    assert {"cpu", "cores", "versions", "blas", "env", "git"} <= set(res["machine"])

    tutorial = res["cases"]["tutorial"]
    assert set(tutorial["results"]) == {"ours", "bare"}
    for entry in tutorial["results"].values():
        assert entry["n"] == 1 and entry["median"] > 0 and "errors" not in entry
        assert {"min", "max", "spread", "samples", "final_rmse"} <= set(entry)
    # the engine and the hand-written loop train the same net to the same weights
    ours, bare = tutorial["results"]["ours"], tutorial["results"]["bare"]
    assert abs(ours["final_rmse"] - bare["final_rmse"]) < 1e-12

    large = res["cases"]["large"]
    assert large["n"] == 300 and large["flops_per_epoch"] > 0
    for dtype in ("float32", "float64"):
        assert large["peak_gflops"][dtype]["best"] > 0
        for entry in large["dtypes"][dtype].values():
            assert entry["n"] == 1 and entry["gflops"] > 0 and entry["peak_fraction"] > 0

    statuses = {t["target"]: t["status"] for t in res["targets"]}
    assert statuses["tutorial: ours / bare loop"] in {"PASS", "MISS"}
    assert statuses["tutorial: PyTorch / ours"] == "SKIP"  # not run here
    assert all(s in {"PASS", "MISS", "SKIP"} for s in statuses.values())
    for heading in ("### Tutorial", "### Large", "### Targets", "mlplab.nn.fit"):
        assert heading in md


def test_bench_rejects_unknown_case(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--cases",
            "nope",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "unknown case" in proc.stderr

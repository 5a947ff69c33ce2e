"""Tests of mlplab.report: summary rows, their order, the best child, the CSV and the table."""

from __future__ import annotations

import csv
import math
import random
import subprocess
import sys
from pathlib import Path

from mlplab.report import (
    ALWAYS,
    METRICS,
    ChildRecord,
    best_row,
    format_replicates,
    format_table,
    replicate_rows,
    summary_rows,
    write_summary_csv,
)

REASON = "diverged at epoch 4: loss=inf after the learning rate blew the weights up to 1e308"


def _children() -> list[ChildRecord]:
    """Five children in no order: failed, finished, killed, finished with an inf test RMSE
    (it diverged in the test), finished; the failed and killed ones have no test RMSE."""
    return [
        ChildRecord(
            "a" * 32,
            "lr=1",
            "FAILED",
            ["optimizer.lr=1"],
            {"epochs_run": 3.0},
            failure_reason=REASON,
        ),
        ChildRecord("b" * 32, "lr=0.1", "FINISHED", ["optimizer.lr=0.1"], {"test_rmse": 0.2}),
        ChildRecord("c" * 32, "lr=0.5", "KILLED", ["optimizer.lr=0.5"], {"epochs_run": 7.0}),
        ChildRecord("d" * 32, "lr=0.9", "FINISHED", ["optimizer.lr=0.9"], {"test_rmse": math.inf}),
        ChildRecord(
            "e" * 32,
            "lr=0.2",
            "FINISHED",
            ["optimizer.lr=0.2", "model.hidden=[4,4]"],
            {"test_rmse": 0.1, "test_accuracy": 0.75, "epochs_run": 50.0},
        ),
    ]


def test_replicates_give_each_config_its_mean_std_and_t_interval() -> None:
    """Per config across seeds: the mean, the sample std and mean ± t(0.975, n−1)·std/√n,
    with t from the printed table of Student's t (4 degrees of freedom: 2.7764) and from
    scipy.stats; failed and non-finite runs don't count, a lone seed has no spread."""
    from scipy.stats import t as student_t

    lr1 = [0.10, 0.12, 0.11, 0.15, 0.09]
    rows = [
        {"run_id": f"a{i}", "status": "FINISHED", "lr": "0.1", "seed": str(i), "test_rmse": v}
        for i, v in enumerate(lr1)
    ]
    rows += [
        {"run_id": "b0", "status": "FINISHED", "lr": "0.5", "seed": "0", "test_rmse": 0.05},
        {"run_id": "b1", "status": "FAILED", "lr": "0.5", "seed": "1", "test_rmse": 0.01},
        {"run_id": "b2", "status": "FINISHED", "lr": "0.5", "seed": "2", "test_rmse": math.nan},
        {"run_id": "c0", "status": "FAILED", "lr": "0.9", "seed": "0", "test_rmse": math.nan},
    ]
    best, other, failed = replicate_rows(rows, ["lr", "seed"])
    assert (best["lr"], best["n_seeds"], best["n_failed"], best["best_run_id"]) == (
        "0.5",
        1,
        2,
        "b0",
    )
    assert best["mean_test_rmse"] == 0.05 and math.isnan(best["std_test_rmse"])
    assert math.isnan(best["ci95_low"]) and math.isnan(best["ci95_high"])
    mean = sum(lr1) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in lr1) / 4)
    assert (other["lr"], other["n_seeds"], other["n_failed"], other["best_run_id"]) == (
        "0.1",
        5,
        0,
        "a4",
    )
    assert math.isclose(other["mean_test_rmse"], mean) and math.isclose(other["std_test_rmse"], std)
    half = other["ci95_high"] - other["mean_test_rmse"]
    assert math.isclose(other["mean_test_rmse"] - other["ci95_low"], half)
    assert math.isclose(half, 2.7764 * std / math.sqrt(5), rel_tol=1e-4)
    assert math.isclose(half, student_t.ppf(0.975, 4) * std / math.sqrt(5), rel_tol=1e-12)
    # a config none of whose seeds counts keeps its row, last, and says so
    assert (failed["lr"], failed["n_seeds"], failed["n_failed"], failed["best_run_id"]) == (
        "0.9",
        0,
        1,
        "",
    )
    assert math.isnan(failed["mean_test_rmse"])
    assert format_replicates([best, failed]).splitlines()[2].split()[:3] == ["0.9", "0", "1"]
    assert replicate_rows(rows, ["lr"]) == []  # no seed swept: no replicates


def test_rows_sorted_by_test_rmse_with_nan_and_failures_last() -> None:
    rows = summary_rows(_children(), ["optimizer.lr", "model.hidden"])
    assert [r["run_id"][0] for r in rows] == ["e", "b", "d", "a", "c"]  # NaN: input order
    assert [r["optimizer.lr"] for r in rows] == ["0.2", "0.1", "0.9", "1", "0.5"]
    assert [r["model.hidden"] for r in rows] == ["[4,4]", "", "", "", ""]
    assert [r["status"] for r in rows][-2:] == ["FAILED", "KILLED"]
    assert rows[0]["overrides"] == "optimizer.lr=0.2 model.hidden=[4,4]"
    # columns in order; test_accuracy because one child has it, no final_val_rmse
    expected = ["run_id", "run_name", "status", "optimizer.lr", "model.hidden", "overrides"]
    expected += [m for m in METRICS if m != "final_val_rmse"]
    assert list(rows[0]) == [*expected, "failure_reason"]
    assert all(list(r) == list(rows[0]) for r in rows)
    assert math.isnan(rows[1]["test_accuracy"]) and math.isnan(rows[0]["train_seconds"])
    assert rows[3]["failure_reason"] == REASON


def test_rows_without_children_or_optional_metrics() -> None:
    assert summary_rows([]) == []
    (row,) = summary_rows([ChildRecord("x", "x", "FINISHED", metrics={"test_rmse": 1.0})])
    assert [k for k in row if k.startswith(("test_", "final_", "epochs", "train_"))] == list(ALWAYS)


def test_best_row_is_the_lowest_finished_finite_test_rmse() -> None:
    rows = summary_rows(_children())
    best = best_row(rows)
    assert best is not None and best["run_id"] == "e" * 32
    # a FAILED child with a lower test RMSE is never the best; neither is an inf one
    failed = ChildRecord("f", "lr=2", "FAILED", [], {"test_rmse": 0.01}, failure_reason="x")
    best = best_row(summary_rows([*_children(), failed]))
    assert best is not None and best["run_id"] == "e" * 32
    assert best_row(summary_rows([failed, _children()[3]])) is None
    assert best_row([]) is None
    # equal test RMSEs: the first row wins
    twins = [ChildRecord(n, n, "FINISHED", [], {"test_rmse": 0.3}) for n in ("p", "q")]
    best = best_row(summary_rows(twins))
    assert best is not None and best["run_id"] == "p"


def test_csv_round_trips_floats_exactly(tmp_path: Path) -> None:
    rng = random.Random(0)
    floats = [0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308, -2.5e-17, math.inf, math.nan]
    floats += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-300, 300) for _ in range(20)]
    children = [
        ChildRecord(
            f"id{i}",
            'name, with "quotes"\nand a newline',
            "FINISHED",
            ["data.path=a,b.csv"],
            {"test_rmse": 0.5, "train_seconds": value},
        )
        for i, value in enumerate(floats)
    ]
    rows = summary_rows(children, ["data.path"])
    path = write_summary_csv(rows, tmp_path / "report" / "summary.csv")
    with path.open(newline="", encoding="utf-8") as f:
        header, *lines = list(csv.reader(f))
    assert header == list(rows[0])
    assert len(lines) == len(rows)
    for row, line in zip(rows, lines, strict=True):
        cells = dict(zip(header, line, strict=True))
        assert cells["run_name"] == row["run_name"] and cells["data.path"] == "a,b.csv"
        assert cells["test_mae"] == ""  # NaN
        seconds = row["train_seconds"]
        if math.isnan(seconds):
            assert cells["train_seconds"] == ""
        else:
            assert float(cells["train_seconds"]) == seconds  # bit for bit
    assert [float(line[header.index("test_rmse")]) for line in lines] == [0.5] * len(floats)


def test_csv_without_rows_has_a_header(tmp_path: Path) -> None:
    path = write_summary_csv([], tmp_path / "summary.csv")
    header = path.read_text(encoding="utf-8").splitlines()
    assert header == [
        ",".join(["run_id", "run_name", "status", "overrides", *ALWAYS, "failure_reason"])
    ]


def test_format_table() -> None:
    table = format_table(summary_rows(_children()[:2]))
    assert table.splitlines() == [
        "  run_id run_name   status test_rmse test_mae test_r2 final_train_rmse epochs_run"
        + " " * 47
        + "failure_reason",
        "bbbbbbbb   lr=0.1 FINISHED       0.2      NaN     NaN              NaN",
        "aaaaaaaa     lr=1   FAILED       NaN      NaN     NaN              NaN          3 "
        + REASON[:60],
    ]
    assert REASON[60:] not in table  # cut to 60 characters


def test_format_table_without_failures_or_rows() -> None:
    table = format_table(summary_rows(_children()[4:]))
    assert "failure_reason" not in table
    cells = ["eeeeeeee", "lr=0.2", "FINISHED", "0.1", "NaN", "NaN", "0.75", "NaN", "50"]
    assert table.splitlines()[1].split() == cells
    assert format_table([]) == "(no child runs)"


def test_report_imports_neither_pandas_nor_matplotlib() -> None:
    code = "import sys, mlplab.report\nassert not {'pandas', 'matplotlib'} & set(sys.modules)\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

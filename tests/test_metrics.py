"""The evaluation metrics against scikit-learn's definitions, written out (tests/reference.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import reference

from mlplab.metrics import accuracy, evaluate_split, mae, r2, rmse


def _pair(seed: int, n: int = 30, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, k)) * [1.0, 5.0, 0.1][:k]
    return t, t + rng.normal(size=(n, k)) * 0.3


@pytest.mark.parametrize("seed", range(4))
def test_regression_metrics_equal_their_definitions(seed: int) -> None:
    t, y = _pair(seed)
    assert rmse(t, y) == pytest.approx(reference.rmse(t, y), rel=1e-13)
    assert mae(t, y) == pytest.approx(reference.mae(t, y), rel=1e-13)
    assert r2(t, y) == pytest.approx(reference.r2(t, y), rel=1e-13)


def test_metrics_of_a_small_case_by_hand() -> None:
    t = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 4.0]])
    y = np.array([[1.0, 1.0], [2.0, 0.0], [5.0, 4.0]])
    # errors (0, -1), (0, 0), (-2, 0): squares 0, 1, 0, 0, 4, 0
    assert rmse(t, y) == pytest.approx(np.sqrt(5 / 6), rel=1e-15)
    assert mae(t, y) == pytest.approx(3 / 6, rel=1e-15)
    # output 1: SS_res 4, SS_tot 2 -> -1; output 2: SS_res 1, SS_tot 32/3 -> 1 - 3/32
    assert r2(t, y) == pytest.approx((-1 + 1 - 3 / 32) / 2, rel=1e-15)


def test_r2_of_a_constant_output_is_one_if_exact_else_zero() -> None:
    """scikit-learn's r2_score (force_finite=True) for an output whose targets are constant."""
    t = np.array([[2.0, 1.0], [2.0, 2.0], [2.0, 4.0]])
    exact_first = np.array([[2.0, 1.0], [2.0, 2.0], [2.0, 3.0]])
    off_first = exact_first.copy()
    off_first[0, 0] += 0.5
    second = 1 - 1 / (14 / 3)  # SS_res 1, SS_tot 14/3
    assert r2(t, exact_first) == pytest.approx((1.0 + second) / 2, rel=1e-15)
    assert r2(t, off_first) == pytest.approx((0.0 + second) / 2, rel=1e-15)
    assert r2(t, off_first) == pytest.approx(reference.r2(t, off_first), rel=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by the zero spread
        assert r2(t[:, :1], t[:, :1]) == 1.0 and r2(t[:, :1], off_first[:, :1]) == 0.0


def test_a_perfect_and_a_mean_prediction() -> None:
    t, _ = _pair(9)
    assert (rmse(t, t), mae(t, t), r2(t, t)) == (0.0, 0.0, 1.0)
    mean = np.broadcast_to(t.mean(axis=0), t.shape)
    assert r2(t, mean) == pytest.approx(0.0, abs=1e-15)


def test_metrics_of_float32_predictions_are_taken_in_float64() -> None:
    t, y = _pair(3)
    y32, t32 = y.astype(np.float32), t.astype(np.float32)
    assert rmse(t, y32) == pytest.approx(reference.rmse(t, y32.astype(np.float64)), rel=1e-12)
    t64, y64 = t32.astype(np.float64), y32.astype(np.float64)
    assert rmse(t32, y32) == pytest.approx(reference.rmse(t64, y64), rel=1e-13)
    assert mae(t32, y32) == pytest.approx(reference.mae(t64, y64), rel=1e-13)
    assert r2(t.astype(np.float32), y) == pytest.approx(
        reference.r2(t.astype(np.float32).astype(np.float64), y), rel=1e-12
    )


def test_accuracy_is_the_share_of_arg_max_hits() -> None:
    t = np.eye(3)[[0, 1, 2, 2, 1]]
    y = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6], [0.5, 0.1, 0.4], [0.3, 0.4, 0.3]]
    )
    assert accuracy(t, y) == pytest.approx(3 / 5) == reference.accuracy(t, y)


@pytest.mark.parametrize("classification", [False, True])
def test_evaluate_split_reports_every_metric(classification: bool) -> None:
    t = np.eye(2)[[0, 1, 1, 0]]
    y = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]])
    got = evaluate_split(t, y, classification)
    expected = {"rmse": reference.rmse(t, y), "mae": reference.mae(t, y), "r2": reference.r2(t, y)}
    if classification:
        expected["accuracy"] = 0.5
    assert got == pytest.approx(expected, rel=1e-14)
    assert set(got) == set(expected)

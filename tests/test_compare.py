"""`make rerun`'s account of a DIFFER: config keys, weights and the history (mlplab.compare)."""

from __future__ import annotations

import warnings

import numpy as np

from mlplab.compare import config_differences, history_departure, weight_differences


def test_config_differences_name_each_changed_key_but_not_where_it_is_recorded() -> None:
    recorded = {
        "seed": 0,
        "optimizer.lr": 0.5,
        "model.hidden": "[2]",
        "tracking.uri": "sqlite:////a.db",
        "tracking.experiment": "x",
        "hydra.job.num": 0,
        "data.name": "tutorial",
    }
    rerun = {
        "seed": 0,
        "optimizer.lr": 0.1,
        "model.hidden": "[2]",
        "tracking.uri": "sqlite:////b.db",
        "hydra.job.num": 3,
        "data.name": "tutorial",
        "train.patience": 5,
    }
    assert config_differences(recorded, rerun) == [
        "optimizer.lr: 0.5 → 0.1",
        "train.patience: (missing) → 5",
    ]
    assert config_differences(recorded, dict(recorded)) == []


def test_weight_differences_give_the_largest_change_of_each_matrix() -> None:
    a = [np.zeros((3, 2)), np.ones((3, 1))]
    b = [np.zeros((3, 2)), np.ones((3, 1))]
    b[0][1, 1] = -0.25
    b[0][2, 0] = 0.125
    b[1][0, 0] = 1 + 3e-9
    assert weight_differences(a, b) == ["W0: max |Δw| = 0.25", "W1: max |Δw| = 3e-09"]
    assert weight_differences(a, a) == ["W0: max |Δw| = 0", "W1: max |Δw| = 0"]


def test_weight_differences_that_cannot_be_measured() -> None:
    a = [np.zeros((3, 2)), np.zeros((3, 1))]
    assert weight_differences(a, a[:1]) == ["2 weight matrices recorded, 1 in the rerun"]
    assert weight_differences(a, [np.zeros((3, 2)), np.zeros((4, 1))]) == [
        "W0: max |Δw| = 0",
        "W1: shape (3, 1) recorded, (4, 1) in the rerun",
    ]
    assert weight_differences(a, [np.zeros((2, 2)), np.full((3, 1), 0.5)]) == [
        "W0: shape (3, 2) recorded, (2, 2) in the rerun",
        "W1: max |Δw| = 0.5",
    ]
    empty = [np.zeros((0, 2))]
    assert weight_differences(empty, empty) == ["W0: max |Δw| = 0"]
    nan = [np.array([[np.nan, 1.0]])]
    assert weight_differences(nan, [np.array([[np.nan, 1.5]])]) == ["W0: max |Δw| = 0.5"]
    # a diverged run's weights (inf, NaN): compared without a warning
    inf = [np.array([[np.inf, np.nan, 2.0]])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert weight_differences(inf, [inf[0].copy()]) == ["W0: max |Δw| = 0"]
        assert weight_differences(inf, [np.array([[np.inf, 1.0, 2.0]])]) == ["W0: max |Δw| = nan"]
        assert (
            history_departure(np.array([0.5, np.inf, np.nan]), np.array([0.5, np.inf, np.nan]))
            is None
        )
    # float32 against float64: measured in float64
    x32 = [np.array([[0.1]], np.float32)]
    assert weight_differences(x32, [np.array([[0.1]])]) == ["W0: max |Δw| = 1.49e-09"]


def test_history_departure_is_the_first_epoch_that_differs() -> None:
    h = np.array([0.5, 0.4, 0.3, 0.2])
    assert history_departure(h, h.copy()) is None
    other = h.copy()
    other[2] = 0.30000000000000004
    assert history_departure(h, other) == 3  # epochs count from 1
    other[0] = 0.6
    assert history_departure(h, other) == 1
    # one history is longer: they depart where the shorter ends
    assert history_departure(h, h[:3]) == 4
    assert history_departure(h[:2], h) == 3
    assert history_departure(h[:0], h[:0]) is None
    # the points MLflow kept of a thinned history (epochs 1, 3, 4): epoch 2 is not compared
    kept, steps = h[[0, 2, 3]], [1, 3, 4]
    assert history_departure(kept, np.array([0.5, 9.0, 0.3, 0.2]), steps) is None
    assert history_departure(kept, np.array([0.5, 0.4, 0.3, 0.1]), steps) == 4
    assert history_departure(kept, h[:3], steps) == 4
    assert history_departure(kept[:2], h, steps[:2]) == 4

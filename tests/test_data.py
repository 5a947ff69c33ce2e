"""Generators are deterministic in the seed, splits are right, CSV input is checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlplab.config import DataConfig
from mlplab.data import SOURCES, generate, split_sizes
from mlplab.errors import DataError

IRIS = Path(__file__).resolve().parents[1] / "data" / "iris.csv"


@pytest.mark.parametrize("name", sorted(n for n in SOURCES if n != "csv"))
def test_generators_are_deterministic(name):
    task = "classification" if name in ("spiral", "moons") else "regression"
    cfg = DataConfig(
        name=name,
        task=task,
        n_samples=60,
        n_features=1 if name == "sine" else 2,
        n_outputs=1 if name in ("sine", "xor") else 2,
        n_classes=3,
    )
    a = generate(cfg, np.random.default_rng(4))
    b = generate(cfg, np.random.default_rng(4))
    c = generate(cfg, np.random.default_rng(5))
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.Y_test, b.Y_test)
    assert not np.array_equal(a.X_train, c.X_train)
    assert a.X_train.shape[0] + a.X_test.shape[0] == 60
    if task == "classification":
        assert set(np.unique(a.Y_train)) <= {0.0, 1.0}
        np.testing.assert_array_equal(a.Y_train.sum(axis=1), 1.0)


def test_tutorial_data_follow_the_spec():
    d = generate(DataConfig(test_fraction=0.0), np.random.default_rng(0))
    x, y = d.X_train, d.Y_train
    assert x.shape == (50, 2) and y.shape == (50, 2) and x.min() >= 0 and x.max() < 1
    sig = lambda z: 1 / (1 + np.exp(-z))
    # y = sig(sig(x) + 0.1 u1) + 0.1 u2 with scalar u1, u2: recover them and check
    u2 = None
    for u1 in np.linspace(0, 1, 100001):
        resid = y - sig(sig(x) + 0.1 * u1)
        if np.ptp(resid) < 1e-4:
            u2 = resid.mean() / 0.1
            break
    assert u2 is not None and 0 <= u2 < 1


def test_regression_generator_scales_to_the_large_case():
    cfg = DataConfig(
        name="regression", n_samples=100_000, n_features=64, n_outputs=8, test_fraction=0.0
    )
    d = generate(cfg, np.random.default_rng(0), "float32")
    assert d.X_train.shape == (100_000, 64) and d.Y_train.shape == (100_000, 8)
    assert d.X_train.dtype == np.float32


def test_splits():
    assert split_sizes(50, 0.2, 0.0) == (40, 0, 10)
    assert split_sizes(10, 0.2, 0.1) == (7, 1, 2)
    with pytest.raises(DataError, match="no training sample"):
        split_sizes(2, 0.5, 0.4)


def test_csv_standardisation_is_fitted_on_training_rows_only():
    cfg = DataConfig(
        name="csv",
        task="classification",
        path=str(IRIS),
        targets=["species"],
        standardize=True,
        test_fraction=0.3,
        n_classes=3,
    )
    d = generate(cfg, np.random.default_rng(0))
    np.testing.assert_allclose(d.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(d.X_train.std(axis=0), 1, atol=1e-12)
    assert abs(d.X_test.mean(axis=0)).max() > 1e-3  # test rows are not re-centred
    assert d.Y_train.shape[1] == 3 and d.target_names == [
        "species=setosa",
        "species=versicolor",
        "species=virginica",
    ]


def _csv(tmp_path: Path, text: str) -> str:
    p = tmp_path / "d.csv"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        (None, {}, "file not found"),
        ("", {}, "empty"),
        ("a,b,y\n1,2,3\n4,x,6\n", {}, "column 'b' is not numeric"),
        ("a,b,y\n1,2,3\n4,,6\n", {}, "column 'b' has a missing value"),
        ("a,b,y\n1,2,3\n4,5,6\n", {"targets": ["z"]}, "column 'z' is not in"),
        ("a,b,y\n1,2,3\n4,5,6\n", {"features": ["a", "q"]}, "column 'q' is not in"),
        ("a,b,y\n", {}, "no data rows"),
    ],
)
def test_bad_csv_files_name_the_file_and_column(tmp_path, text, kwargs, match):
    path = str(tmp_path / "missing.csv") if text is None else _csv(tmp_path, text)
    cfg = DataConfig(name="csv", path=path, **kwargs)
    with pytest.raises(DataError, match=match) as info:
        generate(cfg, np.random.default_rng(0))
    assert Path(path).name in str(info.value) or "column" in str(info.value)

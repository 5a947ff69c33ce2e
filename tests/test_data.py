"""Generators are deterministic in the seed, splits are right, CSV input is checked."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq

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
    """SPEC §1: x ~ U[0,1]², y = σ(σ(x) + 0.1·u1) + 0.1·u2 with u1, u2 single draws from
    [0, 1): recover u1 from two samples, then every residual is the same 0.1·u2."""
    d = generate(DataConfig(test_fraction=0.0), np.random.default_rng(0))
    x, y = d.X_train, d.Y_train
    assert x.shape == (50, 2) and y.shape == (50, 2) and x.min() >= 0 and x.max() < 1
    sig = lambda z: 1 / (1 + np.exp(-z))
    resid = lambda u1: y - sig(sig(x) + 0.1 * u1)
    # two entries' residuals are equal only at the true u1 (σ' falls on σ(x) + 0.1·u1 > 0)
    a, b = np.argmin(x), np.argmax(x)
    u1 = brentq(lambda u: resid(u).flat[a] - resid(u).flat[b], 0.0, 1.0, xtol=1e-15)
    assert 0 <= u1 < 1
    assert np.ptp(resid(u1)) < 1e-12
    u2 = resid(u1).mean() / 0.1
    assert 0 <= u2 < 1


def test_regression_generator_scales_to_the_large_case():
    cfg = DataConfig(
        name="regression", n_samples=100_000, n_features=64, n_outputs=8, test_fraction=0.0
    )
    d = generate(cfg, np.random.default_rng(0), "float32")
    assert d.X_train.shape == (100_000, 64) and d.Y_train.shape == (100_000, 8)
    assert d.X_train.dtype == np.float32


@pytest.mark.parametrize(
    ("n", "test", "val", "sizes"),
    [
        (50, 0.2, 0.0, (40, 0, 10)),
        (10, 0.2, 0.1, (7, 1, 2)),
        (3, 0.1, 0.0, (2, 0, 1)),  # a share that rounds to no sample still gets one
        (3, 0.0, 0.1, (2, 1, 0)),
        (2, 0.5, 0.0, (1, 0, 1)),  # one training sample is enough
        (100, 0.0, 0.0, (100, 0, 0)),
        (9, 0.25, 0.25, (5, 2, 2)),
    ],
)
def test_split_sizes(n, test, val, sizes):
    assert split_sizes(n, test, val) == sizes


def test_a_split_without_training_samples_is_refused():
    with pytest.raises(DataError) as info:
        split_sizes(2, 0.5, 0.4)
    assert str(info.value) == (
        "data: 2 samples leave no training sample after test_fraction=0.5 and val_fraction=0.4"
    )


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
    ("text", "kwargs", "match", "column"),
    [
        (None, {}, "file not found", None),
        ("", {}, "the file is empty", None),
        ("a,b,y\n1,2,3\n4,x,6\n", {}, "column 'b' is not numeric \\(row 3: 'x'\\)", "b"),
        ("a,b,y\n1,2,3\n4,,6\n", {}, "column 'b' has a missing value \\(NaN\\) at row 3", "b"),
        ("a,b,y\n1,2,3\n4,inf,6\n", {}, "column 'b' has an infinite value", "b"),
        ("a,b,y\n1,2,3\n4,5,6\n", {"targets": ["z"]}, "data.targets: column 'z' is not in", "z"),
        ("a,b,y\n1,2,3\n4,5,6\n", {"features": ["a", "q"]}, "data.features: column 'q'", "q"),
        ("a,b,y\n", {}, "the file has no data rows", None),
    ],
)
def test_bad_csv_files_name_the_file_and_column(tmp_path, text, kwargs, match, column):
    path = str(tmp_path / "missing.csv") if text is None else _csv(tmp_path, text)
    cfg = DataConfig(name="csv", path=path, **kwargs)
    with pytest.raises(DataError, match=match) as info:
        generate(cfg, np.random.default_rng(0))
    msg = str(info.value)
    assert repr(path) in msg  # the whole path, as given
    if column is not None:
        assert f"column {column!r}" in msg


def test_csv_errors_past_the_columns(tmp_path):
    """The remaining refusals of a CSV file, each one line naming the key or the file."""

    def refusal(text: str, **kwargs) -> str:
        path = _csv(tmp_path, text)
        with pytest.raises(DataError) as info:
            generate(DataConfig(name="csv", path=path, **kwargs), np.random.default_rng(0))
        return str(info.value).replace(repr(path), "<file>")

    assert refusal("a,b\n1,2\n3,4,5\n") == (
        "data.path=<file>: cannot be read as CSV "
        "(Error tokenizing data. C error: Expected 2 fields in line 3, saw 3)"
    )
    assert refusal("a\n1\n2\n") == (
        "data.path=<file>: one column only ('a'): it needs a feature and a target column, "
        "separated by commas"
    )
    assert refusal("a,b\n1,2\n", targets=["a", "b"]) == (
        "data.features: no feature columns left in <file>"
    )
    assert refusal("a,y,z\n1,2,3\n4,5,6\n", features=["a", "z", "y"], targets=["y", "z"]) == (
        "data.features: column 'y' is also a target"
    )
    assert refusal("a,y\n1,2\n3,x\n") == "data.path=<file>: column 'y' is not numeric (row 3: 'x')"
    assert refusal("1,2,3\n4,5,6\n") == (
        "data.path=<file>: its first row is numbers (1, 2, 3), not the header row of column "
        "names it needs (or name its columns: data.targets=...)"
    )
    cls = {"task": "classification"}
    assert refusal("a,b,c\n1,2,3\n", targets=["b", "c"], **cls) == (
        "data.targets: classification takes exactly one label column"
    )
    assert refusal("a,label\n1,x\n2,\n3,y\n", **cls) == (
        "data.path=<file>: column 'label' has a missing label"
    )
    assert refusal("a,label\n1,x\n2,x\n", **cls) == (
        "data.targets: column 'label' has fewer than 2 classes"
    )
    with pytest.raises(DataError) as info:  # no path (validation says so first)
        generate(DataConfig(name="csv", path=None), np.random.default_rng(0))
    assert str(info.value) == (
        "data.path='.': cannot be read as CSV ([Errno 21] Is a directory: '.')"
    )


def _rows(*arrays: np.ndarray) -> list[tuple[float, ...]]:
    return sorted(map(tuple, np.hstack(arrays)))


def test_a_regression_csv_is_read_as_written(tmp_path):
    """Targets default to the last column, features to the others; every row lands in exactly
    one split, unchanged."""
    rng = np.random.default_rng(1)
    table = np.round(rng.normal(size=(12, 3)), 3)
    text = "a,b,y\n" + "".join(f"{a},{b},{y}\n" for a, b, y in table)
    d = generate(DataConfig(name="csv", path=_csv(tmp_path, text)), np.random.default_rng(0))
    assert (d.feature_names, d.target_names, d.task) == (["a", "b"], ["y"], "regression")
    assert [len(d.X_train), len(d.X_val), len(d.X_test)] == [10, 0, 2]
    got = _rows(np.vstack([d.X_train, d.X_test]), np.vstack([d.Y_train, d.Y_test]))
    assert got == _rows(table)
    spaced = DataConfig(name="csv", path=_csv(tmp_path, text.replace(",", ", ")), features=["b"])
    assert generate(spaced, np.random.default_rng(0)).feature_names == ["b"]  # not " b"
    chosen = DataConfig(name="csv", path=_csv(tmp_path, text), targets=["a"], test_fraction=0.0)
    d = generate(chosen, np.random.default_rng(0))
    assert (d.feature_names, d.target_names) == (["b", "y"], ["a"])
    assert _rows(d.X_train, d.Y_train) == _rows(table[:, 1:], table[:, :1])


def test_class_labels_are_one_hot_in_sorted_order(tmp_path):
    """Two classes suffice; labels of any type are ordered as text (9 after 100)."""
    text = "a,label\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate([9, 10, 100, 9, 10]))
    cfg = DataConfig(name="csv", path=_csv(tmp_path, text), task="classification")
    d = generate(replace(cfg, test_fraction=0.0), np.random.default_rng(0))
    assert d.target_names == ["label=10", "label=100", "label=9"]
    by_feature = {int(x[0]): list(y) for x, y in zip(d.X_train, d.Y_train, strict=True)}
    assert by_feature == {0: [0, 0, 1], 1: [1, 0, 0], 2: [0, 1, 0], 3: [0, 0, 1], 4: [1, 0, 0]}
    two = "a,label\n1,x\n2,y\n3,x\n"
    d = generate(
        replace(cfg, path=_csv(tmp_path, two), test_fraction=0.0), np.random.default_rng(0)
    )
    assert d.target_names == ["label=x", "label=y"] and d.Y_train.shape == (3, 2)


def test_standardisation_records_the_training_scaling(tmp_path):
    """Standardised features: (x − mean) / std of the training rows (a constant column: std 1);
    the scaling is kept, and undoing it gives the rows of the file back."""
    rng = np.random.default_rng(2)
    table = np.column_stack([rng.normal(5, 2, 30), np.full(30, 7.0), rng.normal(0, 1, 30)])
    text = "a,c,y\n" + "".join(f"{a:.17g},{c:.17g},{y:.17g}\n" for a, c, y in table)
    cfg = DataConfig(name="csv", path=_csv(tmp_path, text), standardize=True)
    d = generate(cfg, np.random.default_rng(0))
    mean, std = np.asarray(d.scaling["mean"]), np.asarray(d.scaling["std"])
    assert set(d.scaling) == {"mean", "std"} and std[1] == 1.0 and mean[1] == 7.0
    raw_train = d.X_train * std + mean
    np.testing.assert_allclose(mean, raw_train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std[0], raw_train[:, 0].std(), rtol=1e-12)
    np.testing.assert_array_equal(d.X_train[:, 1], 0.0)
    raw = np.vstack([raw_train, d.X_test * std + mean])
    np.testing.assert_allclose(
        np.array(_rows(raw, np.vstack([d.Y_train, d.Y_test]))), np.array(_rows(table)), rtol=1e-12
    )
    plain = generate(replace(cfg, standardize=False), np.random.default_rng(0))
    assert plain.scaling == {}


# -- the generators ----------------------------------------------------------------------------
NAMES = {
    "tutorial": (["x1", "x2"], ["y1", "y2"]),
    "xor": (["x1", "x2"], ["y1"]),
    "sine": (["x1"], ["y1"]),
    "spiral": (["x1", "x2"], ["class1", "class2", "class3"]),
    "moons": (["x1", "x2"], ["class1", "class2"]),
    "regression": (["x1", "x2", "x3"], ["y1", "y2"]),
}


def _config(name: str, n: int = 400, noise: float = 0.0) -> DataConfig:
    shapes = {"sine": (1, 1), "xor": (2, 1), "regression": (3, 2)}.get(name, (2, 2))
    task = "classification" if name in ("spiral", "moons") else "regression"
    n_classes = 3 if name == "spiral" else 2
    return DataConfig(
        name=name,
        task=task,
        n_samples=n,
        n_features=shapes[0],
        n_outputs=shapes[1],
        n_classes=n_classes,
        noise=noise,
        test_fraction=0.0,
    )


@pytest.mark.parametrize("name", sorted(NAMES))
def test_generators_name_their_columns(name):
    d = generate(_config(name, n=30), np.random.default_rng(0))
    assert (d.feature_names, d.target_names) == NAMES[name]
    assert d.X_train.shape == (30, len(NAMES[name][0]))
    assert d.Y_train.shape == (30, len(NAMES[name][1]))
    assert d.task == _config(name).task


def _make(name: str, noise: float, n: int = 2000, seed: int = 3):
    """The generator's samples in the order drawn (before the split)."""
    return SOURCES[name].make(_config(name, n, noise), np.random.default_rng(seed))


def test_noise_free_generators_follow_their_formulas():
    sig = lambda z: 1 / (1 + np.exp(-z))
    x, y, *_ = _make("tutorial", 0.0)
    np.testing.assert_allclose(y, sig(sig(x)), rtol=1e-15)
    # xor: the four corners of the unit square, y = x1 XOR x2
    x, y, *_ = _make("xor", 0.0)
    assert set(map(tuple, x)) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    np.testing.assert_array_equal(y[:, 0], np.logical_xor(x[:, 0], x[:, 1]))
    # sine: x ~ U[−π, π], y = sin(x)
    x, y, *_ = _make("sine", 0.0)
    assert -np.pi <= x.min() < -3.0 and 3.0 < x.max() <= np.pi
    np.testing.assert_array_equal(y, np.sin(x))
    # spiral: radius r ~ U[0, 1); arm k of K starts at angle k·2π/K and turns 4 radians to the rim
    x, y, *_ = _make("spiral", 0.0)
    r, arm = np.hypot(x[:, 0], x[:, 1]), y.argmax(axis=1)
    assert np.bincount(arm).tolist() == [667, 667, 666] and r.min() < 0.01 and 0.99 < r.max() < 1
    turn = np.arctan2(x[:, 0], x[:, 1]) - (arm * 2 * np.pi / 3 + 4 * r)
    np.testing.assert_allclose(np.cos(turn), 1.0, atol=1e-9)
    # moons: the upper unit half circle, and the lower one shifted by (1, 0.5)
    x, y, *_ = _make("moons", 0.0)
    upper, lower = x[y[:, 0] == 1], x[y[:, 1] == 1]
    assert len(upper) == len(lower) == 1000
    np.testing.assert_allclose(np.hypot(*upper.T), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.hypot(1 - lower[:, 0], 0.5 - lower[:, 1]), 1.0, rtol=1e-12)
    angles = np.arctan2(upper[:, 1], upper[:, 0])
    assert angles.min() >= 0 and angles.min() < 0.01 and np.pi - 0.01 < angles.max() <= np.pi
    assert lower[:, 1].max() <= 0.5 + 1e-12
    # regression: X ~ N(0, 1), y = tanh(X·A)·B, A ~ N(0, 1/d), B ~ N(0, 1/h)
    cfg = replace(_config("regression", 20000), n_features=8, n_outputs=8, teacher_hidden=32)
    X, Y, *_ = SOURCES["regression"].make(cfg, np.random.default_rng(4))
    assert abs(X.mean()) < 0.02 and X.std() == pytest.approx(1.0, rel=0.02)
    z = np.linspace(-8, 8, 160001)  # E[tanh(z)²] for z ~ N(0, 1): ≈ 0.394
    expected = np.sum(np.tanh(z) ** 2 * np.exp(-(z**2) / 2)) * (z[1] - z[0]) / np.sqrt(2 * np.pi)
    assert 0.6 * expected < Y.var(axis=0).mean() < 1.5 * expected


@pytest.mark.parametrize("name", ["xor", "sine", "spiral", "moons", "regression"])
def test_generator_noise_is_gaussian_with_the_configured_scale(name):
    """The same seed with noise 0.05 and 0: the difference is 0.05·N(0, 1), drawn afresh for
    every value (for the spiral it turns the angle)."""
    clean, noisy = _make(name, 0.0), _make(name, 0.05)
    if name == "spiral":
        diff = np.arctan2(noisy[0][:, 0], noisy[0][:, 1]) - np.arctan2(*clean[0].T)
        diff = np.angle(np.exp(1j * diff))
        np.testing.assert_allclose(np.hypot(*noisy[0].T), np.hypot(*clean[0].T), rtol=1e-12)
    elif name in ("sine", "regression"):
        diff = noisy[1] - clean[1]
        np.testing.assert_array_equal(noisy[0], clean[0])
    else:
        diff = noisy[0] - clean[0]
        np.testing.assert_array_equal(noisy[1], clean[1])
    assert diff.std() == pytest.approx(0.05, rel=0.1) and abs(diff.mean()) < 0.01
    assert np.abs(diff).max() < 0.05 * 6  # Gaussian tails
    assert len(np.unique(np.round(diff, 12))) > 0.9 * diff.size


def test_a_generator_giving_non_finite_values_is_refused():
    with pytest.raises(DataError) as info:
        generate(_config("sine", noise=np.inf), np.random.default_rng(0))
    assert str(info.value) == "data.name=sine: the data contain NaN or infinite values"


@pytest.mark.parametrize("column", ["a", "y"])
def test_a_value_beyond_the_training_dtype_is_refused(tmp_path, column):
    """Found by the CSV fuzzer: 3.4028235677973366e38 is finite in float64 but becomes inf in
    float32. It is refused for float32 (features or targets) and read as written in float64;
    the largest float32 itself is accepted."""
    big = "3.4028235677973366e+38"
    rows = {"a": f"{big},0\n1,1\n", "y": f"0,{big}\n1,1\n"}[column]
    cfg = DataConfig(name="csv", path=_csv(tmp_path, "a,y\n" + rows), test_fraction=0.0)
    with warnings.catch_warnings(), pytest.raises(DataError) as info:
        warnings.simplefilter("error")  # one DataError, no overflow warning on the way
        generate(cfg, np.random.default_rng(0), "float32")
    assert str(info.value) == (
        "data.name=csv: a value is beyond the range of train.dtype=float32 (±3.4028235e+38)"
    )
    d = generate(cfg, np.random.default_rng(0), "float64")
    assert float(big) in np.concatenate([d.X_train.ravel(), d.Y_train.ravel()])
    edge = f"{float(np.finfo(np.float32).max)!r}"
    ok = DataConfig(name="csv", path=_csv(tmp_path, f"a,y\n{edge},0\n1,1\n"), test_fraction=0)
    d = generate(ok, np.random.default_rng(0), "float32")
    assert np.isfinite(d.X_train).all() and np.finfo(np.float32).max in d.X_train


def test_the_tutorial_maps_each_input_to_one_output():
    with pytest.raises(DataError) as info:
        generate(DataConfig(n_outputs=3), np.random.default_rng(0))
    assert str(info.value) == (
        "data.n_outputs=3 is not allowed for data.name=tutorial: the tutorial maps each input "
        "to one output (n_outputs = n_features = 2)"
    )


def test_every_sample_lands_in_exactly_one_split():
    """A seeded permutation: train, validation and test rows together are the generated rows,
    each once, with its own targets."""
    cfg = replace(_config("regression", n=40), test_fraction=0.25, val_fraction=0.2)
    d = generate(cfg, np.random.default_rng(5))
    assert [len(d.X_train), len(d.X_val), len(d.X_test)] == [22, 8, 10]
    X, Y, *_ = SOURCES["regression"].make(cfg, np.random.default_rng(5))
    parts = [(d.X_train, d.Y_train), (d.X_val, d.Y_val), (d.X_test, d.Y_test)]
    assert _rows(np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])) == _rows(X, Y)
    assert _rows(d.X_train, d.Y_train) != _rows(X[:22], Y[:22])  # shuffled, not cut in order
    for a in (d.X_train, d.Y_train, d.X_val, d.Y_val, d.X_test, d.Y_test):
        assert a.dtype == np.float64 and a.flags.c_contiguous
    assert d.scaling == {} and d.task == "regression"

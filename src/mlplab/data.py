"""Data: the generators, CSV input, and the train/validation/test split.

Every generator takes the data config and a ``np.random.Generator`` and returns
(X, Y, feature names, target names); classification targets are one-hot. The split is a
seeded permutation; CSV standardisation is fitted on the training rows only.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from mlplab.errors import DataError

Array = np.ndarray
Generated = tuple[Array, Array, list[str], list[str]]
TASKS = ("regression", "classification")


class DataParams(Protocol):
    """What the generators read (the config's ``data`` node has these keys)."""

    name: str
    task: str
    n_samples: int
    n_features: int
    n_outputs: int
    n_classes: int
    noise: float
    teacher_hidden: int
    test_fraction: float
    val_fraction: float
    standardize: bool
    path: str | None
    features: list[str] | None
    targets: list[str] | None


@dataclass
class Dataset:
    """Split arrays ready for the network, with their column names."""

    X_train: Array
    Y_train: Array
    X_val: Array
    Y_val: Array
    X_test: Array
    Y_test: Array
    feature_names: list[str]
    target_names: list[str]
    task: str = "regression"
    scaling: dict[str, list[float]] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Number of input columns."""
        return self.X_train.shape[1]

    @property
    def n_outputs(self) -> int:
        """Number of output columns (classes, for classification)."""
        return self.Y_train.shape[1]


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i + 1}" for i in range(n)]


def _one_hot(labels: Array, n_classes: int) -> Array:
    return np.eye(n_classes)[labels]


def _sigmoid(z: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-z))


def tutorial(cfg: DataParams, rng: np.random.Generator) -> Generated:
    """SPEC §1: x ~ U[0,1]^d, y = sigmoid(sigmoid(x) + noise·u1) + noise·u2, u1, u2 scalars."""
    x = rng.random((cfg.n_samples, cfg.n_features))
    u1, u2 = rng.random(), rng.random()
    y = _sigmoid(_sigmoid(x) + cfg.noise * u1) + cfg.noise * u2
    if cfg.n_outputs != cfg.n_features:
        raise DataError(
            f"data.n_outputs={cfg.n_outputs} is not allowed for data.name=tutorial: "
            "the tutorial maps each input to one output "
            f"(n_outputs = n_features = {cfg.n_features})"
        )
    return x, y, _names("x", cfg.n_features), _names("y", cfg.n_outputs)


def xor(cfg: DataParams, rng: np.random.Generator) -> Generated:
    """The four corners of the unit square with Gaussian jitter; y = x1 XOR x2 (0 or 1)."""
    corners = rng.integers(0, 2, size=(cfg.n_samples, 2))
    x = corners + cfg.noise * rng.standard_normal((cfg.n_samples, 2))
    y = (corners[:, :1] ^ corners[:, 1:]).astype(float)
    return x, y, ["x1", "x2"], ["y1"]


def sine(cfg: DataParams, rng: np.random.Generator) -> Generated:
    """1-D regression: x ~ U[−π, π], y = sin(x) + noise·N(0, 1)."""
    x = rng.uniform(-np.pi, np.pi, size=(cfg.n_samples, 1))
    y = np.sin(x) + cfg.noise * rng.standard_normal(x.shape)
    return x, y, ["x1"], ["y1"]


def spiral(cfg: DataParams, rng: np.random.Generator) -> Generated:
    """2-D classification: ``n_classes`` interleaved spiral arms."""
    k = cfg.n_classes
    labels = np.arange(cfg.n_samples) % k
    r = rng.random(cfg.n_samples)
    theta = labels * (2 * np.pi / k) + r * 4.0 + cfg.noise * rng.standard_normal(cfg.n_samples)
    x = np.column_stack([r * np.sin(theta), r * np.cos(theta)])
    return x, _one_hot(labels, k), ["x1", "x2"], _names("class", k)


def moons(cfg: DataParams, rng: np.random.Generator) -> Generated:
    """2-D classification: two interleaving half circles (as scikit-learn's make_moons)."""
    labels = np.arange(cfg.n_samples) % 2
    t = rng.uniform(0, np.pi, cfg.n_samples)
    x = np.where(
        labels[:, None] == 0,
        np.column_stack([np.cos(t), np.sin(t)]),
        np.column_stack([1 - np.cos(t), 0.5 - np.sin(t)]),
    )
    x = x + cfg.noise * rng.standard_normal(x.shape)
    return x, _one_hot(labels, 2), ["x1", "x2"], ["class1", "class2"]


def regression(cfg: DataParams, rng: np.random.Generator) -> Generated:
    """A random teacher network: X ~ N(0, 1), y = tanh(X·A)·B / √h + noise·N(0, 1)."""
    X = rng.standard_normal((cfg.n_samples, cfg.n_features))
    h = cfg.teacher_hidden
    A = rng.standard_normal((cfg.n_features, h)) / np.sqrt(cfg.n_features)
    B = rng.standard_normal((h, cfg.n_outputs)) / np.sqrt(h)
    Y = np.tanh(X @ A) @ B + cfg.noise * rng.standard_normal((cfg.n_samples, cfg.n_outputs))
    return X, Y, _names("x", cfg.n_features), _names("y", cfg.n_outputs)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _columns(cfg: DataParams, path: Path, columns: list[str]) -> tuple[list[str], list[str]]:
    """The feature and target columns of a CSV file whose header pandas read as ``columns``."""
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        header = [c.strip() for c in next(csv.reader(f), [])]  # pandas renames a repeat a.1
    if len(set(header)) != len(header):
        raise DataError(f"data.path={str(path)!r}: duplicate column names {header}")
    for key, given in (("data.targets", cfg.targets), ("data.features", cfg.features)):
        if given is not None and not given:
            raise DataError(f"{key}: [] names no column: give column names, or null (default)")
    if len(columns) == 1:
        raise DataError(
            f"data.path={str(path)!r}: one column only ({columns[0]!r}): it needs a feature "
            "and a target column, separated by commas"
        )
    targets = list(cfg.targets) if cfg.targets else [columns[-1]]
    features = list(cfg.features) if cfg.features else [c for c in columns if c not in targets]
    for key, names in (("data.targets", targets), ("data.features", features)):
        missing = [c for c in names if c not in columns]
        if missing:
            raise DataError(
                f"{key}: column {missing[0]!r} is not in {str(path)!r} (columns: {columns})"
            )
    if not features:
        raise DataError(f"data.features: no feature columns left in {str(path)!r}")
    overlap = set(features) & set(targets)
    if overlap:
        raise DataError(f"data.features: column {sorted(overlap)[0]!r} is also a target")
    return features, targets


def read_csv(cfg: DataParams) -> Generated:
    """Read ``data.path`` with pandas; ``targets`` default to the last column.

    Features must be numeric; classification targets may be labels of any type (one-hot
    encoded in sorted order). Raises :class:`DataError` naming the file and the column.
    """
    import pandas as pd  # lazily, the one place: only CSV data need pandas (0.4 s to import)

    path = Path(cfg.path or "")
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"data.path={str(path)!r}: file not found") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data.path={str(path)!r}: the file is empty") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data.path={str(path)!r}: cannot be read as CSV ({reason})") from None
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(f"data.path={str(path)!r}: the file has no data rows")
    columns = [str(c).strip() for c in frame.columns]  # "a, b, y" names b, not " b"
    if all(_is_number(c) for c in columns) and not (cfg.features or cfg.targets):
        raise DataError(
            f"data.path={str(path)!r}: its first row is numbers ({', '.join(columns)}), not "
            "the header row of column names it needs (or name its columns: data.targets=...)"
        )
    frame.columns = pd.Index(columns)
    features, targets = _columns(cfg, path, columns)
    numeric_cols = features if cfg.task == "classification" else features + targets
    for col in numeric_cols:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise DataError(
                f"data.path={str(path)!r}: column {col!r} is not numeric "
                f"(row {row + 2}: {frame[col].iloc[row]!r})"
            )
        if values.isna().any():
            row = int(np.argmax(values.isna().to_numpy()))
            raise DataError(
                f"data.path={str(path)!r}: column {col!r} has a missing value (NaN) "
                f"at row {row + 2}"
            )
        if not np.isfinite(values.to_numpy(dtype=float)).all():
            raise DataError(f"data.path={str(path)!r}: column {col!r} has an infinite value")
        frame[col] = values
    X = frame[features].to_numpy(dtype=float)
    if cfg.task == "classification":
        if len(targets) != 1:
            raise DataError("data.targets: classification takes exactly one label column")
        labels = frame[targets[0]]
        if labels.isna().any():
            raise DataError(f"data.path={str(path)!r}: column {targets[0]!r} has a missing label")
        classes = sorted(labels.unique().tolist(), key=str)
        if len(classes) < 2:
            raise DataError(f"data.targets: column {targets[0]!r} has fewer than 2 classes")
        index = {c: i for i, c in enumerate(classes)}
        Y = _one_hot(labels.map(index).to_numpy(dtype=int), len(classes))
        target_names = [f"{targets[0]}={c}" for c in classes]
    else:
        Y = frame[targets].to_numpy(dtype=float)
        target_names = targets
    return X, Y, features, target_names


@dataclass(frozen=True)
class Source:
    """A data source: how it makes samples, which tasks it serves, which sizes it fixes."""

    make: Callable[[DataParams, np.random.Generator], Generated]
    tasks: tuple[str, ...] = ("regression",)
    #: sizes the source fixes (spiral/moons: two inputs; their outputs are n_classes)
    fixed: dict[str, int] = field(default_factory=dict)


#: Every data source, by its ``data.name``.
SOURCES: dict[str, Source] = {
    "tutorial": Source(tutorial),
    "xor": Source(xor, fixed={"n_features": 2, "n_outputs": 1}),
    "sine": Source(sine, fixed={"n_features": 1, "n_outputs": 1}),
    "spiral": Source(spiral, ("classification",), {"n_features": 2}),
    "moons": Source(moons, ("classification",), {"n_features": 2}),
    "regression": Source(regression),
    "csv": Source(lambda cfg, rng: read_csv(cfg), TASKS),
}


def split_sizes(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) for ``n`` samples; raises if a split would be empty."""
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    if test_fraction > 0 and n_test == 0:
        n_test = 1
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    n_train = n - n_test - n_val
    if n_train < 1:
        raise DataError(
            f"data: {n} samples leave no training sample after test_fraction={test_fraction} "
            f"and val_fraction={val_fraction}"
        )
    return n_train, n_val, n_test


def generate(cfg: DataParams, rng: np.random.Generator, dtype: str = "float64") -> Dataset:
    """Make or read the data, split it (seeded permutation), standardise if asked."""
    X, Y, fnames, tnames = SOURCES[cfg.name].make(cfg, rng)
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise DataError(f"data.name={cfg.name}: the data contain NaN or infinite values")
    n_train, n_val, _ = split_sizes(X.shape[0], cfg.test_fraction, cfg.val_fraction)
    perm = rng.permutation(X.shape[0])
    tr, va, te = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    scaling: dict[str, list[float]] = {}
    if cfg.standardize:
        mean = X[tr].mean(axis=0)
        std = X[tr].std(axis=0)
        std[std == 0] = 1.0
        X = (X - mean) / std
        scaling = {"mean": mean.tolist(), "std": std.tolist()}
    dt = np.dtype(dtype)
    with np.errstate(over="ignore"):  # the overflow is the error reported here
        X, Y = X.astype(dt, copy=False), Y.astype(dt, copy=False)  # the splits copy
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise DataError(
            f"data.name={cfg.name}: a value is beyond the range of train.dtype={dt.name} "
            f"(±{np.finfo(dt).max:.8g})"
        )

    def part(A: Array, idx: Array) -> Array:
        return np.ascontiguousarray(A[idx])

    return Dataset(
        part(X, tr),
        part(Y, tr),
        part(X, va),
        part(Y, va),
        part(X, te),
        part(Y, te),
        fnames,
        tnames,
        cfg.task,
        scaling,
    )

"""Evaluation metrics: RMSE, MAE, R² and accuracy."""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def rmse(t: Array, y: Array) -> float:
    """Root mean squared error over all samples and outputs: sqrt(mean((t − y)²))."""
    return float(np.sqrt(np.mean((np.asarray(t, np.float64) - y) ** 2)))


def mae(t: Array, y: Array) -> float:
    """Mean absolute error over all samples and outputs."""
    return float(np.mean(np.abs(np.asarray(t, np.float64) - y)))


def r2(t: Array, y: Array) -> float:
    """Coefficient of determination, averaged uniformly over outputs (as scikit-learn).

    An output whose targets are constant scores 1.0 if predicted exactly, else 0.0.
    """
    t = np.asarray(t, np.float64)
    ss_res = np.sum((t - y) ** 2, axis=0)
    ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    scores = np.where(
        ss_tot > 0,
        1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
        np.where(ss_res == 0, 1.0, 0.0),
    )
    return float(np.mean(scores))


def accuracy(t: Array, y: Array) -> float:
    """Share of samples whose arg-max output is the arg-max target (one-hot targets)."""
    return float(np.mean(np.argmax(t, axis=1) == np.argmax(y, axis=1)))


#: The metrics of a run's final weights: ``<split>_<name>`` for each split evaluated.
SPLITS = ("final_train", "final_val", "test")
NAMES = ("rmse", "mae", "r2", "accuracy")  # accuracy: classification only
FINAL_METRICS = tuple(f"{split}_{name}" for split in SPLITS for name in NAMES)


def evaluate_split(t: Array, y: Array, classification: bool) -> dict[str, float]:
    """All metrics of one split: rmse, mae, r2 (and accuracy for classification)."""
    out = {"rmse": rmse(t, y), "mae": mae(t, y), "r2": r2(t, y)}
    if classification:
        out["accuracy"] = accuracy(t, y)
    return out

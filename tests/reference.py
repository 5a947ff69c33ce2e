"""Plain-NumPy references the tests hold the project to (no mlplab code in here).

Each is written from the README and SPEC, not from the implementation: the network of the
weight format (row 0 of each matrix is the bias), full-batch gradient descent on the
tutorial's E = ½ Σ (t − y)², the learning-rate schedules, the stopping rules, and the
evaluation metrics as scikit-learn defines them (``mean_squared_error``,
``mean_absolute_error``, ``r2_score`` averaged uniformly over outputs, ``accuracy_score``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Array = np.ndarray


def sigmoid(z: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z: Array) -> Array:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "identity": lambda z: z,
    "softmax": softmax,
}


def forward(weights: Sequence[Array], X: Array, hidden: str, output: str) -> Array:
    """The network's outputs: each layer f(b + a·W), with b = row 0 of W (SPEC §5)."""
    a = X
    for i, W in enumerate(weights):
        a = ACTIVATIONS[output if i == len(weights) - 1 else hidden](W[0] + a @ W[1:])
    return a


# -- metrics, as scikit-learn defines them ----------------------------------------------------
def rmse(t: Array, y: Array) -> float:
    """sqrt(mean((t − y)²)) over every sample and output (SPEC §1)."""
    return math.sqrt(float(np.mean((t - y) ** 2)))


def mae(t: Array, y: Array) -> float:
    """``mean_absolute_error`` averaged uniformly over the outputs."""
    return float(np.mean([np.mean(np.abs(t[:, k] - y[:, k])) for k in range(t.shape[1])]))


def r2(t: Array, y: Array) -> float:
    """``r2_score(t, y, multioutput="uniform_average")``: per output 1 − SS_res / SS_tot
    (a constant output scores 1 when predicted exactly, else 0), then the plain mean."""
    scores = []
    for k in range(t.shape[1]):
        ss_res = float(np.sum((t[:, k] - y[:, k]) ** 2))
        ss_tot = float(np.sum((t[:, k] - np.mean(t[:, k])) ** 2))
        if ss_tot == 0.0:
            scores.append(1.0 if ss_res == 0.0 else 0.0)
        else:
            scores.append(1.0 - ss_res / ss_tot)
    return float(np.mean(scores))


def accuracy(t: Array, y: Array) -> float:
    """``accuracy_score`` of the arg-max class against the one-hot target's class."""
    return float(np.mean([int(np.argmax(a) == np.argmax(b)) for a, b in zip(t, y, strict=True)]))


# -- training rules -------------------------------------------------------------------------
def lr_at(lr: float, schedule: str, epoch: int, step_size: int, gamma: float) -> float:
    """The learning rate of ``epoch`` (counted from 1), as the README states the schedules:
    ``step`` multiplies by gamma every step_size epochs, ``exponential`` every epoch."""
    if schedule == "step":
        return lr * gamma ** ((epoch - 1) // step_size)
    if schedule == "exponential":
        return lr * gamma ** (epoch - 1)
    assert schedule == "constant", schedule
    return lr


def tutorial_descent(
    v: Array, w: Array, x: Array, t: Array, lrs: Sequence[float]
) -> tuple[Array, Array, list[float]]:
    """Full-batch gradient descent on the tutorial's 2-layer sigmoid network, one epoch per
    learning rate, in the tutorial's notation (θ: error signals, Δ: gradients of E).

    Returns the final v, w and the RMSE of every epoch, measured before its update.
    """
    x_bias = np.hstack([np.ones((len(x), 1)), x])
    history = []
    for alpha in lrs:
        z = sigmoid(x_bias @ v)
        z_bias = np.hstack([np.ones((len(z), 1)), z])
        y = sigmoid(z_bias @ w)
        history.append(rmse(t, y))
        theta_k = (y - t) * y * (1 - y)
        theta_j = (theta_k @ w[1:].T) * z * (1 - z)
        delta_k, delta_j = z_bias.T @ theta_k, x_bias.T @ theta_j
        w, v = w - alpha * delta_k, v - alpha * delta_j
    return v, w, history


def expected_stop(
    train: Sequence[float],
    val: Sequence[float] | None,
    epochs: int,
    tol: float,
    patience: int | None,
) -> tuple[int, str, int | None]:
    """(epochs run, stop reason, best epoch) by the README's rules, read off the histories.

    Stop after the epoch where |RMSE_i − RMSE_(i−1)| < tol (tolerance), or after ``patience``
    epochs in a row in which the validation RMSE did not fall below the best so far by more
    than tol (early stopping; the best epoch's weights are kept), or after ``epochs``.
    """
    best, best_epoch, waited = math.inf, None, 0
    for epoch in range(1, len(train) + 1):
        reason = None
        if epoch >= epochs:
            reason = "max_epochs"
        if epoch > 1 and abs(train[epoch - 1] - train[epoch - 2]) < tol:
            reason = "tolerance"
        if patience and val is not None:
            if val[epoch - 1] < best - tol:
                best, best_epoch, waited = val[epoch - 1], epoch, 0
            else:
                waited += 1
            if waited >= patience:
                reason = "early_stopping"
        if reason:
            return epoch, reason, best_epoch
    raise AssertionError(f"the rules do not stop within the {len(train)} epochs given")

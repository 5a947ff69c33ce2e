"""Central finite differences against backpropagation's gradients."""

from __future__ import annotations

import numpy as np

from mlplab.nn.losses import get_loss
from mlplab.nn.network import MLP, add_bias, transposed

Array = np.ndarray


def backprop_gradients(net: MLP, X: Array, T: Array, loss: str, reduction: str) -> list[Array]:
    """dE/dW for every weight matrix, by the step training runs (:meth:`MLP.make_step`)."""
    Xb = add_bias(np.asarray(X, dtype=net.dtype))
    TT = np.ascontiguousarray(transposed(np.asarray(T, dtype=net.dtype)))
    n = Xb.shape[-2]
    scale = np.array(1.0 / n, dtype=net.dtype) if reduction == "mean" else None
    net.make_step(net.workspace(n), get_loss(loss), scale, update=False)(transposed(Xb), TT)
    return [g.copy() for g in net.grads]


def numeric_gradients(
    net: MLP, X: Array, T: Array, loss: str, reduction: str, h: float = 1e-6
) -> list[Array]:
    """dE/dW by central differences (E(W + h) − E(W − h)) / 2h, one entry at a time."""
    value = get_loss(loss).value
    grads = []
    for W in net.weights:
        G = np.zeros_like(W, dtype=np.float64)
        for idx in np.ndindex(W.shape):
            orig = W[idx]
            W[idx] = orig + h
            plus = value(net.predict(X), T, reduction)
            W[idx] = orig - h
            minus = value(net.predict(X), T, reduction)
            W[idx] = orig
            G[idx] = (plus - minus) / (2 * h)
        grads.append(G)
    return grads


def max_relative_error(a: list[Array], b: list[Array]) -> float:
    """Largest ‖a − b‖ / (‖a‖ + ‖b‖) over the weight matrices (Frobenius norms); NaN when a
    gradient is NaN, so that a broken backward pass never passes the check."""
    errors = [0.0]
    for x, y in zip(a, b, strict=True):
        scale = float(np.linalg.norm(x) + np.linalg.norm(y))
        if scale != 0:  # NaN included
            errors.append(float(np.linalg.norm(x - y)) / scale)
    return float(np.max(errors))  # np.max propagates NaN (max() would drop it)


def gradient_check(
    net: MLP, X: Array, T: Array, loss: str, reduction: str, h: float = 1e-6
) -> float:
    """Largest relative error between backprop and finite differences (float64 copy of net)."""
    probe = net.like(dtype="float64")
    probe.set_weights(net.weights)
    Xd, Td = np.asarray(X, np.float64), np.asarray(T, np.float64)
    return max_relative_error(
        backprop_gradients(probe, Xd, Td, loss, reduction),
        numeric_gradients(probe, Xd, Td, loss, reduction, h),
    )

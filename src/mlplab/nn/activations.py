"""Activation functions, applied in place, and their derivatives computed from the outputs.

Each activation is a pair of functions:

* ``apply(z, out)`` writes f(z) into ``out`` (which may be ``z`` itself or a strided view);
* ``grad_from_output(a, out)`` writes f'(z) into ``out`` using only a = f(z), so the
  backward pass never needs the pre-activations (as in scikit-learn's MLP).

``softmax`` is an output activation only: with the cross-entropy loss its derivative is
folded into the output error (δ = y − t) and never computed on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

Array = np.ndarray


@dataclass(frozen=True)
class Activation:
    """An activation: its name, its in-place forward, its derivative from the output."""

    name: str
    apply: Callable[[Array, Array], None]
    grad_from_output: Callable[[Array, Array], None]


def _sigmoid(z: Array, out: Array) -> None:
    expit(z, out=out)


def _sigmoid_grad(a: Array, out: Array) -> None:
    np.subtract(1.0, a, out=out)
    out *= a


def _tanh(z: Array, out: Array) -> None:
    np.tanh(z, out=out)


def _tanh_grad(a: Array, out: Array) -> None:
    np.square(a, out=out)
    np.subtract(1.0, out, out=out)


def _relu(z: Array, out: Array) -> None:
    np.maximum(z, 0.0, out=out)


def _relu_grad(a: Array, out: Array) -> None:
    np.greater(a, 0.0, out=out)


def _identity(z: Array, out: Array) -> None:
    if out is not z:
        np.copyto(out, z)


def _identity_grad(a: Array, out: Array) -> None:
    out.fill(1.0)


def _softmax(z: Array, out: Array) -> None:
    np.subtract(z, z.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)


def _softmax_grad(a: Array, out: Array) -> None:  # pragma: no cover - never called
    raise RuntimeError("softmax is only used with cross_entropy, whose δ is y - t")


def leaky_relu(negative_slope: float) -> Activation:
    """Leaky ReLU: z for z > 0, ``negative_slope``·z otherwise."""
    slope = float(negative_slope)

    def apply(z: Array, out: Array) -> None:
        # max(z, slope·z) is leaky ReLU for 0 <= slope <= 1 (validated in the config).
        np.maximum(z, z * slope, out=out)

    def grad(a: Array, out: Array) -> None:
        # a > 0 exactly when z > 0 (slope >= 0), so the derivative is read off the output.
        np.greater(a, 0.0, out=out)
        out *= 1.0 - slope
        out += slope

    return Activation("leaky_relu", apply, grad)


_FIXED = {
    "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_grad),
    "tanh": Activation("tanh", _tanh, _tanh_grad),
    "relu": Activation("relu", _relu, _relu_grad),
    "identity": Activation("identity", _identity, _identity_grad),
    "softmax": Activation("softmax", _softmax, _softmax_grad),
}


def get_activation(name: str, negative_slope: float = 0.01) -> Activation:
    """Look an activation up by its config name."""
    if name == "leaky_relu":
        return leaky_relu(negative_slope)
    try:
        return _FIXED[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}") from None

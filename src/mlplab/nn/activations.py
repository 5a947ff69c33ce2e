"""Activation functions, applied in place, and their derivatives computed from the outputs.

Each activation is a pair of functions:

* ``apply(z, out)`` writes f(z) into ``out`` (which may be ``z`` itself or a strided view);
* ``grad_from_output(a, out)`` writes f'(z) into ``out`` using only a = f(z), so the
  backward pass never needs the pre-activations (as in scikit-learn's MLP).

``softmax`` is an output activation only: with the cross-entropy loss its derivative is
folded into the output error (δ = y − t) and never computed on its own.

The training loop does not call these generic functions: :func:`forward_ops` and
:func:`backprop_ops` return the same arithmetic bound in advance to fixed buffers (zero-argument
callables, constants as 0-d arrays of the buffers' dtype), which is what makes a step of a small
network cheap. scipy (for the logistic function) is imported on first use only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

Array = np.ndarray
Op = Callable[[], Any]

_EXPIT: Any = None


def _expit() -> Any:
    """scipy's logistic ufunc, imported on first use (scipy.special costs ~0.2 s to import)."""
    global _EXPIT
    if _EXPIT is None:
        from scipy.special import expit

        _EXPIT = expit
    return _EXPIT


@dataclass(frozen=True)
class Activation:
    """An activation: its name, its in-place forward, its derivative from the output."""

    name: str
    apply: Callable[[Array, Array], None]
    grad_from_output: Callable[[Array, Array], None]
    negative_slope: float = 0.0


def _sigmoid(z: Array, out: Array) -> None:
    _expit()(z, out=out)


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

    return Activation("leaky_relu", apply, grad, slope)


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


# -- pre-bound kernels for the training loop ---------------------------------------------------
def const(value: float, dtype: np.dtype) -> Array:
    """A 0-d array: as a ufunc operand it costs less than a Python float (no conversion)."""
    return np.array(value, dtype=dtype)


def forward_ops(act: Activation, z: Array, out: Array, scratch: Array) -> list[Op]:
    """Calls writing f(z) into ``out`` (C-contiguous, same shape as ``z``; ``out`` may be ``z``).

    ``scratch`` (the shape of ``z``, reserved for these calls: nothing else may write it) is used
    by ``relu`` (filled with zeros once: ``maximum`` against a full array is several times faster
    than against a scalar in float32) and ``leaky_relu``.
    Softmax works on axis 0 here: the training buffers hold one sample per column.
    """
    name = act.name
    if name == "sigmoid":
        return [partial(_expit(), z, out)]
    if name == "tanh":
        return [partial(np.tanh, z, out)]
    if name == "relu":
        scratch.fill(0.0)
        return [partial(np.maximum, z, scratch, out=out)]
    if name == "leaky_relu":
        slope = const(act.negative_slope, z.dtype)
        return [partial(np.multiply, z, slope, scratch), partial(np.maximum, z, scratch, out=out)]
    if name == "identity":
        return [] if out is z else [partial(np.copyto, out, z)]
    if name == "softmax":

        def softmax() -> None:
            np.subtract(z, z.max(axis=0), out=out)
            np.exp(out, out=out)
            np.divide(out, out.sum(axis=0), out=out)

        return [softmax]
    raise ValueError(f"no kernel for activation {name!r}")


def backprop_ops(act: Activation, a: Array, delta: Array, tmp: Array) -> list[Op]:
    """Calls multiplying ``delta`` in place by f'(z), read off a = f(z); ``tmp`` is scratch.

    Same arithmetic, in the same order, as ``grad_from_output`` followed by ``delta *= tmp``;
    identity needs no call at all.
    """
    name = act.name
    mul = np.multiply
    if name == "identity":
        return []
    one = const(1.0, a.dtype)
    if name == "sigmoid":  # (1 - a)·a
        return [
            partial(np.subtract, one, a, tmp),
            partial(mul, tmp, a, tmp),
            partial(mul, delta, tmp, delta),
        ]
    if name == "tanh":  # 1 - a²
        return [
            partial(np.square, a, tmp),
            partial(np.subtract, one, tmp, tmp),
            partial(mul, delta, tmp, delta),
        ]
    zero = const(0.0, a.dtype)
    if name == "relu":  # 1 where a > 0
        return [partial(np.greater, a, zero, tmp), partial(mul, delta, tmp, delta)]
    if name == "leaky_relu":
        slope = act.negative_slope
        return [
            partial(np.greater, a, zero, tmp),
            partial(mul, tmp, const(1.0 - slope, a.dtype), tmp),
            partial(np.add, tmp, const(slope, a.dtype), tmp),
            partial(mul, delta, tmp, delta),
        ]
    raise ValueError(f"activation {name!r} has no derivative kernel (softmax needs cross_entropy)")

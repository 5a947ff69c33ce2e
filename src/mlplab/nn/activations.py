"""The activations: one table, each entry with its kernels, its derivative and its formulas.

An activation is defined once, here, by

* ``forward(z, out, scratch, slope)``: the NumPy calls writing f(z) into ``out``;
* ``derivative(a, out, slope)``: the calls writing f'(z) into ``out`` from the output
  a = f(z) alone (the backward pass never needs the pre-activations, as in scikit-learn's
  MLP); ``None`` for an output-only activation (softmax, whose derivative the
  cross-entropy loss folds into the output error δ = y − t);
* its formula and its derivative's formula, as the trace prints them.

A kernel is a list of zero-argument calls bound in advance to fixed buffers (constants as
0-d arrays of the buffers' dtype): that is what makes a step of a small network cheap.
The buffers hold one sample per column, the units along axis −2, with an optional leading
axis of population members: (units, batch) or (members, units, batch).
:data:`ACTIVATIONS` is the table; the config's list of choices is read from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from scipy.special import expit

Array = np.ndarray
Op = Callable[[], Any]
Forward = Callable[[Array, Array, Array, float], list[Op]]
Derivative = Callable[[Array, Array, float], list[Op]]


def const(value: float, dtype: np.dtype) -> Array:
    """A 0-d array: as a ufunc operand it costs less than a Python float (no conversion)."""
    return np.array(value, dtype=dtype)


@dataclass(frozen=True)
class Activation:
    """One activation: its kernels and formulas (``{out}``/``{pre}``/``{slope}`` placeholders)."""

    name: str
    forward: Forward
    derivative: Derivative | None
    formula: str
    derivative_formula: str = ""
    #: f' is 1: the backward pass skips the multiplication altogether.
    unit_derivative: bool = False

    @property
    def hidden(self) -> bool:
        """Usable in a hidden layer (it has a derivative of its own)."""
        return self.derivative is not None

    def apply(self, z: Array, out: Array, slope: float = 0.0) -> None:
        """f(z) into ``out`` (``out`` may be ``z``), outside a bound kernel."""
        for op in self.forward(z, out, np.empty_like(z), slope):
            op()

    def derivative_of(self, a: Array, out: Array, slope: float = 0.0) -> None:
        """f'(z) into ``out`` from the output a = f(z), outside a bound kernel."""
        if self.unit_derivative:
            out.fill(1.0)
            return
        if self.derivative is None:
            raise ValueError(f"{self.name} has no derivative of its own")
        for op in self.derivative(a, out, slope):
            op()

    def describe(self, slope: float) -> str:
        """The formula of f(s), with the slope filled in."""
        return self.formula.format(slope=f"{slope:g}")

    def describe_derivative(self, out: str, pre: str, slope: float) -> str:
        """The formula of f' written with the layer's output ``out`` and input ``pre``."""
        return self.derivative_formula.format(out=out, pre=pre, slope=f"{slope:g}")


# -- the kernels -------------------------------------------------------------------------
def _sigmoid(z: Array, out: Array, scratch: Array, slope: float) -> list[Op]:
    return [partial(expit, z, out)]


def _sigmoid_derivative(a: Array, out: Array, slope: float) -> list[Op]:  # (1 − a)·a
    return [partial(np.subtract, const(1.0, a.dtype), a, out), partial(np.multiply, out, a, out)]


def _tanh(z: Array, out: Array, scratch: Array, slope: float) -> list[Op]:
    return [partial(np.tanh, z, out)]


def _tanh_derivative(a: Array, out: Array, slope: float) -> list[Op]:  # 1 − a²
    return [partial(np.square, a, out), partial(np.subtract, const(1.0, a.dtype), out, out)]


def _relu(z: Array, out: Array, scratch: Array, slope: float) -> list[Op]:
    # ``maximum`` against a full array of zeros is several times faster than against a
    # scalar in float32; ``scratch`` is reserved for this layer, so the zeros stay.
    scratch.fill(0.0)
    return [partial(np.maximum, z, scratch, out=out)]


def _relu_derivative(a: Array, out: Array, slope: float) -> list[Op]:  # 1 where a > 0
    return [partial(np.greater, a, const(0.0, a.dtype), out)]


def _leaky_relu(z: Array, out: Array, scratch: Array, slope: float) -> list[Op]:
    # max(z, slope·z) is leaky ReLU for 0 <= slope < 1 (the config checks the range)
    return [
        partial(np.multiply, z, const(slope, z.dtype), scratch),
        partial(np.maximum, z, scratch, out=out),
    ]


def _leaky_relu_derivative(a: Array, out: Array, slope: float) -> list[Op]:
    # a > 0 exactly when z > 0 (slope >= 0): the derivative is read off the output
    return [
        partial(np.greater, a, const(0.0, a.dtype), out),
        partial(np.multiply, out, const(1.0 - slope, a.dtype), out),
        partial(np.add, out, const(slope, a.dtype), out),
    ]


def _identity(z: Array, out: Array, scratch: Array, slope: float) -> list[Op]:
    return [] if out is z else [partial(np.copyto, out, z)]


def _softmax(z: Array, out: Array, scratch: Array, slope: float) -> list[Op]:
    def softmax() -> None:  # over the units (axis −2), shifted by the largest for stability
        np.subtract(z, z.max(axis=-2, keepdims=True), out=out)
        np.exp(out, out=out)
        np.divide(out, out.sum(axis=-2, keepdims=True), out=out)

    return [softmax]


#: Every activation, by its config name.
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation(
            "sigmoid", _sigmoid, _sigmoid_derivative, "1 / (1 + e^(−s))", "{out}·(1 − {out})"
        ),
        Activation("tanh", _tanh, _tanh_derivative, "tanh(s)", "1 − {out}²"),
        Activation("relu", _relu, _relu_derivative, "max(s, 0)", "1 if {pre} > 0 else 0"),
        Activation(
            "leaky_relu",
            _leaky_relu,
            _leaky_relu_derivative,
            "max(s, {slope}·s)",
            "1 if {pre} > 0 else {slope}",
        ),
        Activation("identity", _identity, lambda a, out, slope: [], "s", "1", unit_derivative=True),
        Activation("softmax", _softmax, None, "e^(s_k) / Σ_k' e^(s_k')"),
    )
}
#: Choices for hidden layers (those with a derivative of their own) and for the output.
HIDDEN_ACTIVATIONS = tuple(name for name, a in ACTIVATIONS.items() if a.hidden)
OUTPUT_ACTIVATIONS = tuple(ACTIVATIONS)


def get_activation(name: str) -> Activation:
    """Look an activation up by its config name."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}") from None

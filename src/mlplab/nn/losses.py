"""The losses: their value, and how the output error δ_out = dE/dZ_out starts backpropagation.

``mse``: E = ½ Σ (t − y)² over the samples and outputs of a batch (reduction ``sum``, as in
the tutorial) or that divided by the batch's number of samples (``mean``); δ = (y − t)·f'.
``cross_entropy``: E = −Σ t·log y with a softmax output, so that δ = y − t (f' folded in).
:data:`LOSSES` is the table; the config's list of choices is read from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Array = np.ndarray

_TINY = 1e-12


def _mse(y: Array, t: Array) -> float:
    return 0.5 * float(np.sum((t - y) ** 2))


def _cross_entropy(y: Array, t: Array) -> float:
    return -float(np.sum(t * np.log(np.maximum(y, _TINY))))


@dataclass(frozen=True)
class Loss:
    """A loss: its value on a batch and whether δ_out carries the output activation's f'."""

    name: str
    summed: Callable[[Array, Array], float]
    #: δ = (y − t)·f'(y_in) (mse) rather than y − t (cross-entropy with softmax).
    uses_output_derivative: bool
    formula: str

    def value(self, y: Array, t: Array, reduction: str) -> float:
        """The loss of a batch (allocates: for reports and gradient checks, not the loop)."""
        total = self.summed(y, t)
        return total / y.shape[0] if reduction == "mean" else total


#: Every loss, by its config name.
LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", _mse, True, "½ Σ (t − {y})²"),
    "cross_entropy": Loss("cross_entropy", _cross_entropy, False, "−Σ t·log {y}"),
}
REDUCTIONS = ("sum", "mean")


def get_loss(name: str) -> Loss:
    """Look a loss up by its config name."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}") from None

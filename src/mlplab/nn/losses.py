"""Losses and the output error δ_out = dE/dZ_out they start backpropagation with.

``mse``: E = ½ Σ (t − y)² over the samples and outputs of a batch (reduction ``sum``, as in
the tutorial) or that divided by the batch's number of samples (``mean``).
``cross_entropy``: E = −Σ t·log y with a softmax output, so that δ = y − t.
"""

from __future__ import annotations

import numpy as np

from mlplab.nn.activations import Activation

Array = np.ndarray

_TINY = 1e-12


def loss_value(y: Array, t: Array, loss: str, reduction: str) -> float:
    """The loss of a batch (allocates; for reports and gradient checks, not the hot loop)."""
    if loss == "mse":
        value = 0.5 * float(np.sum((t - y) ** 2))
    elif loss == "cross_entropy":
        value = -float(np.sum(t * np.log(np.maximum(y, _TINY))))
    else:
        raise ValueError(f"unknown loss {loss!r}")
    return value / y.shape[0] if reduction == "mean" else value


def output_delta(
    y: Array, t: Array, out: Array, tmp: Array, output_act: Activation, loss: str, reduction: str
) -> float:
    """Write δ_out = dE/dZ_out into ``out``; return Σ (y − t)² of the batch (for the RMSE).

    mse: δ = (y − t)·f'(y_in); cross_entropy with softmax: δ = y − t. The arrays may be of
    either memory order (the workspace's (batch, n) views are column-major). The training loop
    does the same arithmetic through :meth:`mlplab.nn.network.MLP.make_step`.
    """
    np.subtract(y, t, out=out)
    flat = out.ravel(order="K")  # a view in memory order, whatever the layout
    sse = float(np.dot(flat, flat))
    if loss == "mse" and output_act.name != "identity":
        output_act.grad_from_output(y, tmp)
        out *= tmp
    if reduction == "mean":
        out *= 1.0 / y.shape[0]
    return sse

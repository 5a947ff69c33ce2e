"""The multi-layer perceptron: weights, forward pass and backward pass (backpropagation).

Weights follow the project's weight format: ``W[l]`` maps layer l to layer l+1 and has
shape (fan_in + 1, fan_out); row 0 holds the weights leaving the bias neuron. The bias is
folded into the matrix product: every layer's activation buffer carries a constant
column of ones at index 0, written once when the buffer is allocated, so
``Z = A @ W`` needs no copy of the batch.

Training buffers are allocated once per batch size (:class:`Workspace`) and reused every
epoch; activations and their derivatives are computed in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlplab.nn.activations import Activation, get_activation

Array = np.ndarray


def add_bias(X: Array) -> Array:
    """Return ``X`` with a leading column of ones (a new array of X's dtype)."""
    out = np.empty((X.shape[0], X.shape[1] + 1), dtype=X.dtype)
    out[:, 0] = 1.0
    out[:, 1:] = X
    return out


class Workspace:
    """Buffers for one batch size: activations (with bias column), pre-activations, deltas."""

    def __init__(self, sizes: Sequence[int], batch: int, dtype: np.dtype) -> None:
        L = len(sizes) - 1
        # acts[0] is set per batch (a view of the data); acts[1..L-1] carry a bias column.
        self.acts: list[Array] = [np.empty((0, 0), dtype)]
        for l in range(1, L):
            a = np.empty((batch, sizes[l] + 1), dtype)
            a[:, 0] = 1.0
            self.acts.append(a)
        self.acts.append(np.empty((batch, sizes[L]), dtype))
        self.z = [np.empty((batch, sizes[l + 1]), dtype) for l in range(L)]
        # deltas[l] is dE/dZ of layer l+1 (shape (batch, sizes[l+1])).
        self.deltas = [np.empty((batch, sizes[l + 1]), dtype) for l in range(L)]
        self.tmp = [np.empty((batch, sizes[l + 1]), dtype) for l in range(L)]


class MLP:
    """A fully connected network of any depth, trained by backpropagation."""

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "sigmoid",
        output_activation: str = "sigmoid",
        negative_slope: float = 0.01,
        dtype: str | np.dtype = "float64",
    ) -> None:
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"sizes must be >= 2 positive widths, got {list(sizes)}")
        self.sizes = [int(s) for s in sizes]
        self.dtype = np.dtype(dtype)
        self.hidden_act: Activation = get_activation(activation, negative_slope)
        self.output_act: Activation = get_activation(output_activation, negative_slope)
        self.weights: list[Array] = [
            np.zeros((self.sizes[l] + 1, self.sizes[l + 1]), self.dtype)
            for l in range(self.n_layers)
        ]
        self.grads: list[Array] = [np.zeros_like(W) for W in self.weights]
        self._workspaces: dict[int, Workspace] = {}

    @property
    def n_layers(self) -> int:
        """Number of weight matrices (hidden layers + 1)."""
        return len(self.sizes) - 1

    def activation_of(self, layer: int) -> Activation:
        """Activation of layer ``layer`` (1 = first hidden layer, n_layers = output)."""
        return self.output_act if layer == self.n_layers else self.hidden_act

    # -- weights ---------------------------------------------------------------------------
    def set_weights(self, weights: Sequence[Array]) -> None:
        """Copy ``weights`` in, checking shapes against the topology."""
        if len(weights) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} weight matrices, got {len(weights)}")
        for l, (W, new) in enumerate(zip(self.weights, weights, strict=True)):
            if np.shape(new) != W.shape:
                raise ValueError(f"W{l} has shape {np.shape(new)}, expected {W.shape}")
            W[...] = new

    def get_weights(self) -> list[Array]:
        """A copy of the weights."""
        return [W.copy() for W in self.weights]

    def workspace(self, batch: int) -> Workspace:
        """The (cached) buffers for batches of ``batch`` rows."""
        ws = self._workspaces.get(batch)
        if ws is None:
            ws = self._workspaces[batch] = Workspace(self.sizes, batch, self.dtype)
        return ws

    # -- passes ----------------------------------------------------------------------------
    def forward_buffers(self, Xb: Array, ws: Workspace) -> Array:
        """Forward pass of a batch that already carries its bias column; returns the output."""
        acts, z, L = ws.acts, ws.z, self.n_layers
        acts[0] = Xb
        hidden = self.hidden_act.apply
        for l in range(L - 1):
            np.dot(acts[l], self.weights[l], out=z[l])
            hidden(z[l], acts[l + 1][:, 1:])
        np.dot(acts[L - 1], self.weights[L - 1], out=z[L - 1])
        self.output_act.apply(z[L - 1], acts[L])
        return acts[L]

    def backward_buffers(self, ws: Workspace) -> list[Array]:
        """Backpropagate ``ws.deltas[-1]`` (dE/dZ at the output) into ``self.grads``."""
        acts, deltas, tmp, grads, W = ws.acts, ws.deltas, ws.tmp, self.grads, self.weights
        grad_from_output = self.hidden_act.grad_from_output
        for l in range(self.n_layers - 1, -1, -1):
            np.dot(acts[l].T, deltas[l], out=grads[l])
            if l > 0:
                np.dot(deltas[l], W[l][1:].T, out=deltas[l - 1])
                grad_from_output(acts[l][:, 1:], tmp[l - 1])
                deltas[l - 1] *= tmp[l - 1]
        return grads

    def predict(self, X: Array, batch: int = 4096) -> Array:
        """Outputs for ``X`` (no bias column), in chunks; allocates its own arrays."""
        X = np.asarray(X, dtype=self.dtype)
        out = np.empty((X.shape[0], self.sizes[-1]), self.dtype)
        for start in range(0, X.shape[0], batch):
            a = X[start : start + batch]
            for l, W in enumerate(self.weights):
                z = a @ W[1:]
                z += W[0]
                self.activation_of(l + 1).apply(z, z)
                a = z
            out[start : start + batch] = a
        return out

    def forward_all(self, X: Array) -> tuple[list[Array], list[Array]]:
        """Forward pass keeping every layer: (pre-activations Z[1..L], outputs A[0..L]).

        A[l] carries no bias column. Used by the trace and the gradient check, not in training.
        """
        A = [np.asarray(X, dtype=self.dtype)]
        Z: list[Array] = []
        for l, W in enumerate(self.weights):
            z = A[-1] @ W[1:] + W[0]
            a = np.empty_like(z)
            self.activation_of(l + 1).apply(z, a)
            Z.append(z)
            A.append(a)
        return Z, A


def init_weights(
    sizes: Sequence[int], method: str, rng: np.random.Generator, scale: float = 1.0
) -> list[Array]:
    """Initial weights in float64.

    ``normal``: every entry (bias row included) standard normal × ``scale``, as in the
    tutorial. ``xavier``: Glorot uniform U(±scale·√(6/(fan_in+fan_out))), bias row 0.
    ``he``: normal with std scale·√(2/fan_in), bias row 0.
    """
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
        shape = (fan_in + 1, fan_out)
        if method == "normal":
            W = rng.standard_normal(shape) * scale
        elif method == "xavier":
            a = scale * np.sqrt(6.0 / (fan_in + fan_out))
            W = np.zeros(shape)
            W[1:] = rng.uniform(-a, a, size=(fan_in, fan_out))
        elif method == "he":
            W = np.zeros(shape)
            W[1:] = rng.standard_normal((fan_in, fan_out)) * (scale * np.sqrt(2.0 / fan_in))
        else:
            raise ValueError(f"unknown init {method!r}")
        weights.append(W)
    return weights

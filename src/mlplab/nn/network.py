"""The multi-layer perceptron: weights, forward pass and backward pass (backpropagation).

Weights follow the project's weight format: ``W[l]`` maps layer l to layer l+1 and has
shape (fan_in + 1, fan_out); row 0 holds the weights leaving the bias neuron. The bias is
folded into the matrix product: every layer's activation buffer carries the constant ones
of the bias neuron, written once when the buffer is allocated, so ``Z = A @ W`` needs no
copy of the batch.

Training buffers are allocated once per batch size (:class:`Workspace`) and reused every
epoch; activations and their derivatives are computed in place. Inside, the buffers hold one
sample per column (``Zᵀ = Wᵀ Aᵀ``), so that a layer's units are one contiguous block: NumPy's
elementwise calls on small arrays are up to twice as fast on contiguous memory, and BLAS takes
the transposes as flags, without copies. :meth:`MLP.make_step` binds a whole training step
(forward, output error, backward, optionally the SGD update) to one workspace, so that a step
of a small network is a fixed sequence of NumPy calls: for the tutorial's 2-2-2 net, 18 calls
(~1 µs each) and nothing else.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from mlplab.nn.activations import Activation, Op, backprop_ops, forward_ops, get_activation

Array = np.ndarray


def add_bias(X: Array) -> Array:
    """Return ``X`` with a leading column of ones (a new array of X's dtype)."""
    out = np.empty((X.shape[0], X.shape[1] + 1), dtype=X.dtype)
    out[:, 0] = 1.0
    out[:, 1:] = X
    return out


class Workspace:
    """Buffers for one batch size, allocated once and reused by every batch of that size.

    The buffers hold one sample per *column* ("transposed" layout, C-contiguous), so that the
    units of a layer, and an activation without its bias row, are contiguous blocks:
    ``actsT[l]`` has shape (n_l + 1, batch) with row 0 the constant ones of the bias neuron
    (written once, here), ``zT[l]``, ``deltasT[l]`` and ``tmpT[l]`` have shape
    (n_{l+1}, batch). ``acts``, ``z``, ``deltas`` and ``tmp`` are the same memory seen one
    sample per row (their transposes), the layout of the public API: ``acts[l]`` is
    (batch, n_l + 1) with the bias column first, ``deltas[l]`` is dE/dZ of layer l+1.
    ``acts[0]``/``actsT[0]`` are set per batch to the caller's data (no copy).

    With an identity activation the pre-activation and activation buffers are the same memory,
    so the forward pass does not copy.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch: int,
        dtype: np.dtype,
        identity_hidden: bool = False,
        identity_output: bool = False,
    ) -> None:
        L = len(sizes) - 1
        self.batch = batch
        self.aliases = (identity_hidden, identity_output)
        self.actsT: list[Array] = [np.empty((0, 0), dtype)]
        self.zT: list[Array] = []
        for l in range(1, L):
            a = np.empty((sizes[l] + 1, batch), dtype)
            a[0] = 1.0
            self.actsT.append(a)
            self.zT.append(a[1:] if identity_hidden else np.empty((sizes[l], batch), dtype))
        z_out = np.empty((sizes[L], batch), dtype)
        self.zT.append(z_out)
        self.actsT.append(z_out if identity_output else np.empty((sizes[L], batch), dtype))
        self.deltasT = [np.empty((sizes[l + 1], batch), dtype) for l in range(L)]
        self.tmpT = [np.empty((sizes[l + 1], batch), dtype) for l in range(L)]
        self.acts: list[Array] = [a.T for a in self.actsT]
        self.z = [z.T for z in self.zT]
        self.deltas = [d.T for d in self.deltasT]
        self.tmp = [t.T for t in self.tmpT]
        self._scratch: dict[int, Array] = {}

    def set_input(self, Xb: Array) -> Array:
        """Make ``Xb`` (batch, n_0 + 1, bias column first) the input; returns its transpose."""
        self.acts[0] = Xb
        self.actsT[0] = Xb.T
        return self.actsT[0]

    def scratch(self, l: int) -> Array:
        """A buffer the shape of ``zT[l]`` reserved for the forward kernels of layer l + 1."""
        buf = self._scratch.get(l)
        if buf is None:
            buf = self._scratch[l] = np.empty_like(self.zT[l])
        return buf


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
        aliases = (self.hidden_act.name == "identity", self.output_act.name == "identity")
        ws = self._workspaces.get(batch)
        if ws is None or ws.aliases != aliases:
            ws = self._workspaces[batch] = Workspace(self.sizes, batch, self.dtype, *aliases)
        return ws

    # -- passes ----------------------------------------------------------------------------
    def forward_buffers(self, Xb: Array, ws: Workspace) -> Array:
        """Forward pass of a batch that already carries its bias column; returns the output.

        Fills ``ws.z`` (pre-activations) and ``ws.acts``; the output is ``ws.acts[-1]``, a
        (batch, n_out) view of the workspace.
        """
        L, dot = self.n_layers, np.dot
        a = ws.set_input(Xb)
        for l in range(L):
            dot(self.weights[l].T, a, ws.zT[l])
            a = ws.actsT[l + 1]
            if not ws.aliases[l == L - 1]:  # aliased buffers: identity, nothing to do
                # the generic activations work on rows of samples (softmax: axis 1)
                self.activation_of(l + 1).apply(ws.z[l], (a[1:] if l < L - 1 else a).T)
        return ws.acts[L]

    def backward_buffers(self, ws: Workspace) -> list[Array]:
        """Backpropagate ``ws.deltas[-1]`` (dE/dZ at the output) into ``self.grads``.

        Leaves dE/dZ of hidden layer l in ``ws.deltas[l - 1]`` and f' of its pre-activations in
        ``ws.tmp[l - 1]``.
        """
        actsT, deltasT, tmpT, grads, W = ws.actsT, ws.deltasT, ws.tmpT, self.grads, self.weights
        grad_from_output = self.hidden_act.grad_from_output
        for l in range(self.n_layers - 1, -1, -1):
            np.dot(actsT[l], deltasT[l].T, out=grads[l])
            if l > 0:
                np.dot(W[l][1:], deltasT[l], out=deltasT[l - 1])
                grad_from_output(actsT[l][1:], tmpT[l - 1])
                deltasT[l - 1] *= tmpT[l - 1]
        return grads

    # -- the training step -----------------------------------------------------------------
    def _forward_ops(self, ws: Workspace) -> list[Op]:
        """The forward pass after layer 0's product, bound to ``ws`` (see :meth:`make_step`)."""
        L = self.n_layers
        ops: list[Op] = []
        for l in range(L):
            if l > 0:
                ops.append(partial(np.dot, self.weights[l].T, ws.actsT[l], ws.zT[l]))
            out = ws.actsT[l + 1][1:] if l < L - 1 else ws.actsT[L]
            if not ws.aliases[l == L - 1]:
                ops += forward_ops(self.activation_of(l + 1), ws.zT[l], out, ws.scratch(l))
        return ops

    def make_forward(self, ws: Workspace) -> Callable[[Array], Array]:
        """``forward(xT)``: the outputs (n_out, batch) of inputs ``xT`` (n_0 + 1, batch), bias
        row first, computed in ``ws`` (the returned array is ``ws.actsT[-1]``)."""
        dot, WT0, z0, y = np.dot, self.weights[0].T, ws.zT[0], ws.actsT[-1]
        ops = self._forward_ops(ws)

        def forward(xT: Array) -> Array:
            dot(WT0, xT, z0)
            for op in ops:
                op()
            return y

        return forward

    def make_step(
        self,
        ws: Workspace,
        loss: str = "mse",
        scale: Array | None = None,
        update: bool = False,
    ) -> Callable[[Array, Array], Any]:
        """``step(xT, tT)``: forward, output error, backward for one batch; returns Σ(y − t)².

        Every buffer, weight view and constant is bound once here, so a step is a fixed
        sequence of NumPy calls (18 for the tutorial's 2-2-2 net) with no allocation. ``xT`` is
        the batch one sample per column with the bias row first (the transpose of a row slice
        of the data with its bias column: no copy), ``tT`` its targets (n_out, batch).

        The output error δ = (y − t)·f'(y) (``mse``) or y − t (``cross_entropy``) is multiplied
        by the 0-d array ``scale`` when given (1/batch for ``reduction=mean``; the caller may
        fold the learning rate in). With ``update=True`` each weight matrix then takes the
        plain gradient step ``W -= grad`` as soon as its gradient is known (right after its
        last use in backpropagation): with the learning rate folded into ``scale`` that is
        exactly SGD without momentum or weight decay, one call per layer.
        """
        L, W, G = self.n_layers, self.weights, self.grads
        dot, sub, mul = np.dot, np.subtract, np.multiply
        fwd = self._forward_ops(ws)
        y, d = ws.actsT[L], ws.deltasT[L - 1]
        d_flat = d.reshape(-1)
        back: list[Op] = []
        if loss == "mse":
            back += backprop_ops(self.output_act, y, d, ws.tmpT[L - 1])
        elif loss != "cross_entropy":
            raise ValueError(f"unknown loss {loss!r}")
        if scale is not None:
            back.append(partial(mul, d, scale, d))
        for l in range(L - 1, 0, -1):
            back.append(partial(dot, ws.actsT[l], ws.deltasT[l].T, G[l]))
            back.append(partial(dot, W[l][1:], ws.deltasT[l], ws.deltasT[l - 1]))
            if update:
                back.append(partial(sub, W[l], G[l], W[l]))
            back += backprop_ops(
                self.hidden_act, ws.actsT[l][1:], ws.deltasT[l - 1], ws.tmpT[l - 1]
            )
        WT0, W0, G0, z0, d0T = W[0].T, W[0], G[0], ws.zT[0], ws.deltasT[0].T

        def step(xT: Array, tT: Array) -> Any:
            dot(WT0, xT, z0)
            for op in fwd:
                op()
            sub(y, tT, d)
            sse = dot(d_flat, d_flat)
            for op in back:
                op()
            dot(xT, d0T, G0)
            if update:
                sub(W0, G0, W0)
            return sse

        return step

    def batch_gradients(
        self, X: Array, T: Array, loss: str = "mse", reduction: str = "sum"
    ) -> list[Array]:
        """dE/dW of one batch computed by the training step itself (:meth:`make_step`,
        without its update): what a gradient check should compare with finite differences.
        Returns copies."""
        Xb = add_bias(np.asarray(X, dtype=self.dtype))
        tT = np.ascontiguousarray(np.asarray(T, dtype=self.dtype).T)
        ws = self.workspace(Xb.shape[0])
        scale = np.array(1.0 / Xb.shape[0], self.dtype) if reduction == "mean" else None
        self.make_step(ws, loss, scale, update=False)(Xb.T, tT)
        return [g.copy() for g in self.grads]

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
    for fan_in, fan_out in itertools.pairwise(sizes):
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

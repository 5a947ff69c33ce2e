"""The multi-layer perceptron: weights, and the one forward/backward kernel (backpropagation).

Weights follow the project's weight format: ``W[l]`` maps layer l to layer l+1 and has
shape (fan_in + 1, fan_out); row 0 holds the weights leaving the bias neuron. The bias is
folded into the matrix product: every layer's activation buffer carries the constant ones
of the bias neuron, written once when the buffer is allocated, so ``Z = A @ W`` needs no
copy of the batch.

An :class:`MLP` holds ``members`` networks of one topology. With one member its arrays are
plain matrices; with P members every array gains a leading axis of length P (a
*population*, trained as one computation: weights (P, fan_in + 1, fan_out)). The kernel is
the same code for both: NumPy's ``matmul`` on a stack calls, for each member, the BLAS
routine ``dot`` calls for one network alone, and the elementwise calls act on each member's
numbers alike, so a member's numbers are bit-identical to the same network trained alone
(``tests/test_population.py`` checks it).

Training buffers are allocated once per batch size (:class:`Workspace`) and reused every
epoch; activations and their derivatives are computed in place. Inside, the buffers hold one
sample per column (``Zᵀ = Wᵀ Aᵀ``), so that a layer's units are one contiguous block, and
BLAS takes the transposes as flags, without copies. :meth:`MLP.make_step` binds a whole
training step (forward, output error, backward, optionally the plain gradient step) to one
workspace, so that a step of a small network is a fixed sequence of NumPy calls: for the
tutorial's 2-2-2 net, 18 calls (~1 µs each) and nothing else. Training, the trace and the
gradient check all run this step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from mlplab.nn.activations import Activation, Op, get_activation
from mlplab.nn.losses import Loss

Array = np.ndarray
Step = Callable[[Array, Array], Any]


def add_bias(X: Array) -> Array:
    """Return ``X`` with a leading column of ones (a new array of X's dtype)."""
    out = np.empty((*X.shape[:-1], X.shape[-1] + 1), dtype=X.dtype)
    out[..., 0] = 1.0
    out[..., 1:] = X
    return out


def transposed(a: Array) -> Array:
    """The view with the last two axes swapped (a matrix's transpose, member by member)."""
    return np.swapaxes(a, -1, -2)


def _matmul_for(out: Array) -> Callable[..., Any]:
    """``dot`` for one network's matrices, ``matmul`` for a stack (same BLAS call per member)."""
    return np.dot if out.ndim == 2 else np.matmul


def _product(a: Array, b: Array, out: Array) -> Op:
    """The call writing ``a @ b`` into ``out``."""
    return partial(_matmul_for(out), a, b, out)


def sum_of_squares(d: Array) -> Callable[[], Any]:
    """The call returning Σ d² per member (``ddot``, the same BLAS call for one or a stack)."""
    if d.ndim == 2:
        flat = d.reshape(-1)
        return partial(np.dot, flat, flat)
    P = d.shape[0]
    row, col = d.reshape(P, 1, -1), d.reshape(P, -1, 1)
    out = np.empty((P, 1, 1), d.dtype)
    flat_out = out.reshape(P)

    def sse() -> Array:
        np.matmul(row, col, out)
        return flat_out

    return sse


class Workspace:
    """Buffers for one batch size, allocated once and reused by every batch of that size.

    The buffers hold one sample per *column* (C-contiguous), behind the members axis when
    there is one: ``actsT[l]`` has shape (n_l + 1, batch) with row 0 the constant ones of
    the bias neuron (written once, here), ``zT[l]``, ``deltasT[l]`` and ``tmpT[l]`` have
    shape (n_{l+1}, batch): the pre-activations of layer l + 1, dE/dZ there, and f' there
    after a step. ``actsT[0]`` is the caller's batch, passed to each call. With an identity
    activation the pre-activation and activation buffers are the same memory.
    """

    def __init__(self, net: MLP, batch: int) -> None:
        sizes, L, dtype, lead = net.sizes, net.n_layers, net.dtype, net.lead
        self.batch = batch
        self.aliases = (net.hidden_act.unit_derivative, net.output_act.unit_derivative)
        self.actsT: list[Array] = [np.empty((0, 0), dtype)]
        self.zT: list[Array] = []
        for l in range(1, L):
            a = np.empty((*lead, sizes[l] + 1, batch), dtype)
            a[..., 0, :] = 1.0
            self.actsT.append(a)
            z = a[..., 1:, :] if self.aliases[0] else np.empty((*lead, sizes[l], batch), dtype)
            self.zT.append(z)
        z_out = np.empty((*lead, sizes[L], batch), dtype)
        self.zT.append(z_out)
        self.actsT.append(z_out if self.aliases[1] else np.empty_like(z_out))
        self.deltasT = [np.empty((*lead, sizes[l + 1], batch), dtype) for l in range(L)]
        self.tmpT = [np.empty_like(d) for d in self.deltasT]
        self.scratch = [np.empty_like(z) for z in self.zT]  # for the forward kernels only

    def activation(self, layer: int) -> Array:
        """The output of ``layer`` (1..L) without its bias row."""
        a = self.actsT[layer]
        return a if layer == len(self.zT) else a[..., 1:, :]


class MLP:
    """``members`` fully connected networks of one topology, trained by backpropagation."""

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "sigmoid",
        output_activation: str = "sigmoid",
        negative_slope: float = 0.01,
        dtype: str | np.dtype = "float64",
        members: int = 1,
    ) -> None:
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"sizes must be >= 2 positive widths, got {list(sizes)}")
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.sizes = [int(s) for s in sizes]
        self.dtype = np.dtype(dtype)
        self.members = int(members)
        self.lead: tuple[int, ...] = () if members == 1 else (members,)
        self.hidden_act: Activation = get_activation(activation)
        self.output_act: Activation = get_activation(output_activation)
        self.negative_slope = float(negative_slope)
        self.weights: list[Array] = [
            np.zeros((*self.lead, a + 1, b), self.dtype) for a, b in itertools.pairwise(self.sizes)
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

    def like(self, members: int = 1, dtype: str | np.dtype | None = None) -> MLP:
        """A new network of this topology and these activations (weights zero)."""
        return MLP(
            self.sizes,
            self.hidden_act.name,
            self.output_act.name,
            self.negative_slope,
            self.dtype if dtype is None else dtype,
            members,
        )

    # -- weights ---------------------------------------------------------------------------
    def set_weights(self, weights: Sequence[Array]) -> None:
        """Copy ``weights`` in (one network's matrices, or stacks), checking shapes."""
        if len(weights) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} weight matrices, got {len(weights)}")
        for l, (W, new) in enumerate(zip(self.weights, weights, strict=True)):
            if np.shape(new) != W.shape:
                raise ValueError(f"W{l} has shape {np.shape(new)}, expected {W.shape}")
            W[...] = new

    def set_member(self, member: int, weights: Sequence[Array]) -> None:
        """Copy one member's matrices in."""
        if not self.lead:
            self.set_weights(weights)
            return
        for W, new in zip(self.weights, weights, strict=True):
            W[member] = new

    def get_weights(self) -> list[Array]:
        """A copy of the weights (stacks for a population)."""
        return [W.copy() for W in self.weights]

    def member_weights(self, member: int) -> list[Array]:
        """A copy of one member's matrices."""
        return [(W[member] if self.lead else W).copy() for W in self.weights]

    def member(self, member: int) -> MLP:
        """One member as a network of its own (a copy)."""
        net = self.like()
        net.set_weights(self.member_weights(member))
        return net

    def select(self, members: Sequence[int]) -> MLP:
        """The population of the given members (a copy, in that order)."""
        net = self.like(len(members))
        for i, m in enumerate(members):
            net.set_member(i, self.member_weights(m))
        return net

    def workspace(self, batch: int) -> Workspace:
        """The (cached) buffers for batches of ``batch`` samples."""
        ws = self._workspaces.get(batch)
        if ws is None:
            ws = self._workspaces[batch] = Workspace(self, batch)
        return ws

    # -- the kernel ------------------------------------------------------------------------
    def _derivative_ops(self, act: Activation, a: Array, delta: Array, tmp: Array) -> list[Op]:
        """``delta *= f'`` with f' written into ``tmp`` from the output ``a`` (none if f' = 1)."""
        if act.unit_derivative:
            return []
        if act.derivative is None:
            raise ValueError(
                f"{act.name} has no derivative of its own (softmax needs cross_entropy)"
            )
        return [
            *act.derivative(a, tmp, self.negative_slope),
            partial(np.multiply, delta, tmp, delta),
        ]

    def _forward_ops(self, ws: Workspace) -> list[Op]:
        """The forward pass after layer 0's product, bound to ``ws``."""
        L, ops = self.n_layers, []
        for l in range(L):
            if l > 0:
                ops.append(_product(transposed(self.weights[l]), ws.actsT[l], ws.zT[l]))
            if not ws.aliases[l == L - 1]:  # aliased buffers: identity, nothing to do
                act = self.activation_of(l + 1)
                ops += act.forward(
                    ws.zT[l], ws.activation(l + 1), ws.scratch[l], self.negative_slope
                )
        return ops

    def make_forward(self, ws: Workspace) -> Callable[[Array], Array]:
        """``forward(xT)``: the outputs (n_out, batch) of inputs ``xT`` (n_0 + 1, batch), bias
        row first, computed in ``ws`` (the returned array is ``ws.actsT[-1]``)."""
        mm, WT0, z0, y = _matmul_for(ws.zT[0]), transposed(self.weights[0]), ws.zT[0], ws.actsT[-1]
        ops = self._forward_ops(ws)

        def forward(xT: Array) -> Array:
            mm(WT0, xT, z0)
            for op in ops:
                op()
            return y

        return forward

    def make_step(
        self, ws: Workspace, loss: Loss, scale: Array | None = None, update: bool = False
    ) -> Step:
        """``step(xT, tT)``: forward, output error, backward for one batch; returns Σ(y − t)²
        (per member for a population).

        Every buffer, weight view and constant is bound once here, so a step is a fixed
        sequence of NumPy calls with no allocation. ``xT`` is the batch one sample per column
        with the bias row first (the transpose of a row slice of the data with its bias
        column: no copy), ``tT`` its targets (n_out, batch).

        The output error δ = (y − t)·f'(y_in) (``mse``) or y − t (``cross_entropy``) is
        multiplied by ``scale`` when given (0-d, or (P, 1, 1) for a population: 1/batch for
        ``reduction=mean``; the caller may fold the learning rate in). With ``update=True``
        each weight matrix then takes the plain gradient step ``W -= grad`` as soon as its
        gradient is known: with the learning rate folded into ``scale`` that is plain SGD,
        the only place it is implemented.
        """
        L, W, G = self.n_layers, self.weights, self.grads
        mm, sub = _matmul_for(G[0]), np.subtract
        fwd = self._forward_ops(ws)
        y, d = ws.actsT[L], ws.deltasT[L - 1]
        sse = sum_of_squares(d)
        back: list[Op] = []
        if loss.uses_output_derivative:
            back += self._derivative_ops(self.output_act, y, d, ws.tmpT[L - 1])
        if scale is not None:
            back.append(partial(np.multiply, d, scale, d))
        for l in range(L - 1, 0, -1):
            back.append(_product(ws.actsT[l], transposed(ws.deltasT[l]), G[l]))
            back.append(_product(W[l][..., 1:, :], ws.deltasT[l], ws.deltasT[l - 1]))
            if update:
                back.append(partial(sub, W[l], G[l], W[l]))
            back += self._derivative_ops(
                self.hidden_act, ws.activation(l), ws.deltasT[l - 1], ws.tmpT[l - 1]
            )
        WT0, W0, G0, z0, d0T = transposed(W[0]), W[0], G[0], ws.zT[0], transposed(ws.deltasT[0])

        def step(xT: Array, tT: Array) -> Any:
            mm(WT0, xT, z0)
            for op in fwd:
                op()
            sub(y, tT, d)
            total = sse()
            for op in back:
                op()
            mm(xT, d0T, G0)
            if update:
                sub(W0, G0, W0)
            return total

        return step

    def predict(self, X: Array, batch: int = 4096) -> Array:
        """Outputs for ``X`` (no bias column) of a one-member network, by the training kernel."""
        if self.lead:
            raise ValueError("predict takes one network: use net.member(i)")
        X = np.asarray(X, dtype=self.dtype)
        out = np.empty((X.shape[0], self.sizes[-1]), self.dtype)
        for start in range(0, X.shape[0], batch):
            xT = add_bias(X[start : start + batch]).T
            out[start : start + batch] = self.make_forward(self.workspace(xT.shape[1]))(xT).T
        return out


def init_weights(
    sizes: Sequence[int], method: str, rng: np.random.Generator, scale: float = 1.0
) -> list[Array]:
    """Initial weights of one network, in float64.

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


#: The ``model.init`` choices :func:`init_weights` draws (``file`` reads a weight file).
INITS = ("normal", "xavier", "he")

"""The trace of the first training step: every number of backpropagation, named as in the textbook.

:func:`build_trace` replays the first update of a run (the first batch of the first epoch)
on a fresh network holding a copy of the initial weights, with the kernel training runs
(:meth:`~mlplab.nn.network.MLP.make_step`), and reads each intermediate array from that
step's buffers. The updated weights are those of one training step (:func:`~mlplab.nn.fit`
on that batch): a full-batch run has exactly these weights after its first epoch.
:func:`write_trace` writes them as ``step1.json`` (every array in full, at full precision;
up to a million numbers) and ``step1.md`` (the twelve steps, each formula next to its numbers).

Names. A network with one hidden layer uses the textbook's names:

==================  ===============================================================
``x_bias``          the inputs with a leading column of ones (the bias neuron)
``v``, ``w``        input→hidden and hidden→output weights; row 0 is the bias row
``Z_input``         z_in_j, the hidden units' weighted sums, ``x_bias · v``
``z``, ``z_bias``   the hidden outputs f(z_in_j), and the same with a column of ones
``Y_input``         y_in_k, the output units' weighted sums, ``z_bias · w``
``y_pred``          the outputs y_k = f(y_in_k); ``t`` holds the targets t_k
``theta_k``         the output error term ∂E/∂y_in_k, e.g. (y_k − t_k)·f'(y_in_k)
``delta_k``         the correction for w: ∂E/∂w = z_biasᵀ · theta_k
``theta_in_j``      the error sent back to hidden unit j: theta_k · w[1:]ᵀ
``theta_j``         the hidden error term ∂E/∂z_in_j = theta_in_j · f'(z_in_j)
``delta_j``         the correction for v: ∂E/∂v = x_biasᵀ · theta_j
``v_new, w_new``    the weights after the optimiser's step
==================  ===============================================================

Sign convention: the textbook prints θ_k = (t_k − y_k)·f' in its step 7 but computes
(y_pred − t)·f' and updates ``w − α·δ``; the trace follows the code, so every theta is the
derivative of the loss E and every delta (``grad_W``) is ∂E/∂W, the gradient the optimiser
descends. With ``reduction=mean`` the output error term carries the factor 1/N; with a
softmax output and cross-entropy it is y − t.

Deeper (or shallower) networks use layer-indexed names: ``a0_bias``, ``W0``, ``z_in_1``,
``a1``, ``a1_bias``, ..., ``theta_L``, ``theta_in_l``, ``theta_l``, ``grad_W{l}``,
``W{l}_new`` (layer 0 is the input, layer L the output).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlplab import build
from mlplab.config import Config
from mlplab.nn import TrainData, add_bias, fit
from mlplab.nn.activations import Activation, get_activation
from mlplab.nn.losses import get_loss
from mlplab.nn.network import transposed
from mlplab.nn.optimizers import scheduled_lr

Array = np.ndarray

FORMAT = "mlplab-trace/1"
_MAX_WEIGHT_ROWS = 32  # rows of a weight-shaped matrix shown in step1.md
_MAX_COLUMNS = 12  # columns shown in step1.md
#: step1.json is written for traces of at most this many numbers (~22 bytes each in JSON:
#: ~22 MB, 2 s); a [2000, 2000] network's trace has 16 million (360 MB, 40 s): step1.md only.
JSON_MAX_NUMBERS = 1_000_000


# -- names -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Names:
    """The name of every quantity, textbook style (one hidden layer) or layer-indexed."""

    L: int
    textbook: bool

    def act_bias(self, i: int) -> str:
        if self.textbook:
            return ("x_bias", "z_bias")[i]
        return f"a{i}_bias"

    def act(self, i: int) -> str:
        if self.textbook:
            return {1: "z", 2: "y_pred"}[i]
        return f"a{i}"

    def z_in(self, i: int) -> str:
        if self.textbook:
            return {1: "Z_input", 2: "Y_input"}[i]
        return f"z_in_{i}"

    def weight(self, i: int) -> str:
        return ("v", "w")[i] if self.textbook else f"W{i}"

    def new(self, i: int) -> str:
        return f"{self.weight(i)}_new"

    def change(self, i: int) -> str:
        return f"Delta_{self.weight(i)}"

    def grad(self, i: int) -> str:
        if self.textbook:
            return ("delta_j", "delta_k")[i]
        return f"grad_W{i}"

    def theta(self, i: int) -> str:
        if self.textbook:
            return {1: "theta_j", 2: "theta_k"}[i]
        return f"theta_{i}"

    def theta_in(self, i: int) -> str:
        return "theta_in_j" if self.textbook else f"theta_in_{i}"

    def fprime(self, i: int) -> str:
        return f"fprime_{self.z_in(i)}" if self.textbook else f"fprime_{i}"


def _unit_names(sizes: list[int]) -> list[list[str]]:
    """Unit names per layer, as on the network figure: X1.., Z1.. (or H1_1..), Y1.."""
    L = len(sizes) - 1
    names = []
    for layer, n in enumerate(sizes):
        if layer == 0:
            names.append([f"X{i + 1}" for i in range(n)])
        elif layer == L:
            names.append([f"Y{i + 1}" for i in range(n)])
        elif L == 2:
            names.append([f"Z{i + 1}" for i in range(n)])
        else:
            names.append([f"H{layer}_{i + 1}" for i in range(n)])
    return names


# -- formulas ----------------------------------------------------------------------------
def _update_formula(cfg: Config, W: str, g: str) -> str:
    """The optimiser's first step on ``W`` with gradient ``g``, as a formula."""
    o = cfg.optimizer
    decay = f"g = {g} + {o.weight_decay:g}·{W}; " if o.weight_decay else ""
    grad = "g" if o.weight_decay else g
    if o.name == "adam":
        return (
            f"{decay}m = (1 − β1)·{grad}, s = (1 − β2)·{grad}² (first step), "
            f"{W}_new = {W} − α/(1 − β1) · m / (√s / √(1 − β2) + eps)  "
            f"[β1={o.beta1:g}, β2={o.beta2:g}, eps={o.eps:g}; "
            f"on the first step ≈ {W} − α·sign({grad})]"
        )
    if o.momentum:
        if o.nesterov:
            return (
                f"{decay}b = {grad} (the momentum buffer starts at the first gradient), "
                f"{W}_new = {W} − α·({grad} + μ·b)  [μ={o.momentum:g}]"
            )
        return (
            f"{decay}b = {grad} (the momentum buffer starts at the first gradient), "
            f"{W}_new = {W} − α·b  [μ={o.momentum:g}]"
        )
    return f"{decay}{W}_new = {W} − α·{grad}"


# -- the recorder --------------------------------------------------------------------------
@dataclass
class _Recorder:
    """Collects quantities in order with their formula, labels and whether they are per sample."""

    values: dict[str, Any] = field(default_factory=dict)
    formulas: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    labels: dict[str, dict[str, list[str] | None]] = field(default_factory=dict)
    per_sample: list[str] = field(default_factory=list)

    def add(
        self,
        name: str,
        value: Array | float,
        formula: str,
        columns: list[str] | None = None,
        rows: list[str] | None = None,
        per_sample: bool = False,
    ) -> None:
        arr = np.asarray(value, dtype=np.float64)
        self.values[name] = arr.tolist()
        self.formulas[name] = formula
        self.shapes[name] = list(arr.shape)
        self.labels[name] = {"rows": rows, "columns": columns}
        if per_sample:
            self.per_sample.append(name)


# -- the numbers ---------------------------------------------------------------------------
@dataclass
class _Step:
    """The numbers of one training step, each per sample (one row per sample)."""

    sizes: list[int]
    acts: list[Array]  # acts[i]: layer i's output, with its bias column for i < L
    z_in: list[Array]  # z_in[i] for i = 1..L (z_in[0] unused)
    targets: Array
    theta: dict[int, Array]
    theta_in: dict[int, Array]
    fprime: dict[int, Array]
    grads: list[Array]
    W0: list[Array]
    W_new: list[Array]
    loss: float
    rmse: float
    lr: float
    dtype: str


def _replay(cfg: Config, initial: list[Array], X: Array, T: Array) -> _Step:
    """Run the training kernel on batch (X, T) and read its buffers; then one training step."""
    t, o = cfg.train, cfg.optimizer
    sizes = build.layer_sizes(cfg, int(X.shape[1]), int(T.shape[1]))
    net = build.network(cfg, sizes)
    net.set_weights([np.array(W, copy=True) for W in initial])
    n, L, loss = int(X.shape[0]), net.n_layers, get_loss(t.loss)
    Xb = add_bias(np.asarray(X, dtype=net.dtype))
    Tb = np.ascontiguousarray(T, dtype=net.dtype)
    ws = net.workspace(n)
    scale = np.array(1.0 / n, net.dtype) if t.reduction == "mean" else None
    sse = net.make_step(ws, loss, scale)(transposed(Xb), np.ascontiguousarray(Tb.T))
    acts = [Xb.copy()] + [a.T.copy() for a in ws.actsT[1:]]
    W0 = net.get_weights()
    theta = {i: ws.deltasT[i - 1].T.copy() for i in range(1, L + 1)}
    fprime = {}
    for i in range(1, L + 1):
        if i == L and not loss.uses_output_derivative:
            continue  # softmax with cross-entropy: f' cancels, it is never computed
        unit = net.activation_of(i).unit_derivative
        fprime[i] = np.ones_like(theta[i]) if unit else ws.tmpT[i - 1].T.copy()
    return _Step(
        sizes=sizes,
        acts=acts,
        z_in=[np.empty(0)] + [z.T.copy() for z in ws.zT],
        targets=Tb,
        theta=theta,
        # the kernel multiplies theta_in by f' in place: the same product, kept here
        theta_in={i: np.dot(theta[i + 1], W0[i][1:].T) for i in range(1, L)},
        fprime=fprime,
        grads=[g.copy() for g in net.grads],
        W0=W0,
        W_new=_one_update(cfg, sizes, W0, X, T),
        loss=loss.value(acts[L], Tb, t.reduction),
        rmse=math.sqrt(float(sse) / acts[L].size),
        lr=scheduled_lr(o.lr, o.schedule, 0, o.step_size, o.gamma),
        dtype=str(net.dtype),
    )


def _one_update(
    cfg: Config, sizes: list[int], weights: list[Array], X: Array, T: Array
) -> list[Array]:
    """The weights after one training step on (X, T): :func:`fit` for one epoch of it."""
    net = build.network(cfg, sizes)
    net.set_weights(weights)
    settings = dataclasses.replace(
        build.train_settings(cfg),
        epochs=1,
        batch_size=None,
        shuffle=False,
        tol=0.0,
        patience=None,
        snapshot_epochs=(),
    )
    data = TrainData(np.asarray(X), np.asarray(T))
    results = fit(net, data, build.optimizer([cfg], net), [settings], [np.random.default_rng(0)])
    return results[0].weights


# -- the record ----------------------------------------------------------------------------
def _activations(cfg: Config, L: int) -> list[Activation]:
    """The activation of each layer (index 0, the input, has none: the hidden one stands in)."""
    m = cfg.model
    return [get_activation(m.output_activation if i == L else m.activation) for i in range(L + 1)]


def _hints(N: _Names) -> dict[str, str]:
    """The textbook's per-unit formulas, added to the matrix formulas of one hidden layer."""
    if not N.textbook:
        return {}
    return {
        "x_bias": "  (x_0 = 1 is the bias neuron)",
        "Z_input": "  (z_in_j = v_0j + Σ_i x_i·v_ij)",
        "z": "  (z_j = f(z_in_j))",
        "Y_input": "  (y_in_k = w_0k + Σ_j z_j·w_jk)",
        "y_pred": "  (y_k = f(y_in_k))",
        "theta_in_j": "  (theta_in_j = Σ_k theta_k·w_jk)",
        "delta_k": "  (∂E/∂w_jk = Σ_samples z_j·theta_k, z_0 = 1)",
        "delta_j": "  (∂E/∂v_ij = Σ_samples x_i·theta_j, x_0 = 1)",
    }


def _record_forward(rec: _Recorder, cfg: Config, step: _Step, N: _Names) -> None:
    """Steps 1-6: inputs, weights, weighted sums and activations, layer by layer."""
    L, units, slope, hint = N.L, _unit_names(step.sizes), cfg.model.negative_slope, _hints(N)
    acts = _activations(cfg, L)
    with_bias = [["1", *units[i]] for i in range(L + 1)]
    x0 = N.act_bias(0)
    rec.add(x0, step.acts[0], f"{x0} = [1, x]" + hint.get(x0, ""), with_bias[0], per_sample=True)
    for i in range(L):
        rec.add(
            N.weight(i),
            step.W0[i],
            f"{N.weight(i)}: initial weights, layer {i} → {i + 1}, row 0 = bias",
            units[i + 1],
            [f"B{i + 1}", *units[i]],
        )
    for i in range(1, L + 1):
        z_in, a = N.z_in(i), N.act(i)
        text = f"{z_in} = {N.act_bias(i - 1)} · {N.weight(i - 1)}" + hint.get(z_in, "")
        rec.add(z_in, step.z_in[i], text, units[i], per_sample=True)
        text = f"{a} = f({z_in}), f(s) = {acts[i].describe(slope)} [{acts[i].name}]"
        text += hint.get(a, "") + ("  (the prediction)" if i == L and not N.textbook else "")
        value = step.acts[i][:, 1:] if i < L else step.acts[L]
        rec.add(a, value, text, units[i], per_sample=True)
        if i < L:
            b = N.act_bias(i)
            rec.add(b, step.acts[i], f"{b} = [1, {a}]", with_bias[i], per_sample=True)


def _output_error_formula(cfg: Config, N: _Names, n: int) -> str:
    """theta_L as a formula, with a note on what it folds in."""
    t, L, y = cfg.train, N.L, N.act(N.L)
    if t.loss == "cross_entropy":
        core, note = f"({y} − t)", "softmax with cross-entropy"
    elif cfg.model.output_activation == "identity":
        core, note = f"({y} − t)", "f' = 1"
    else:
        core, note = f"({y} − t)·f'({N.z_in(L)})", ""
    if t.reduction == "mean":
        core += " / N"
        note = ", ".join(x for x in (note, f"N = {n}, reduction=mean") if x)
    return f"{N.theta(L)} = ∂E/∂{N.z_in(L)} = {core}" + (f"  ({note})" if note else "")


def _record_backward(rec: _Recorder, cfg: Config, step: _Step, N: _Names) -> None:
    """Steps 7-11: the loss, the error terms layer by layer and the gradients."""
    L, units, slope, hint = N.L, _unit_names(step.sizes), cfg.model.negative_slope, _hints(N)
    acts, y = _activations(cfg, L), N.act(L)
    rec.add("t", step.targets, "t: the targets of the batch", units[L], per_sample=True)
    scale = "(1/N)·" if cfg.train.reduction == "mean" else ""
    loss = get_loss(cfg.train.loss).formula.format(y=y)
    rec.add("E", step.loss, f"E = {scale}{loss}, summed over the batch's samples and outputs")
    rec.add("rmse", step.rmse, f"rmse = √(mean((t − {y})²)) over this batch (before the update)")
    for i in range(L, 0, -1):
        if i in step.fprime:
            f = acts[i].describe_derivative(N.act(i), N.z_in(i), slope)
            text = f"f'({N.z_in(i)}) = {f} [{acts[i].name}]"
            rec.add(N.fprime(i), step.fprime[i], text, units[i], per_sample=True)
        if i == L:
            text = _output_error_formula(cfg, N, step.acts[0].shape[0])
            rec.add(N.theta(L), step.theta[L], text, units[L], per_sample=True)
        else:
            th_in = N.theta_in(i)
            text = f"{th_in} = {N.theta(i + 1)} · {N.weight(i)}[1:]ᵀ  (bias row left out)"
            rec.add(th_in, step.theta_in[i], text + hint.get(th_in, ""), units[i], per_sample=True)
            text = f"{N.theta(i)} = ∂E/∂{N.z_in(i)} = {th_in} · f'({N.z_in(i)})"
            rec.add(N.theta(i), step.theta[i], text, units[i], per_sample=True)
        g = N.grad(i - 1)
        text = f"{g} = ∂E/∂{N.weight(i - 1)} = {N.act_bias(i - 1)}ᵀ · {N.theta(i)}" + hint.get(
            g, ""
        )
        rec.add(g, step.grads[i - 1], text, units[i], [f"B{i}", *units[i - 1]])


def _record_update(rec: _Recorder, cfg: Config, step: _Step, N: _Names) -> None:
    """Step 12: the new weights and the change the step made."""
    units = _unit_names(step.sizes)
    for i in range(N.L - 1, -1, -1):
        rows, W = [f"B{i + 1}", *units[i]], N.weight(i)
        text = _update_formula(cfg, W, N.grad(i)) + f"  [α = {step.lr:g}]"
        rec.add(N.new(i), step.W_new[i], text, units[i + 1], rows)
        change = step.W_new[i] - step.W0[i]
        text = f"{N.change(i)} = {N.new(i)} − {W}  (the change this step made)"
        rec.add(N.change(i), change, text, units[i + 1], rows)
    if N.textbook:  # the gradients under their calculus names too (same numbers)
        for alias, src in (("dE_dw", "delta_k"), ("dE_dv", "delta_j")):
            rec.values[alias] = rec.values[src]
            rec.formulas[alias] = f"{alias} = {src}"
            rec.shapes[alias] = rec.shapes[src]
            rec.labels[alias] = rec.labels[src]


def build_trace(
    cfg: Config, initial_weights: list[np.ndarray], X: np.ndarray, T: np.ndarray
) -> dict[str, Any]:
    """Replay the first training step on batch (X, T) and record every intermediate quantity.

    ``X`` and ``T`` are the first batch of the first epoch (no bias column), as the trainer
    draws it; ``initial_weights`` the weights before training. The network, loss,
    reduction, optimiser and learning rate (epoch 0 of the schedule) come from ``cfg``.
    Returns a JSON-safe dict: ``values`` (nested lists of floats), ``formulas``, ``steps``
    (the textbook's twelve steps and the quantities each one produces), ``layers``,
    ``lr``, ``loss``, ``reduction``, ``optimizer``, ``batch_size`` and more.
    """
    X, T = np.asarray(X), np.asarray(T)
    if X.ndim != 2 or T.ndim != 2 or X.shape[0] != T.shape[0] or X.shape[0] == 0:
        raise ValueError(f"X and T must be 2-D batches of equal length, got {X.shape}, {T.shape}")
    step = _replay(cfg, initial_weights, X, T)
    L = len(step.sizes) - 1
    N = _Names(L, textbook=L == 2)
    rec = _Recorder()
    _record_forward(rec, cfg, step, N)
    _record_backward(rec, cfg, step, N)
    _record_update(rec, cfg, step, N)
    units, acts = _unit_names(step.sizes), _activations(cfg, L)
    layers = [
        {
            "layer": i,
            "role": "input" if i == 0 else "output" if i == L else "hidden",
            "units": step.sizes[i],
            "names": units[i],
            "activation": None if i == 0 else acts[i].name,
            "bias": i < L,
        }
        for i in range(L + 1)
    ]
    return {
        "format": FORMAT,
        "what": "the first training step: epoch 1, batch 1",
        "notation": "textbook" if N.textbook else "layered",
        "batch_size": int(X.shape[0]),
        "sizes": step.sizes,
        "layers": layers,
        "loss": cfg.train.loss,
        "reduction": cfg.train.reduction,
        "lr": float(step.lr),
        "optimizer": _optimizer_info(cfg),
        "dtype": step.dtype,
        "steps": _steps(N, L, cfg.train.loss),
        "formulas": rec.formulas,
        "shapes": rec.shapes,
        "labels": rec.labels,
        "per_sample": rec.per_sample,
        "values": rec.values,
    }


def _optimizer_info(cfg: Config) -> dict[str, Any]:
    o = cfg.optimizer
    info: dict[str, Any] = {"name": o.name, "lr": o.lr, "schedule": o.schedule}
    if o.name == "adam":
        info.update(beta1=o.beta1, beta2=o.beta2, eps=o.eps)
    else:
        info.update(momentum=o.momentum, nesterov=o.nesterov)
    info["weight_decay"] = o.weight_decay
    return info


def _steps(N: _Names, L: int, loss: str) -> list[dict[str, Any]]:
    """The textbook's twelve steps and the quantities each one produces, for depth ``L``."""
    steps: list[dict[str, Any]] = []

    def step(number: int, layer: int | None, title: str, text: str, names: list[str]) -> None:
        steps.append(
            {"step": number, "layer": layer, "title": title, "text": text, "quantities": names}
        )

    _forward_steps(step, N, L)
    _backward_steps(step, N, L, loss)
    step(
        12,
        None,
        "update the weights",
        "The optimiser moves every weight against its gradient.",
        [name for i in range(L - 1, -1, -1) for name in (N.new(i), N.change(i))],
    )
    return steps


StepAdder = Callable[[int, "int | None", str, str, list[str]], None]


def _forward_steps(step: StepAdder, N: _Names, L: int) -> None:
    """Steps 1-6: the forward pass."""
    step(
        1,
        0,
        "input layer",
        "Each input unit X_i takes its value x_i and passes it to every unit of the next "
        "layer. A bias neuron that always outputs 1 stands in front of the inputs.",
        [N.act_bias(0)],
    )
    for i in range(1, L):
        where = "hidden layer" if N.textbook else f"hidden layer {i}"
        step(
            2,
            i,
            f"{where}: weighted sums",
            "Each hidden unit adds up its inputs, each times the weight of its connection; "
            "the bias row of the weight matrix is the bias neuron's contribution.",
            [N.weight(i - 1), N.z_in(i)],
        )
        step(
            3,
            i,
            f"{where}: activation",
            "The activation function f turns each weighted sum into the unit's output. "
            "A 1 is put in front for the next layer's bias.",
            [N.act(i), N.act_bias(i)],
        )
        step(
            4,
            i,
            f"{where}: send the outputs on",
            f"No new numbers: {N.act_bias(i)} is the input of the next layer.",
            [],
        )
    step(
        5,
        L,
        "output layer: weighted sums",
        "Each output unit adds up the previous layer's outputs times its weights.",
        [N.weight(L - 1), N.z_in(L)],
    )
    step(
        6,
        L,
        "output layer: activation",
        "The output activation gives the network's prediction for every sample of the batch.",
        [N.act(L)],
    )


def _backward_steps(step: StepAdder, N: _Names, L: int, loss: str) -> None:
    """Steps 7-11: the output error and the backward pass."""
    t_text = (
        "Each output compares its prediction with the target. The error term is the "
        "derivative of the loss E with respect to the output's weighted sum. The textbook's "
        "formula prints (t − y)·f', but its code uses (y − t)·f' and updates W − α·δ; we use "
        "(y − t), so that every theta is a derivative of E and every delta a gradient."
    )
    if loss == "cross_entropy":
        t_text += " With a softmax output and the cross-entropy loss, f' cancels: theta = y − t."
    out_names = ["t", "E", "rmse", *([N.fprime(L)] if loss == "mse" else []), N.theta(L)]
    step(7, L, "output error term", t_text, out_names)
    step(
        8,
        L,
        f"correction for {N.weight(L - 1)}",
        "The error term is sent back; summed over the batch, each weight's share is its "
        f"input times the error term: this is the gradient ∂E/∂{N.weight(L - 1)}.",
        [N.grad(L - 1)],
    )
    for i in range(L - 1, 0, -1):
        where = "hidden layer" if N.textbook else f"hidden layer {i}"
        step(
            9,
            i,
            f"{where}: error sent back",
            "Each hidden unit adds up the error terms of the layer above, each times the "
            "weight of its connection (the bias row has no unit below it and is left out).",
            [N.theta_in(i)],
        )
        step(
            10,
            i,
            f"{where}: error term",
            "Multiplied by the derivative of the activation at the unit's weighted sum.",
            [N.fprime(i), N.theta(i)],
        )
        step(
            11,
            i,
            f"correction for {N.weight(i - 1)}",
            f"Sent back to the layer below: the gradient ∂E/∂{N.weight(i - 1)}.",
            [N.grad(i - 1)],
        )


# -- writing -----------------------------------------------------------------------------
def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if x == 0 or 1e-4 <= abs(x) < 1e6:
        return f"{x:.8f}"
    return f"{x:.6e}"


def _matrix_block(
    value: list[Any],
    rows: list[str] | None,
    columns: list[str] | None,
    max_rows: int,
    row_label: Callable[[int], str],
    unit: str,
    whole: bool,
) -> list[str]:
    """A fixed-width text table of a 2-D array: the first ``max_rows`` rows, with a note."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    n_rows, n_cols = arr.shape
    show_r, show_c = min(n_rows, max_rows), min(n_cols, _MAX_COLUMNS)
    cols = list(columns or [f"[{j}]" for j in range(n_cols)])[:show_c]
    labels = [rows[i] if rows else row_label(i) for i in range(show_r)]
    cells = [[_fmt(float(v)) for v in arr[i, :show_c]] for i in range(show_r)]
    width = max([len(c) for c in cols] + [len(c) for r in cells for c in r] + [1])
    lw = max([len(s) for s in labels] + [1])
    lines = [" " * lw + "  " + "  ".join(c.rjust(width) for c in cols)]
    lines += [
        labels[i].ljust(lw) + "  " + "  ".join(c.rjust(width) for c in cells[i])
        for i in range(show_r)
    ]
    notes = []
    if show_r < n_rows:
        notes.append(f"{n_rows - show_r} more {unit}s not shown ({show_r} of {n_rows})")
    if show_c < n_cols:
        notes.append(f"{n_cols - show_c} more columns not shown ({show_c} of {n_cols})")
    out = ["```", *lines, "```"]
    if notes:
        where = ": every number is in step1.json" if whole else ""
        out.append("*" + "; ".join(notes) + where + ".*")
    return out


def _numbers(trace: dict[str, Any]) -> int:
    """How many numbers the trace's arrays hold."""
    return sum(math.prod(shape) for shape in trace["shapes"].values())


def _markdown(trace: dict[str, Any], max_rows: int, whole: bool) -> str:
    values, formulas = trace["values"], trace["formulas"]
    labels, per_sample = trace["labels"], set(trace["per_sample"])
    opt = trace["optimizer"]
    opt_text = ", ".join(f"{k}={v}" for k, v in opt.items() if k != "name")
    layer_text = " → ".join(
        f"{ly['units']} {ly['role']}" + (f" ({ly['activation']})" if ly["activation"] else "")
        for ly in trace["layers"]
    )
    n = trace["batch_size"]
    out = [
        "# The first training step, number by number",
        "",
        f"Epoch 1, batch 1: **{n} sample{'s' if n != 1 else ''}**. "
        f"Network: {layer_text}; a bias neuron (constant 1) feeds every layer.",
        f"Loss **{trace['loss']}** with reduction **{trace['reduction']}**; optimiser "
        f"**{opt['name']}** ({opt_text}); learning rate of this step α = {trace['lr']:g}; "
        f"dtype {trace['dtype']}.",
        "",
        "Weight matrices have one row per unit of the layer below, row 0 (B) for the bias "
        "neuron, and one column per unit of the layer above. Per-sample arrays have one row "
        f"per sample; the first {max_rows} are shown. Numbers are rounded here; "
        + (
            "`step1.json` holds every array in full, at full precision."
            if whole
            else f"`step1.json`, every array in full, is written for traces of at most "
            f"{JSON_MAX_NUMBERS:,} numbers: this one has {_numbers(trace):,}, so it is left out."
        ),
        "",
    ]
    for st in trace["steps"]:
        out += [f"## Step {st['step']}: {st['title']}", "", st["text"], ""]
        for name in st["quantities"]:
            shape = trace["shapes"][name]
            out += [
                f"**{name}**" + (f"  [{' × '.join(str(s) for s in shape)}]" if shape else ""),
                "",
                f"    {formulas[name]}",
                "",
            ]
            if not shape:
                out += [f"    {name} = {_fmt(float(values[name]))}", ""]
                continue
            sample = name in per_sample
            out += _matrix_block(
                values[name],
                labels[name]["rows"],
                labels[name]["columns"],
                max_rows if sample else _MAX_WEIGHT_ROWS,
                (lambda i: f"sample {i + 1}") if sample else (lambda i: f"[{i}]"),
                "row",
                whole,
            )
            out.append("")
    return "\n".join(out)


def _json(obj: Any, indent: int = 0) -> str:
    """JSON with one line per matrix row (floats as ``repr``: exact round trip)."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, dict | list) for v in obj):
        items = [inner + _json(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def write_trace(trace: dict[str, Any], out_dir: Path, max_rows: int) -> list[Path]:
    """Write ``out_dir/step1.json`` (every array in full; up to :data:`JSON_MAX_NUMBERS`
    numbers) and ``out_dir/step1.md`` (readable); return the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    whole = _numbers(trace) <= JSON_MAX_NUMBERS
    json_path = out_dir / "step1.json"
    md_path = out_dir / "step1.md"
    if whole:
        json_path.write_text(_json(trace) + "\n", encoding="utf-8")
    md_path.write_text(_markdown(trace, max(1, int(max_rows)), whole) + "\n", encoding="utf-8")
    return [json_path, md_path] if whole else [md_path]

"""The trace of the first training step: every number of backpropagation, named as in the textbook.

:func:`build_trace` replays the first update of a run (the first batch of the first epoch)
with the engine's own pieces — :meth:`MLP.forward_buffers`, :func:`output_delta`,
:meth:`MLP.backward_buffers` and the run's optimiser — on a fresh network holding a copy of
the initial weights, and records each intermediate array. :func:`write_trace` writes them
as ``step1.json`` (every array in full, at full precision) and ``step1.md`` (the twelve
steps, each formula next to its numbers).

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

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlplab.config import Config
from mlplab.nn import MLP, add_bias
from mlplab.nn.losses import loss_value, output_delta
from mlplab.nn.optimizers import scheduled_lr

Array = np.ndarray

FORMAT = "mlplab-trace/1"
_MAX_WEIGHT_ROWS = 32  # rows of a weight-shaped matrix shown in step1.md
_MAX_COLUMNS = 12  # columns shown in step1.md


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
_ACTIVATION_FORMULA = {
    "sigmoid": "1 / (1 + e^(−s))",
    "tanh": "tanh(s)",
    "relu": "max(s, 0)",
    "identity": "s",
    "softmax": "e^(s_k) / Σ_k' e^(s_k')",
}


def _activation_formula(name: str, slope: float) -> str:
    if name == "leaky_relu":
        return f"max(s, {slope:g}·s)"
    return _ACTIVATION_FORMULA[name]


def _derivative_formula(name: str, out: str, pre: str, slope: float) -> str:
    """f'(pre) written with the layer's output ``out`` (the engine computes it from f(s))."""
    return {
        "sigmoid": f"{out}·(1 − {out})",
        "tanh": f"1 − {out}²",
        "relu": f"1 if {pre} > 0 else 0",
        "leaky_relu": f"1 if {pre} > 0 else {slope:g}",
        "identity": "1",
    }[name]


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


# -- the trace ---------------------------------------------------------------------------
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
    from mlplab.pipeline import build_optimizer

    m, t, o = cfg.model, cfg.train, cfg.optimizer
    X = np.asarray(X)
    T = np.asarray(T)
    if X.ndim != 2 or T.ndim != 2 or X.shape[0] != T.shape[0] or X.shape[0] == 0:
        raise ValueError(f"X and T must be 2-D batches of equal length, got {X.shape}, {T.shape}")
    sizes = [int(X.shape[1]), *[int(h) for h in m.hidden], int(T.shape[1])]
    net = MLP(sizes, m.activation, m.output_activation, m.negative_slope, t.dtype)
    net.set_weights([np.array(W, copy=True) for W in initial_weights])
    optimizer = build_optimizer(cfg, net)
    lr = scheduled_lr(o.lr, o.schedule, 0, o.step_size, o.gamma)
    L, n = net.n_layers, int(X.shape[0])
    N = _Names(L, textbook=L == 2)
    units = _unit_names(sizes)
    slope = m.negative_slope
    act_names = [m.activation if 0 < i < L else m.output_activation for i in range(L + 1)]

    # forward (steps 1-6), with the engine's buffers
    Xb = add_bias(np.asarray(X, dtype=net.dtype))
    Tb = np.ascontiguousarray(T, dtype=net.dtype)
    ws = net.workspace(n)
    W0 = net.get_weights()
    y = net.forward_buffers(Xb, ws).copy()
    acts = [Xb.copy()] + [a.copy() for a in ws.acts[1:]]  # acts[i] carries a bias column, i < L
    z_in = [np.empty(0)] + [z.copy() for z in ws.z]  # z_in[i] for i = 1..L

    # output error term (step 7), with the engine's output_delta
    sse = output_delta(y, Tb, ws.deltas[-1], ws.tmp[-1], net.output_act, t.loss, t.reduction)
    theta = {L: ws.deltas[-1].copy()}
    fprime: dict[int, Array] = {}
    if t.loss == "mse":
        fprime[L] = np.empty_like(y)
        net.output_act.grad_from_output(y, fprime[L])

    # backward (steps 8-11), with the engine's backward pass
    grads = [g.copy() for g in net.backward_buffers(ws)]
    theta_in: dict[int, Array] = {}
    for i in range(L - 1, 0, -1):
        theta[i] = ws.deltas[i - 1].copy()
        fprime[i] = ws.tmp[i - 1].copy()
        # the engine multiplies theta_in by f' in place: the same product, kept here
        theta_in[i] = np.dot(theta[i + 1], W0[i][1:].T)

    # update (step 12), with the run's optimiser (it uses its gradient arrays as scratch)
    optimizer.step([g.copy() for g in grads], lr)
    W_new = net.get_weights()

    # -- record ------------------------------------------------------------------------
    rec = _Recorder()
    mean = t.reduction == "mean"
    with_bias = [["1", *units[i]] for i in range(L + 1)]
    weight_rows = [[f"B{i + 1}", *units[i]] for i in range(L)]

    hints: dict[str, str] = {}
    if N.textbook:
        hints = {
            "x_bias": "  (x_0 = 1 is the bias neuron)",
            "Z_input": "  (z_in_j = v_0j + Σ_i x_i·v_ij)",
            "z": "  (z_j = f(z_in_j))",
            "Y_input": "  (y_in_k = w_0k + Σ_j z_j·w_jk)",
            "y_pred": "  (y_k = f(y_in_k))",
            "theta_in_j": "  (theta_in_j = Σ_k theta_k·w_jk)",
            "delta_k": "  (∂E/∂w_jk = Σ_samples z_j·theta_k, z_0 = 1)",
            "delta_j": "  (∂E/∂v_ij = Σ_samples x_i·theta_j, x_0 = 1)",
        }

    def formula(name: str, text: str) -> str:
        return text + hints.get(name, "")

    rec.add(
        N.act_bias(0),
        acts[0],
        formula(N.act_bias(0), f"{N.act_bias(0)} = [1, x]"),
        with_bias[0],
        per_sample=True,
    )
    for i in range(L):
        rec.add(
            N.weight(i),
            W0[i],
            f"{N.weight(i)}: initial weights, layer {i} → {i + 1}, row 0 = bias",
            units[i + 1],
            weight_rows[i],
        )
    for i in range(1, L + 1):
        f = act_names[i]
        rec.add(
            N.z_in(i),
            z_in[i],
            formula(N.z_in(i), f"{N.z_in(i)} = {N.act_bias(i - 1)} · {N.weight(i - 1)}"),
            units[i],
            per_sample=True,
        )
        out_note = "  (the prediction)" if i == L and not N.textbook else ""
        rec.add(
            N.act(i),
            acts[i][:, 1:] if i < L else acts[L],
            formula(
                N.act(i),
                f"{N.act(i)} = f({N.z_in(i)}), f(s) = {_activation_formula(f, slope)} [{f}]",
            )
            + out_note,
            units[i],
            per_sample=True,
        )
        if i < L:
            rec.add(
                N.act_bias(i),
                acts[i],
                f"{N.act_bias(i)} = [1, {N.act(i)}]",
                with_bias[i],
                per_sample=True,
            )
    y_name = N.act(L)
    rec.add("t", Tb, "t: the targets of the batch", units[L], per_sample=True)
    scale = "(1/N)·" if mean else ""
    if t.loss == "mse":
        e_formula = f"E = {scale}½ Σ (t − {y_name})², summed over the batch's samples and outputs"
    else:
        e_formula = f"E = −{scale}Σ t·log {y_name}, summed over the batch's samples and outputs"
    rec.add("E", loss_value(y, Tb, t.loss, t.reduction), e_formula)
    rec.add(
        "rmse",
        math.sqrt(sse / y.size),
        f"rmse = √(mean((t − {y_name})²)) over this batch (before the update)",
    )
    for i in range(L, 0, -1):
        if i in fprime:
            f = act_names[i]
            rec.add(
                N.fprime(i),
                fprime[i],
                f"f'({N.z_in(i)}) = {_derivative_formula(f, N.act(i), N.z_in(i), slope)} [{f}]",
                units[i],
                per_sample=True,
            )
        if i == L:
            if t.loss == "cross_entropy":
                core, note = f"({y_name} − t)", "softmax with cross-entropy"
            elif act_names[L] == "identity":
                core, note = f"({y_name} − t)", "f' = 1"
            else:
                core, note = f"({y_name} − t)·f'({N.z_in(L)})", ""
            if mean:
                core += " / N"
                note = ", ".join(x for x in (note, f"N = {n}, reduction=mean") if x)
            text = f"{N.theta(L)} = ∂E/∂{N.z_in(L)} = {core}" + (f"  ({note})" if note else "")
            rec.add(N.theta(L), theta[L], text, units[L], per_sample=True)
        else:
            rec.add(
                N.theta_in(i),
                theta_in[i],
                formula(
                    N.theta_in(i),
                    f"{N.theta_in(i)} = {N.theta(i + 1)} · {N.weight(i)}[1:]ᵀ  (bias row left out)",
                ),
                units[i],
                per_sample=True,
            )
            rec.add(
                N.theta(i),
                theta[i],
                f"{N.theta(i)} = ∂E/∂{N.z_in(i)} = {N.theta_in(i)} · f'({N.z_in(i)})",
                units[i],
                per_sample=True,
            )
        rec.add(
            N.grad(i - 1),
            grads[i - 1],
            formula(
                N.grad(i - 1),
                f"{N.grad(i - 1)} = ∂E/∂{N.weight(i - 1)} = {N.act_bias(i - 1)}ᵀ · {N.theta(i)}",
            ),
            units[i],
            weight_rows[i - 1],
        )
    for i in range(L - 1, -1, -1):
        rec.add(
            N.new(i),
            W_new[i],
            _update_formula(cfg, N.weight(i), N.grad(i)) + f"  [α = {lr:g}]",
            units[i + 1],
            weight_rows[i],
        )
        rec.add(
            N.change(i),
            W_new[i] - W0[i],
            f"{N.change(i)} = {N.new(i)} − {N.weight(i)}  (the change this step made)",
            units[i + 1],
            weight_rows[i],
        )
    if N.textbook:  # the gradients under their calculus names too (same numbers)
        rec.values["dE_dw"] = rec.values["delta_k"]
        rec.values["dE_dv"] = rec.values["delta_j"]
        for alias, src in (("dE_dw", "delta_k"), ("dE_dv", "delta_j")):
            rec.formulas[alias] = f"{alias} = {src}"
            rec.shapes[alias] = rec.shapes[src]
            rec.labels[alias] = rec.labels[src]

    layers = [
        {
            "layer": i,
            "role": "input" if i == 0 else "output" if i == L else "hidden",
            "units": sizes[i],
            "names": units[i],
            "activation": None if i == 0 else act_names[i],
            "bias": i < L,
        }
        for i in range(L + 1)
    ]
    return {
        "format": FORMAT,
        "what": "the first training step: epoch 1, batch 1",
        "notation": "textbook" if N.textbook else "layered",
        "batch_size": n,
        "sizes": sizes,
        "layers": layers,
        "loss": t.loss,
        "reduction": t.reduction,
        "lr": float(lr),
        "optimizer": _optimizer_info(cfg),
        "dtype": str(net.dtype),
        "steps": _steps(N, L, t.loss),
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
    step(
        12,
        None,
        "update the weights",
        "The optimiser moves every weight against its gradient.",
        [name for i in range(L - 1, -1, -1) for name in (N.new(i), N.change(i))],
    )
    return steps


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
        out.append("*" + "; ".join(notes) + ": every number is in step1.json.*")
    return out


def _markdown(trace: dict[str, Any], max_rows: int) -> str:
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
        "`step1.json` holds every array in full, at full precision.",
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
    """Write ``out_dir/step1.json`` (every array in full) and ``out_dir/step1.md`` (readable)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "step1.json"
    md_path = out_dir / "step1.md"
    json_path.write_text(_json(trace) + "\n", encoding="utf-8")
    md_path.write_text(_markdown(trace, max(1, int(max_rows))) + "\n", encoding="utf-8")
    return [json_path, md_path]

"""The training loop: epochs of (mini-)batches, stopping rules, history, divergence, interrupts.

The train RMSE of an epoch is measured as in the tutorial: from the outputs of the
forward passes of that epoch (before each batch's update), sqrt(mean((t − y)²)) over all
training samples and outputs. For a full batch this is the RMSE of the weights at the
start of the epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlplab.nn.network import MLP, add_bias
from mlplab.nn.optimizers import SGD, Optimizer, scheduled_lr

Array = np.ndarray
EpochCallback = Callable[[int, float], None]


@dataclass
class TrainSettings:
    """Everything the loop needs besides the network, data and optimiser."""

    epochs: int = 10000
    batch_size: int | None = None
    shuffle: bool = True
    loss: str = "mse"
    reduction: str = "sum"
    tol: float = 1e-6
    patience: int | None = None
    schedule: str = "constant"
    step_size: int = 1000
    gamma: float = 0.5
    classification: bool = False
    snapshot_epochs: Sequence[int] = ()
    callback_every: int = 50


@dataclass
class TrainResult:
    """What training produced: per-epoch history, final weights, why it stopped."""

    history: dict[str, Array]
    weights: list[Array]
    epochs_run: int
    seconds: float
    stop_reason: str
    failure: str | None = None
    interrupted: bool = False
    best_epoch: int | None = None
    snapshots: dict[int, list[Array]] = field(default_factory=dict)


def _batches(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    size = n if batch_size is None else min(batch_size, n)
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _folds_lr(optimizer: Optimizer) -> bool:
    """Plain SGD (no momentum, no weight decay): W -= lr·g, lr can go into the output error."""
    return type(optimizer) is SGD and optimizer.momentum == 0.0 and not optimizer.weight_decay


class _Validation:
    """The validation RMSE (and accuracy) of the current weights, in preallocated buffers."""

    def __init__(self, net: MLP, X: Array, Y: Array, chunk: int = 4096) -> None:
        dtype = net.dtype
        self.Xb = add_bias(np.asarray(X, dtype=dtype))
        self.TT = np.ascontiguousarray(np.asarray(Y, dtype=dtype).T)
        n = self.Xb.shape[0]
        self.denom = 1.0 / (n * self.TT.shape[0])
        self.parts = []
        for a, b in _batches(n, chunk):
            ws = net.workspace(b - a)
            self.parts.append(
                (
                    self.Xb[a:b].T,
                    self.TT[:, a:b],
                    net.make_forward(ws),
                    np.empty_like(ws.deltasT[-1]),
                )
            )

    def __call__(self, classification: bool) -> tuple[float, float]:
        sse, correct = 0.0, 0
        for xT, tT, forward, diff in self.parts:
            yT = forward(xT)
            np.subtract(yT, tT, out=diff)
            flat = diff.reshape(-1)
            sse += float(np.dot(flat, flat))
            if classification:
                correct += int(np.count_nonzero(yT.argmax(0) == tT.argmax(0)))
        return math.sqrt(sse * self.denom), correct / self.Xb.shape[0]


def fit(
    net: MLP,
    X: Array,
    Y: Array,
    optimizer: Optimizer,
    settings: TrainSettings,
    rng: np.random.Generator,
    X_val: Array | None = None,
    Y_val: Array | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train ``net`` in place; returns the history (numpy arrays, one entry per epoch).

    The data are copied once, in the network's dtype: the inputs with their bias column
    (one sample per row), the targets transposed (one sample per column, the layout of the
    workspaces). A batch is a view of them (of their shuffled copies when shuffling, redone
    in place each epoch), and each batch size gets one compiled step
    (:meth:`MLP.make_step`). With plain SGD the learning rate (and 1/batch for
    ``reduction=mean``) multiplies the output error once and each matrix takes
    ``W -= grad`` right in the backward pass; other optimisers get the gradients.
    """
    s = settings
    if s.loss not in ("mse", "cross_entropy"):
        raise ValueError(f"unknown loss {s.loss!r}")
    dtype = net.dtype
    Xb_all = add_bias(np.asarray(X, dtype=dtype))
    TT_all = np.ascontiguousarray(np.asarray(Y, dtype=dtype).T)
    n = Xb_all.shape[0]
    spans = _batches(n, s.batch_size)
    shuffle = s.shuffle and len(spans) > 1
    Xs, Ts = Xb_all, TT_all
    if shuffle:
        Xs, Ts = np.empty_like(Xb_all), np.empty_like(TT_all)
    classification = s.classification
    validate = (
        _Validation(net, X_val, Y_val)
        if X_val is not None and Y_val is not None and len(X_val) > 0
        else None
    )
    hist_rmse = np.empty(s.epochs)
    hist_val = np.empty(s.epochs) if validate is not None else None
    hist_acc = np.empty(s.epochs) if classification else None
    hist_val_acc = np.empty(s.epochs) if (classification and validate is not None) else None
    denom = 1.0 / (n * TT_all.shape[0])
    snapshot_at = set(s.snapshot_epochs)
    snapshots: dict[int, list[Array]] = {}
    if 0 in snapshot_at:
        snapshots[0] = net.get_weights()

    # one compiled step per batch size; ``scales`` are the 0-d arrays multiplying δ_out
    fold = _folds_lr(optimizer)
    base_lr = optimizer.lr
    constant_lr = s.schedule == "constant"
    steps: dict[int, tuple[Callable[[Array, Array], Any], Array | None, float]] = {}
    for a, b in spans:
        size = b - a
        if size in steps:
            continue
        per_sample = 1.0 / size if s.reduction == "mean" else 1.0
        factor = base_lr * per_sample if fold else per_sample
        scale = None if factor == 1.0 and constant_lr else np.array(factor, dtype)
        step = net.make_step(net.workspace(size), s.loss, scale, update=fold)
        steps[size] = (step, scale, per_sample)
    batches = [
        (Xs[a:b].T, Ts[:, a:b], steps[b - a][0], net.workspace(b - a).actsT[-1]) for a, b in spans
    ]
    grads, opt_step = net.grads, optimizer.step

    # the one-batch case (the tutorial's full batch) skips the batch loop
    only = batches[0] if len(batches) == 1 and fold and not classification else None
    sqrt, isfinite, tol, every = math.sqrt, math.isfinite, s.tol, s.callback_every

    best_val, best_epoch, best_weights, wait = math.inf, None, None, 0
    stop_reason, failure, interrupted = "max_epochs", None, False
    prev = math.nan
    epoch = 0
    lr = base_lr
    t0 = time.perf_counter()
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected below
            for epoch in range(1, s.epochs + 1):
                if not constant_lr:
                    lr = scheduled_lr(base_lr, s.schedule, epoch - 1, s.step_size, s.gamma)
                    if fold:
                        for _, scale, per_sample in steps.values():
                            assert scale is not None
                            scale[()] = lr * per_sample
                if shuffle:
                    perm = rng.permutation(n)
                    np.take(Xb_all, perm, axis=0, out=Xs)
                    np.take(TT_all, perm, axis=1, out=Ts)
                if only is not None:
                    sse = float(only[2](only[0], only[1]))
                else:
                    sse = 0.0
                    correct = 0
                    for xT, tT, step, yT in batches:
                        sse += float(step(xT, tT))
                        if classification:  # the step leaves the batch's outputs in yT
                            correct += int(np.count_nonzero(yT.argmax(0) == tT.argmax(0)))
                        if not fold:
                            opt_step(grads, lr)
                    if hist_acc is not None:
                        hist_acc[epoch - 1] = correct / n
                rmse = sqrt(sse * denom)
                hist_rmse[epoch - 1] = rmse
                if not isfinite(rmse):
                    failure = f"diverged at epoch {epoch}: loss={sse}"
                    stop_reason = "diverged"
                    epoch -= 1  # keep only the finite history
                    break
                if snapshot_at and epoch in snapshot_at:
                    snapshots[epoch] = net.get_weights()
                if on_epoch is not None and epoch % every == 0:
                    on_epoch(epoch, rmse)
                if validate is not None:
                    assert hist_val is not None
                    val, val_acc = validate(classification)
                    hist_val[epoch - 1] = val
                    if hist_val_acc is not None:
                        hist_val_acc[epoch - 1] = val_acc
                    if s.patience is not None:
                        if val < best_val - tol:
                            best_val, best_epoch, wait = val, epoch, 0
                            best_weights = net.get_weights()
                        else:
                            wait += 1
                            if wait >= s.patience:
                                stop_reason = "early_stopping"
                                break
                if tol > 0 and abs(rmse - prev) < tol:
                    stop_reason = "tolerance"
                    break
                prev = rmse
            else:
                epoch = s.epochs
    except KeyboardInterrupt:
        interrupted = True
        stop_reason = "interrupted"
        epoch -= 1  # the interrupted epoch is incomplete
    seconds = time.perf_counter() - t0
    if best_weights is not None and not interrupted and failure is None:
        net.set_weights(best_weights)
    history = {"train_rmse": hist_rmse[:epoch].copy()}
    if hist_val is not None:
        history["val_rmse"] = hist_val[:epoch].copy()
    if hist_acc is not None:
        history["train_accuracy"] = hist_acc[:epoch].copy()
    if hist_val_acc is not None:
        history["val_accuracy"] = hist_val_acc[:epoch].copy()
    return TrainResult(
        history=history,
        weights=net.get_weights(),
        epochs_run=epoch,
        seconds=seconds,
        stop_reason=stop_reason,
        failure=failure,
        interrupted=interrupted,
        best_epoch=best_epoch,
        snapshots=snapshots,
    )

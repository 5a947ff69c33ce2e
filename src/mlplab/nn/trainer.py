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

import numpy as np

from mlplab.nn.losses import output_delta
from mlplab.nn.network import MLP, add_bias
from mlplab.nn.optimizers import Optimizer, scheduled_lr

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
    """Train ``net`` in place; returns the history (numpy arrays, one entry per epoch)."""
    s = settings
    dtype = net.dtype
    Xb_all = add_bias(np.asarray(X, dtype=dtype))
    T_all = np.ascontiguousarray(Y, dtype=dtype)
    n = Xb_all.shape[0]
    spans = _batches(n, s.batch_size)
    shuffle = s.shuffle and len(spans) > 1
    if shuffle:
        Xb_sh = np.empty_like(Xb_all)
        T_sh = np.empty_like(T_all)
    has_val = X_val is not None and Y_val is not None and len(X_val) > 0
    hist_rmse = np.empty(s.epochs)
    hist_val = np.empty(s.epochs) if has_val else None
    hist_acc = np.empty(s.epochs) if s.classification else None
    hist_val_acc = np.empty(s.epochs) if (s.classification and has_val) else None
    denom = 1.0 / (n * T_all.shape[1])
    snapshot_at = set(s.snapshot_epochs)
    snapshots: dict[int, list[Array]] = {}
    if 0 in snapshot_at:
        snapshots[0] = net.get_weights()
    workspaces = [(a, b, net.workspace(b - a)) for a, b in spans]
    out_act, loss, reduction = net.output_act, s.loss, s.reduction
    forward, backward, step = net.forward_buffers, net.backward_buffers, optimizer.step
    base_lr = optimizer.lr
    best_val, best_epoch, best_weights, wait = math.inf, None, None, 0
    stop_reason, failure, interrupted = "max_epochs", None, False
    prev = math.nan
    epoch = 0
    t0 = time.perf_counter()
    try:
        for epoch in range(1, s.epochs + 1):
            lr = base_lr if s.schedule == "constant" else scheduled_lr(
                base_lr, s.schedule, epoch - 1, s.step_size, s.gamma
            )
            if shuffle:
                perm = rng.permutation(n)
                np.take(Xb_all, perm, axis=0, out=Xb_sh)
                np.take(T_all, perm, axis=0, out=T_sh)
                Xs, Ts = Xb_sh, T_sh
            else:
                Xs, Ts = Xb_all, T_all
            sse = 0.0
            correct = 0
            for a, b, ws in workspaces:
                t = Ts[a:b]
                y = forward(Xs[a:b], ws)
                if hist_acc is not None:
                    correct += int(np.count_nonzero(y.argmax(1) == t.argmax(1)))
                sse += output_delta(y, t, ws.deltas[-1], ws.tmp[-1], out_act, loss, reduction)
                step(backward(ws), lr)
            rmse = math.sqrt(sse * denom)
            hist_rmse[epoch - 1] = rmse
            if hist_acc is not None:
                hist_acc[epoch - 1] = correct / n
            if not math.isfinite(rmse):
                failure = f"diverged at epoch {epoch}: loss={sse}"
                stop_reason = "diverged"
                epoch -= 1  # keep only the finite history
                break
            if epoch in snapshot_at:
                snapshots[epoch] = net.get_weights()
            if on_epoch is not None and epoch % s.callback_every == 0:
                on_epoch(epoch, rmse)
            if hist_val is not None:
                assert X_val is not None and Y_val is not None
                yv = net.predict(X_val)
                val = math.sqrt(float(np.mean((np.asarray(Y_val, dtype) - yv) ** 2)))
                hist_val[epoch - 1] = val
                if hist_val_acc is not None:
                    hist_val_acc[epoch - 1] = float(np.mean(yv.argmax(1) == Y_val.argmax(1)))
                if s.patience is not None:
                    if val < best_val - s.tol:
                        best_val, best_epoch, wait = val, epoch, 0
                        best_weights = net.get_weights()
                    else:
                        wait += 1
                        if wait >= s.patience:
                            stop_reason = "early_stopping"
                            break
            if s.tol > 0 and abs(rmse - prev) < s.tol:
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

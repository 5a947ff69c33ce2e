"""The training loop: epochs of (mini-)batches, stopping rules, history, divergence, interrupts.

:func:`fit` trains one network or a population of them (:class:`~mlplab.nn.network.MLP`
with P members) as one computation. Each member has its own data, initial weights,
optimiser hyperparameters, learning-rate schedule, epochs and stopping rules
(:class:`TrainSettings`); a member that meets its tolerance, runs out of patience, reaches
its last epoch or diverges stops at its own epoch with its own weights, and the others go
on without it (the population is compacted: it never computes for a stopped member).

The train RMSE of an epoch is measured as in the tutorial: from the outputs of the forward
passes of that epoch (before each batch's update), sqrt(mean((t − y)²)) over all training
samples and outputs. For a full batch this is the RMSE of the weights at the start of the
epoch. Histories grow in chunks, so memory follows the epochs actually run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from mlplab.nn.activations import Op
from mlplab.nn.losses import get_loss
from mlplab.nn.network import MLP, Step, add_bias, sum_of_squares, transposed
from mlplab.nn.optimizers import Optimizer, member_values, scheduled_lr

Array = np.ndarray


@dataclass
class TrainSettings:
    """Everything the loop needs for one member besides the network, data and optimiser.

    ``batch_size``, ``loss`` and ``classification`` are the population's (every member
    has the same); the rest is each member's own.
    """

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


@dataclass
class TrainData:
    """The samples of every member: (n, features) arrays, stacked (P, n, features) for P > 1."""

    X: Array
    Y: Array
    X_val: Array | None = None
    Y_val: Array | None = None

    @property
    def has_validation(self) -> bool:
        """Whether there is a non-empty validation split."""
        return self.X_val is not None and self.Y_val is not None and self.X_val.shape[-2] > 0


@dataclass
class TrainResult:
    """What training produced for one member: history, final weights, why it stopped."""

    history: dict[str, Array]
    weights: list[Array]
    epochs_run: int
    seconds: float
    stop_reason: str
    failure: str | None = None
    interrupted: bool = False
    best_epoch: int | None = None
    snapshots: dict[int, list[Array]] = field(default_factory=dict)


class History:
    """Per-epoch series of every member, grown as needed (doubling: memory follows the epochs
    actually run, not ``epochs``)."""

    CHUNK = 4096

    def __init__(self, keys: Sequence[str], members: int) -> None:
        self.data = {k: np.full((self.CHUNK, members), np.nan) for k in keys}
        self.train_rmse = self.data["train_rmse"]  # the one series every epoch writes
        self.capacity = self.CHUNK  # epochs the tables hold before they grow
        self.length = np.zeros(members, dtype=np.int64)  # epochs recorded per member

    def put(self, key: str, epoch: int, ids: Array, values: Array) -> None:
        """Record epoch ``epoch`` (from 1) of the members ``ids``."""
        if epoch > self.capacity:
            self.capacity *= 2
            for k, table in self.data.items():
                grown = np.full((self.capacity, table.shape[1]), np.nan)
                grown[: table.shape[0]] = table
                self.data[k] = grown
            self.train_rmse = self.data["train_rmse"]
        self.data[key][epoch - 1, ids] = values

    def series(self, member: int, start: int = 0, stop: int | None = None) -> dict[str, Array]:
        """Member ``member``'s series over epochs ``start + 1 .. stop`` (copies)."""
        end = int(self.length[member]) if stop is None else stop
        return {k: table[start:end, member].copy() for k, table in self.data.items()}


@dataclass
class Progress:
    """What :func:`fit`'s ``on_epoch`` sees: the epoch just run and every member's history."""

    epoch: int
    active: list[int]
    history: History


def _batches(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    size = n if batch_size is None else min(batch_size, n)
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _member_rows(a: Array, members: Sequence[int]) -> Array:
    """The given members of a stacked array (a plain array when one member is left)."""
    if len(members) == 1:
        return np.ascontiguousarray(a[members[0]])
    return a[list(members)]


class _Runner:
    """The active members' data, optimiser and compiled steps: runs one epoch at a time."""

    def __init__(
        self,
        net: MLP,
        data: TrainData,
        optimizer: Optimizer,
        settings: Sequence[TrainSettings],
        rngs: Sequence[np.random.Generator],
    ) -> None:
        self.ids = list(range(net.members))
        self.net, self.optimizer = net, optimizer
        self.settings, self.rngs = list(settings), list(rngs)
        self.loss = get_loss(settings[0].loss)
        dtype = net.dtype
        self.Xb = add_bias(np.asarray(data.X, dtype))  # one sample per row, bias column first
        self.Y = np.asarray(data.Y, dtype)  # one sample per row
        self.val = (
            (add_bias(np.asarray(data.X_val, dtype)), np.asarray(data.Y_val, dtype))
            if data.has_validation
            else None
        )
        self.spans = _batches(self.Xb.shape[-2], settings[0].batch_size)
        self._bind()

    def _bind(self) -> None:
        """Compile one step per batch size and the views of every batch."""
        net, s = self.net, self.settings
        self.shufflers = [i for i, x in enumerate(s) if x.shuffle and len(self.spans) > 1]
        fold = self.optimizer.folds_into_step
        self.constant_lr = all(x.schedule == "constant" for x in s)
        self.base_lrs = [o.lr for o in self.optimizer.specs]
        steps: dict[int, tuple[Step, Array | None, list[float]]] = {}
        for a, b in self.spans:
            if b - a in steps:
                continue
            per_sample = [1.0 / (b - a) if x.reduction == "mean" else 1.0 for x in s]
            factor = [
                o.lr * p if fold else p
                for o, p in zip(self.optimizer.specs, per_sample, strict=True)
            ]
            unit = all(f == 1.0 for f in factor) and self.constant_lr
            scale = None if unit else member_values(factor, net.weights[0])
            steps[b - a] = (
                net.make_step(net.workspace(b - a), self.loss, scale, fold),
                scale,
                per_sample,
            )
        self.steps = steps
        feed = self._gathered_batches() if self.shufflers else self._batch_views()
        self.batches = [
            (xT, tT, gather, steps[b - a][0], net.workspace(b - a).actsT[-1])
            for (a, b), (xT, tT, gather) in zip(self.spans, feed, strict=True)
        ]
        self.validation = _Validation(net, *self.val) if self.val is not None else None

    def set_epoch(self, epoch: int) -> list[float]:
        """Each member's learning rate for ``epoch`` (from 1); folded into the steps (plain SGD)."""
        if self.constant_lr:
            return self.base_lrs
        lrs = [
            scheduled_lr(o.lr, x.schedule, epoch - 1, x.step_size, x.gamma)
            for o, x in zip(self.optimizer.specs, self.settings, strict=True)
        ]
        if self.optimizer.folds_into_step:
            for _, scale, per_sample in self.steps.values():
                assert scale is not None
                scale[...] = member_values(
                    [lr * p for lr, p in zip(lrs, per_sample, strict=True)], scale
                )
        return lrs

    def _batch_views(self) -> list[tuple[Array, Array, tuple[Op, ...]]]:
        """Each batch as views of the data in order: no copy, nothing to gather."""
        TT = np.ascontiguousarray(transposed(self.Y))  # one sample per column
        return [(transposed(self.Xb[..., a:b, :]), TT[..., a:b], ()) for a, b in self.spans]

    def _gathered_batches(self) -> list[tuple[Array, Array, tuple[Op, ...]]]:
        """Each batch gathered, just before its step, from the rows of this epoch's order.

        ``self.order`` holds each member's sample order as rows of its data flattened over
        the members (member i's rows are i·n .. i·n + n − 1); one ``take`` per batch copies
        the batch's rows, for every member at once, into a buffer of its batch size, while
        they are about to be used (a copy of the whole data per epoch costs more). Members
        that do not shuffle keep their rows in order.
        """
        n, lead = self.Xb.shape[-2], self.net.lead
        self.order = np.arange(self.net.members * n).reshape(*lead, n)
        X, Y = self.Xb.reshape(-1, self.Xb.shape[-1]), self.Y.reshape(-1, self.Y.shape[-1])
        buffers: dict[int, tuple[Array, Array]] = {}
        feed: list[tuple[Array, Array, tuple[Op, ...]]] = []
        for a, b in self.spans:
            if b - a not in buffers:
                buffers[b - a] = (
                    np.empty((*lead, b - a, X.shape[-1]), X.dtype),
                    np.empty((*lead, b - a, Y.shape[-1]), Y.dtype),
                )
            xb, tb = buffers[b - a]
            rows = self.order[..., a:b]  # mode "clip" writes to the buffer ("raise" copies it)
            gather = (
                partial(np.take, X, rows, 0, xb, "clip"),
                partial(np.take, Y, rows, 0, tb, "clip"),
            )
            feed.append((transposed(xb), transposed(tb), gather))
        return feed

    def shuffle(self) -> None:
        """A new order of each shuffling member's samples (a permutation of its rows)."""
        n = self.Xb.shape[-2]
        for i in self.shufflers:
            perm = self.rngs[i].permutation(n)
            if self.net.members == 1:
                self.order[...] = perm
            else:
                np.add(perm, i * n, out=self.order[i])

    def epoch(self, lrs: list[float], classification: bool) -> tuple[Any, Any]:
        """Run every batch once; Σ(y − t)² per member, in float64 (and correct predictions).

        One member's numbers are Python floats and ints, a population's arrays.
        """
        single = self.net.members == 1
        sse: Any = 0.0 if single else np.zeros(self.net.members)
        correct: Any = 0 if classification else None
        update = None if self.optimizer.folds_into_step else self.optimizer.step
        grads = self.net.grads
        for xT, tT, gather, step, yT in self.batches:
            for op in gather:
                op()
            sse += float(step(xT, tT)) if single else step(xT, tT)
            if classification:  # the step leaves the batch's outputs in yT
                correct = correct + np.count_nonzero(yT.argmax(-2) == tT.argmax(-2), axis=-1)
            if update is not None:
                update(grads, lrs)
        return sse, correct

    def compact(self, keep: Sequence[int]) -> None:
        """Go on with the members at positions ``keep`` only (their state kept)."""
        self.ids = [self.ids[i] for i in keep]
        self.settings = [self.settings[i] for i in keep]
        self.rngs = [self.rngs[i] for i in keep]
        self.net = self.net.select(keep)
        self.optimizer = self.optimizer.select(keep, self.net.weights)
        self.Xb, self.Y = _member_rows(self.Xb, keep), _member_rows(self.Y, keep)
        if self.val is not None:
            self.val = (_member_rows(self.val[0], keep), _member_rows(self.val[1], keep))
        self._bind()


class _Validation:
    """The validation RMSE (and accuracy) of every member's current weights."""

    def __init__(self, net: MLP, Xb: Array, Y: Array, chunk: int = 4096) -> None:
        TT = np.ascontiguousarray(transposed(Y))
        self.members, self.n = net.members, Xb.shape[-2]
        self.denom = 1.0 / (self.n * TT.shape[-2])
        self.parts = []
        for a, b in _batches(self.n, chunk):
            ws = net.workspace(b - a)
            diff = np.empty_like(ws.deltasT[-1])
            forward = net.make_forward(ws)
            self.parts.append(
                (transposed(Xb[..., a:b, :]), TT[..., a:b], forward, diff, sum_of_squares(diff))
            )

    def __call__(self, classification: bool) -> tuple[Array, Array]:
        sse = np.zeros(self.members)
        correct = np.zeros(self.members, dtype=np.int64)
        for xT, tT, forward, diff, squares in self.parts:
            yT = forward(xT)
            np.subtract(yT, tT, out=diff)
            sse += squares()
            if classification:
                correct += np.count_nonzero(yT.argmax(-2) == tT.argmax(-2), axis=-1)
        return np.sqrt(sse * self.denom), correct / self.n


@dataclass
class _Stop:
    """Why and when a member stopped."""

    reason: str
    epochs_run: int
    failure: str | None = None


class _Book:
    """Each member's stopping rules, history, best weights and results, by member id.

    The checks of an epoch work on the active members together: arrays for a population,
    plain numbers when one member is left (a loop of small networks pays microseconds per
    NumPy call), with the same expressions.
    """

    def __init__(
        self, settings: Sequence[TrainSettings], n_train: int, n_out: int, val: bool
    ) -> None:
        P = len(settings)
        self.settings = list(settings)
        self.classification = settings[0].classification
        keys = ["train_rmse"] + (["val_rmse"] if val else [])
        if self.classification:
            keys += ["train_accuracy"] + (["val_accuracy"] if val else [])
        self.history = History(keys, P)
        self.n_train, self.denom = n_train, 1.0 / (n_train * n_out)
        self.epochs = np.array([s.epochs for s in settings])
        self.tol = np.array([s.tol for s in settings], dtype=float)
        self.patience = np.array([s.patience or 0 for s in settings])
        self.prev = np.full(P, np.nan)
        self.best_val = np.full(P, np.inf)
        self.wait = np.zeros(P, dtype=np.int64)
        self.best_epoch: dict[int, int] = {}
        self.best_weights: dict[int, list[Array]] = {}
        self.snapshots: dict[int, dict[int, list[Array]]] = {i: {} for i in range(P)}
        self.snapshot_epochs = set().union(*(s.snapshot_epochs for s in settings))
        self.results: dict[int, TrainResult] = {}
        self.follow(list(range(P)))

    def follow(self, ids: list[int]) -> None:
        """The active members: one (plain numbers) or several (arrays)."""
        single = len(ids) == 1
        self.cols: Any = ids[0] if single else np.array(ids)
        if not single and ids[-1] - ids[0] == len(ids) - 1:
            self.cols = slice(ids[0], ids[-1] + 1)  # a view, not a gather
        self.first_last = int(self.epochs[ids].min())  # no member ends before this epoch
        self.tols = float(self.tol[ids[0]]) if single else self.tol[ids]
        self.any_tol = bool(np.any(self.tols > 0))
        self.total: Callable[[Any], Any] = float if single else np.ndarray.sum
        self.sqrt: Callable[[Any], Any] = math.sqrt if single else np.sqrt
        self.broken: Callable[[Any], Any] = (
            (lambda x: not math.isfinite(x)) if single else (lambda x: ~np.isfinite(x))
        )
        self.any: Callable[[Any], Any] = bool if single else np.ndarray.any

    def record(self, epoch: int, runner: _Runner, sse: Any, correct: Any) -> dict[int, _Stop]:
        """Book the epoch's numbers; return the members (by position) that stop after it.

        Most epochs stop no member and have no validation, snapshot or accuracy: those are
        booked here with the fewest calls; the others by :meth:`_record_all`.
        """
        if (
            correct is not None
            or epoch >= self.first_last
            or epoch in self.snapshot_epochs
            or runner.validation is not None
            or epoch > self.history.capacity
        ):
            return self._record_all(epoch, runner, sse, correct)
        cols, prev = self.cols, self.prev
        rmse = self.sqrt(sse * self.denom)
        if not math.isfinite(self.total(rmse)) or (
            self.any_tol and self.any(abs(rmse - prev[cols]) < self.tols)
        ):
            return self._record_all(epoch, runner, sse, correct)
        self.history.train_rmse[epoch - 1, cols] = rmse
        self.history.length[cols] = epoch
        prev[cols] = rmse
        return {}

    def _record_all(self, epoch: int, runner: _Runner, sse: Any, correct: Any) -> dict[int, _Stop]:
        """:meth:`record` with every rule checked."""
        cols, history = self.cols, self.history
        rmse = self.sqrt(sse * self.denom)
        history.put("train_rmse", epoch, cols, rmse)
        if correct is not None:
            history.put("train_accuracy", epoch, cols, correct / self.n_train)
        history.length[cols] = epoch
        diverged = self.broken(rmse)
        converged = abs(rmse - self.prev[cols]) < self.tol[cols]  # never with tol = 0
        self.prev[cols] = rmse
        last = self.epochs[cols] <= epoch
        early: Any = False
        if epoch in self.snapshot_epochs or runner.validation is not None or self.any(diverged):
            early = self._slow_path(epoch, runner, diverged)
        if not self.any(diverged | converged | last | early):
            return {}
        stops: dict[int, _Stop] = {}
        for reason, mask in (
            ("max_epochs", last),
            ("tolerance", converged),
            ("early_stopping", early),
        ):
            stops.update({int(p): _Stop(reason, epoch) for p in np.flatnonzero(mask)})
        for p in np.flatnonzero(diverged):
            loss = float(np.atleast_1d(sse)[p])
            stops[int(p)] = _Stop("diverged", epoch - 1, f"diverged at epoch {epoch}: loss={loss}")
            history.length[runner.ids[p]] = epoch - 1  # keep only the finite history
        return stops

    def _slow_path(self, epoch: int, runner: _Runner, diverged: Any) -> Any:
        """Snapshots, validation and early stopping; returns the members that stop early."""
        alive = np.atleast_1d(np.logical_not(diverged))
        self._snapshot(epoch, runner, alive)
        if runner.validation is None:
            return False
        ids = np.array(runner.ids)
        val, val_acc = runner.validation(self.classification)
        self.history.put("val_rmse", epoch, ids, val)
        if self.classification:
            self.history.put("val_accuracy", epoch, ids, val_acc)
        watched = alive & (self.patience[ids] > 0)
        better = watched & (val < self.best_val[ids] - self.tol[ids])
        for pos in np.flatnonzero(better):
            member = ids[pos]
            self.best_val[member], self.best_epoch[member] = val[pos], epoch
            self.best_weights[member] = runner.net.member_weights(int(pos))
        self.wait[ids[better]] = 0
        self.wait[ids[watched & ~better]] += 1
        return watched & ~better & (self.wait[ids] >= self.patience[ids])

    def _snapshot(self, epoch: int, runner: _Runner, alive: Array) -> None:
        """The weights of the members (``alive``, by position) that want them at ``epoch``."""
        for pos in np.flatnonzero(alive):
            member = runner.ids[pos]
            if epoch in self.settings[member].snapshot_epochs:
                self.snapshots[member][epoch] = runner.net.member_weights(int(pos))

    def snapshot_start(self, runner: _Runner) -> None:
        """The initial weights of the members that want a snapshot at epoch 0 (snapshots
        only: validation and early stopping begin with epoch 1)."""
        if 0 in self.snapshot_epochs:
            self._snapshot(0, runner, np.ones(len(runner.ids), dtype=bool))

    def finish(self, member: int, pos: int, runner: _Runner, stop: _Stop, seconds: float) -> None:
        """The member's result: its weights now (the best ones with early stopping)."""
        kept = stop.reason not in ("interrupted", "diverged")
        best = self.best_weights.get(member) if kept else None
        self.results[member] = TrainResult(
            history=self.history.series(member, stop=stop.epochs_run),
            weights=best if best is not None else runner.net.member_weights(pos),
            epochs_run=stop.epochs_run,
            seconds=seconds,
            stop_reason=stop.reason,
            failure=stop.failure,
            interrupted=stop.reason == "interrupted",
            best_epoch=self.best_epoch.get(member),
            snapshots=self.snapshots[member],
        )


Monitor = Callable[[Progress], None]


def fit(
    net: MLP,
    data: TrainData,
    optimizer: Optimizer,
    settings: Sequence[TrainSettings],
    rngs: Sequence[np.random.Generator],
    on_epoch: Monitor | None = None,
) -> list[TrainResult]:
    """Train ``net``'s members; returns each member's result (history, final weights, why).

    ``settings`` and ``rngs`` (the shuffling streams) have one entry per member; ``data``
    holds every member's samples. The data are copied once, in the network's dtype, the
    inputs with their bias column; a batch is a transposed view of them (one sample per
    column, the layout of the workspaces), or, when members shuffle, a copy of its rows
    gathered just before its step. ``net`` is
    trained in place until its first member stops; the results hold every member's final
    weights. ``on_epoch`` is called about 20 times a second (at least every 1 000 epochs).
    """
    if len({(s.batch_size, s.loss, s.classification) for s in settings}) != 1:
        raise ValueError("a population shares its batch size, loss and task")
    runner = _Runner(net, data, optimizer, settings, rngs)
    book = _Book(settings, runner.Xb.shape[-2], runner.Y.shape[-1], runner.val is not None)
    book.snapshot_start(runner)
    classification, next_call = settings[0].classification, 1
    t0 = time.perf_counter()
    epoch = done = 0
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            while runner.ids:
                epoch += 1
                lrs = runner.set_epoch(epoch)
                runner.shuffle()
                sse, correct = runner.epoch(lrs, classification)
                stops = book.record(epoch, runner, sse, correct)
                done = epoch  # an interrupt from here on (the monitor's call) keeps it
                if on_epoch is not None and epoch >= next_call:
                    on_epoch(Progress(epoch, list(runner.ids), book.history))
                    rate = epoch / max(time.perf_counter() - t0, 1e-9)
                    next_call = epoch + int(min(1000, max(1, rate / 20)))
                if stops:
                    _stop(book, runner, stops, time.perf_counter() - t0)
    except KeyboardInterrupt:  # an epoch interrupted before it was recorded is not kept
        book.history.length[runner.ids] = done
        _stop(
            book,
            runner,
            dict.fromkeys(range(len(runner.ids)), _Stop("interrupted", done)),
            time.perf_counter() - t0,
        )
    return [book.results[m] for m in range(net.members)]


def _stop(book: _Book, runner: _Runner, stops: dict[int, _Stop], seconds: float) -> None:
    """Finish the stopped members and go on with the others."""
    for pos, stop in stops.items():
        book.finish(runner.ids[pos], pos, runner, stop, seconds)
    keep = [pos for pos in range(len(runner.ids)) if pos not in stops]
    if keep:
        runner.compact(keep)
        book.follow(runner.ids)
    else:
        runner.ids = []

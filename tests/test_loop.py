"""The training loop's promises beyond the update rules (``mlplab.nn.fit``).

The monitor's rhythm (about 20 calls a second, at least every 1 000 epochs, the first after
epoch 1), interrupts, divergence, snapshots, histories longer than one chunk, accuracy and
validation figures, shuffling, float32 fed with float64 data and the refusal of a population
whose members cannot share a step. Time is a fake clock where it matters.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import reference

from mlplab.nn import (
    MLP,
    OptimizerSpec,
    TrainData,
    TrainSettings,
    fit,
    init_weights,
    make_optimizer,
    trainer,
)
from mlplab.nn.gradcheck import backprop_gradients


class Clock:
    """``time.perf_counter`` that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(trainer, "time", SimpleNamespace(perf_counter=c.perf_counter))
    return c


def _data(n=20, n_in=2, n_out=2, seed=0, classes=False, n_val=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + n_val, n_in))
    if classes:
        T = np.eye(n_out)[rng.integers(0, n_out, n + n_val)]
    else:
        T = rng.uniform(size=(n + n_val, n_out))
    return TrainData(X[:n], T[:n], X[n:] if n_val else None, T[n:] if n_val else None)


def _train(data, settings, sizes=(2, 3, 2), acts=("tanh", "sigmoid"), spec=None, **kw):
    net = MLP(list(sizes), *acts, dtype=kw.pop("dtype", "float64"))
    net.set_weights(init_weights(net.sizes, "normal", np.random.default_rng(1), 0.5))
    initial = net.get_weights()
    opt = make_optimizer(net.weights, [spec or OptimizerSpec("sgd", 0.1)])
    (result,) = fit(net, data, opt, [settings], [np.random.default_rng(2)], **kw)
    return net, initial, result


# -- the monitor ---------------------------------------------------------------------------
def test_a_fast_run_is_reported_every_1000_epochs(clock: Clock) -> None:
    calls = []
    _, _, result = _train(
        _data(),
        TrainSettings(epochs=2500, tol=0.0),
        on_epoch=lambda p: calls.append((p.epoch, p.active, int(p.history.length[0]))),
    )
    assert calls == [(1, [0], 1), (1001, [0], 1001), (2001, [0], 2001)]
    assert result.seconds == 0.0


def test_a_slow_run_is_reported_every_epoch(clock: Clock) -> None:
    """One epoch a second: every epoch is reported; ``seconds`` is the training's time."""
    calls = []

    def monitor(progress: trainer.Progress) -> None:
        calls.append(progress.epoch)
        clock.now += 1.0

    _, _, result = _train(_data(), TrainSettings(epochs=10, tol=0.0), on_epoch=monitor)
    assert calls == list(range(1, 11)) and result.seconds == 10.0


def test_the_monitor_is_called_about_20_times_a_second(clock: Clock) -> None:
    """At 410 epochs a second, every 20 epochs (410 / 20 = 20.5)."""
    calls = []

    def monitor(progress: trainer.Progress) -> None:
        calls.append(progress.epoch)
        clock.now = 100.0 + progress.epoch / 410

    _train(_data(), TrainSettings(epochs=100, tol=0.0), on_epoch=monitor)
    assert calls == [1, 21, 41, 61, 81]


# -- interrupts and divergence -------------------------------------------------------------
@pytest.mark.parametrize("at", [1, 5])
def test_an_interrupt_keeps_the_finished_epochs_and_the_weights_of_the_moment(
    clock: Clock, at: int
) -> None:
    """Ctrl-C during the monitor's call after epoch ``at``: that epoch was recorded, and it
    is kept with the weights it left (an epoch cut before it is recorded is not kept)."""

    def monitor(progress: trainer.Progress) -> None:
        clock.now += 1.0
        if progress.epoch == at:
            raise KeyboardInterrupt

    settings = TrainSettings(epochs=100, tol=0.0, patience=50)
    data = _data(n_val=10)
    net, _, result = _train(data, settings, spec=OptimizerSpec("sgd", 0.5), on_epoch=monitor)
    assert (result.stop_reason, result.interrupted, result.failure) == ("interrupted", True, None)
    assert result.epochs_run == at and result.seconds == float(at)
    assert all(len(h) == at for h in result.history.values())
    # not the best weights: those of the moment
    assert [W.tobytes() for W in result.weights] == [W.tobytes() for W in net.weights]


def test_divergence_stops_with_the_finite_history_and_no_numpy_warnings() -> None:
    data = _data(n=20)
    data = TrainData(data.X * 1e3, data.Y * 1e6, data.X[:5], data.Y[:5] * 1e6)
    settings = TrainSettings(epochs=1000, tol=0.0, patience=500, snapshot_epochs=range(1000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net, _, result = _train(
            data, settings, acts=("tanh", "identity"), spec=OptimizerSpec("sgd", 1e3)
        )
    assert result.stop_reason == "diverged" and not result.interrupted
    message = result.failure or ""
    assert message.startswith("diverged at epoch ")
    epoch = int(message.split()[3].rstrip(":"))
    assert message in (
        f"diverged at epoch {epoch}: loss=inf",
        f"diverged at epoch {epoch}: loss=nan",
    )
    assert result.epochs_run == epoch - 1 == len(result.history["train_rmse"])
    assert np.isfinite(result.history["train_rmse"]).all()
    assert max(result.snapshots) == epoch - 1  # no snapshot of the diverged weights
    assert [W.tobytes() for W in result.weights] == [W.tobytes() for W in net.weights]


# -- snapshots, histories, accuracy, validation ----------------------------------------------
def test_snapshots_and_accuracy_follow_the_weights_epoch_by_epoch() -> None:
    """Full batch: the train figures of epoch e are those of the weights before its update
    (snapshot e − 1), the validation figures those after it (snapshot e)."""
    data = _data(n=30, n_in=3, n_out=3, classes=True, n_val=12)
    settings = TrainSettings(
        epochs=6,
        tol=0.0,
        loss="cross_entropy",
        reduction="mean",
        classification=True,
        snapshot_epochs=(0, 1, 2, 3, 4, 5, 6),
    )
    _, initial, result = _train(
        data, settings, sizes=(3, 5, 3), acts=("relu", "softmax"), spec=OptimizerSpec("sgd", 0.5)
    )
    snaps = result.snapshots
    assert sorted(snaps) == [0, 1, 2, 3, 4, 5, 6]
    assert all(np.array_equal(a, b) for a, b in zip(snaps[0], initial, strict=True))
    h = result.history
    assert set(h) == {"train_rmse", "val_rmse", "train_accuracy", "val_accuracy"}
    out = lambda W, X: reference.forward(W, X, "relu", "softmax")
    for e in range(1, 7):
        y, yv = out(snaps[e - 1], data.X), out(snaps[e], data.X_val)
        assert h["train_rmse"][e - 1] == pytest.approx(reference.rmse(data.Y, y), rel=1e-12)
        assert h["train_accuracy"][e - 1] == reference.accuracy(data.Y, y)
        assert h["val_rmse"][e - 1] == pytest.approx(reference.rmse(data.Y_val, yv), rel=1e-12)
        assert h["val_accuracy"][e - 1] == reference.accuracy(data.Y_val, yv)
    assert h["train_accuracy"].min() > 0 and h["val_accuracy"].max() < 1


def test_without_validation_there_is_no_validation_history() -> None:
    _, _, result = _train(_data(), TrainSettings(epochs=3, tol=0.0))
    assert set(result.history) == {"train_rmse"} and result.snapshots == {}
    settings = TrainSettings(epochs=3, tol=0.0, loss="cross_entropy", classification=True)
    data = _data(classes=True)
    _, _, result = _train(data, settings, acts=("tanh", "softmax"))
    assert set(result.history) == {"train_rmse", "train_accuracy"}
    # the accuracy of every epoch, as in a run whose snapshots take the loop's general path
    # (test_snapshots_and_accuracy_follow_the_weights_epoch_by_epoch checks that one)
    slow = _train(data, replace(settings, snapshot_epochs=(1, 2, 3)), acts=("tanh", "softmax"))[2]
    assert np.isfinite(result.history["train_accuracy"]).all()
    np.testing.assert_array_equal(result.history["train_accuracy"], slow.history["train_accuracy"])


def test_snapshots_are_the_weights_after_their_epoch() -> None:
    """Epoch 0 is the initial weights; epoch e those a run of e epochs ends with."""
    settings = TrainSettings(epochs=6, tol=0.0, batch_size=7, snapshot_epochs=(0, 2, 5))
    _, initial, result = _train(_data(), settings)
    assert sorted(result.snapshots) == [0, 2, 5]
    expected = {0: initial}
    for e in (2, 5):
        expected[e] = _train(_data(), TrainSettings(epochs=e, tol=0.0, batch_size=7))[2].weights
    for e, weights in expected.items():
        got = result.snapshots[e]
        assert [W.tobytes() for W in got] == [W.tobytes() for W in weights], e


def test_a_history_longer_than_one_chunk() -> None:
    """More epochs than one history chunk (4 096): the first epochs are kept as they were."""
    data = _data(n=10, n_in=3)
    result = _train(data, TrainSettings(epochs=5000, tol=0.0), sizes=(3, 4, 2))[2]
    train = result.history["train_rmse"]
    assert train.shape == (5000,) and train.dtype == np.float64 and np.isfinite(train).all()
    shorter = _train(data, TrainSettings(epochs=4097, tol=0.0), sizes=(3, 4, 2))[2]
    np.testing.assert_array_equal(shorter.history["train_rmse"], train[:4097])


def test_a_validation_set_larger_than_one_chunk_on_a_deeper_net() -> None:
    data = _data(n=10, n_in=3, n_out=2, n_val=5000)
    result = _train(data, TrainSettings(epochs=3, tol=0.0), sizes=(3, 4, 3, 2))[2]
    y = reference.forward(result.weights, data.X_val, "tanh", "sigmoid")
    assert result.history["val_rmse"][-1] == pytest.approx(reference.rmse(data.Y_val, y), rel=1e-12)


def test_patience_of_one_stops_at_the_first_epoch_without_progress() -> None:
    data = _data(n=20, n_val=20, seed=4)
    settings = TrainSettings(epochs=500, tol=0.0, patience=1)
    _, _, result = _train(data, settings, spec=OptimizerSpec("adam", 0.2))
    h = result.history
    assert (result.epochs_run, result.stop_reason, result.best_epoch) == reference.expected_stop(
        h["train_rmse"], h["val_rmse"], 500, 0.0, 1
    )
    assert result.stop_reason == "early_stopping" and result.epochs_run < 500


# -- order of samples ----------------------------------------------------------------------
def test_a_full_batch_is_never_shuffled() -> None:
    """One batch: its order cannot matter, so none is drawn (bit for bit the same weights)."""
    a = _train(_data(), TrainSettings(epochs=20, tol=0.0, shuffle=True))[2]
    b = _train(_data(), TrainSettings(epochs=20, tol=0.0, shuffle=False))[2]
    assert [W.tobytes() for W in a.weights] == [W.tobytes() for W in b.weights]


@pytest.mark.parametrize("batch_size", [10, 7])  # two batches, three
def test_each_epoch_draws_a_fresh_permutation_of_the_rows(batch_size: int) -> None:
    """Epoch e trains on the rows in the order of the e-th permutation drawn from the shuffle
    stream, batch after batch, written out with the engine's own gradients."""
    data = _data(n=20)
    settings = TrainSettings(epochs=3, tol=0.0, batch_size=batch_size, reduction="mean")
    _, initial, result = _train(data, settings)
    ref = MLP([2, 3, 2], "tanh", "sigmoid")
    ref.set_weights(initial)
    rng = np.random.default_rng(2)
    for _ in range(3):
        order = rng.permutation(20)
        for start in range(0, 20, batch_size):
            rows = order[start : start + batch_size]
            grads = backprop_gradients(ref, data.X[rows], data.Y[rows], "mse", "mean")
            for W, g in zip(ref.weights, grads, strict=True):
                W -= 0.1 * g
    for got, want in zip(result.weights, ref.weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    unshuffled = _train(data, TrainSettings(epochs=3, tol=0.0, batch_size=batch_size))[2]
    assert not np.array_equal(unshuffled.weights[0], result.weights[0])


# -- dtypes and populations ------------------------------------------------------------------
def test_float32_training_fed_float64_data_is_float32_end_to_end() -> None:
    """The data are converted to the network's dtype once: the same weights and histories,
    bit for bit, as when given in float32."""
    data = _data(n=24, n_val=8)
    data32 = TrainData(*(a.astype(np.float32) for a in (data.X, data.Y, data.X_val, data.Y_val)))
    settings = TrainSettings(epochs=15, tol=0.0, batch_size=8, reduction="mean")
    spec = OptimizerSpec("adam", 0.01)
    a = _train(data, settings, spec=spec, dtype="float32")[2]
    b = _train(data32, settings, spec=spec, dtype="float32")[2]
    assert [W.tobytes() for W in a.weights] == [W.tobytes() for W in b.weights]
    for key in ("train_rmse", "val_rmse"):
        np.testing.assert_array_equal(a.history[key], b.history[key])


def test_validation_accuracy_counts_every_chunk() -> None:
    data = _data(n=10, n_in=3, n_out=3, classes=True, n_val=5000)
    settings = TrainSettings(
        epochs=2, tol=0.0, loss="cross_entropy", reduction="mean", classification=True
    )
    result = _train(data, settings, sizes=(3, 4, 3), acts=("tanh", "softmax"))[2]
    y = reference.forward(result.weights, data.X_val, "tanh", "softmax")
    assert result.history["val_accuracy"][-1] == reference.accuracy(data.Y_val, y)


def test_the_validation_targets_take_the_network_dtype() -> None:
    """float32 networks compare their outputs with float32 targets (as the training data)."""
    data = _data(n=10, n_val=5)
    net = MLP([2, 3, 2], dtype="float32")
    opt = make_optimizer(net.weights, [OptimizerSpec("sgd", 0.1)])
    runner = trainer._Runner(net, data, opt, [TrainSettings()], [np.random.default_rng(0)])
    assert runner.val is not None
    assert [a.dtype for a in runner.val] == [np.float32, np.float32]
    assert runner.Y.dtype == runner.Xb.dtype == np.float32


def test_members_that_cannot_share_a_step_are_refused() -> None:
    net = MLP([2, 3, 2], members=2)
    opt = make_optimizer(net.weights, [OptimizerSpec("sgd", 0.1)] * 2)
    data = TrainData(np.zeros((2, 4, 2)), np.zeros((2, 4, 2)))
    rngs = [np.random.default_rng(0)] * 2
    for other in (
        TrainSettings(batch_size=2),
        TrainSettings(loss="cross_entropy"),
        TrainSettings(classification=True),
    ):
        with pytest.raises(ValueError) as info:
            fit(net, data, opt, [TrainSettings(), other], rngs)
        assert str(info.value) == "a population shares its batch size, loss and task"
    with pytest.raises(ValueError, match="members with different update rules cannot share"):
        make_optimizer(net.weights, [OptimizerSpec("sgd", 0.1), OptimizerSpec("adam", 0.1)])

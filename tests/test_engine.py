"""The engine against finite differences, hand computations and reference optimisers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import reference

from mlplab.nn import (
    MLP,
    OptimizerSpec,
    TrainData,
    TrainResult,
    TrainSettings,
    fit,
    init_weights,
    make_optimizer,
)
from mlplab.nn.gradcheck import backprop_gradients, gradient_check, numeric_gradients
from mlplab.nn.optimizers import scheduled_lr

ACTS = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]
OUTPUTS = [("sigmoid", "mse"), ("identity", "mse"), ("tanh", "mse"), ("softmax", "cross_entropy")]


def fit_one(net, X, T, spec, settings, rng, X_val=None, Y_val=None) -> TrainResult:
    """Train one network (a population of one) with one optimiser spec."""
    opt = make_optimizer(net.weights, [spec])
    return fit(net, TrainData(X, T, X_val, Y_val), opt, [settings], [rng])[0]


def _problem(sizes, loss, seed=0, n=7):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, sizes[0]))
    if loss == "cross_entropy":
        T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]
    else:
        T = rng.normal(size=(n, sizes[-1]))
    return rng, X, T


@pytest.mark.parametrize("sizes", [[3, 2], [3, 4, 2], [2, 5, 4, 3]], ids=["0h", "1h", "2h"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize(("out", "loss"), OUTPUTS)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradients_match_central_differences(sizes, act, out, loss, reduction):
    rng, X, T = _problem(sizes, loss)
    net = MLP(sizes, act, out)
    net.set_weights(init_weights(sizes, "normal", rng, 0.7))
    assert gradient_check(net, X, T, loss, reduction) < 1e-6


def test_gradient_entries_agree_elementwise():
    """Not only the norm: every entry of dE/dW agrees to 1e-7 absolute on a 2-3-2 net."""
    rng, X, T = _problem([2, 3, 2], "mse")
    net = MLP([2, 3, 2], "sigmoid", "sigmoid")
    net.set_weights(init_weights(net.sizes, "normal", rng))
    for bp, fd in zip(
        backprop_gradients(net, X, T, "mse", "sum"),
        numeric_gradients(net, X, T, "mse", "sum"),
        strict=True,
    ):
        np.testing.assert_allclose(bp, fd, atol=1e-7)


def test_one_gradient_descent_step_equals_hand_computation():
    """The tutorial's step on a 2-2-2 sigmoid net, written out in its notation."""
    rng = np.random.default_rng(3)
    x, t = rng.random((5, 2)), rng.random((5, 2))
    v, w = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    alpha = 0.3
    v_new, w_new, (rmse0,) = reference.tutorial_descent(v, w, x, t, [alpha])
    # engine: one full-batch epoch of plain gradient descent
    net = MLP([2, 2, 2], "sigmoid", "sigmoid")
    net.set_weights([v, w])
    settings = TrainSettings(epochs=1, tol=0.0, reduction="sum")
    result = fit_one(net, x, t, OptimizerSpec("sgd", alpha), settings, rng)
    np.testing.assert_allclose(net.weights[0], v_new, rtol=0, atol=1e-15)
    np.testing.assert_allclose(net.weights[1], w_new, rtol=0, atol=1e-15)
    assert result.history["train_rmse"][0] == pytest.approx(rmse0, rel=1e-14)


def _reference_updates(
    name, W0, grad_fn, lr, steps=3, mu=0.9, nesterov=False, wd=0.0, b1=0.9, b2=0.999, eps=1e-8
):
    """torch.optim.SGD / Adam update rules written out independently (one matrix);
    ``lr`` is a number or the learning rate of step t (from 1)."""
    rate = lr if callable(lr) else (lambda t: lr)
    W = W0.copy()
    buf = None
    m = np.zeros_like(W)
    v = np.zeros_like(W)
    out = []
    for t in range(1, steps + 1):
        g = grad_fn(W) + wd * W
        if name == "adam":
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mhat = m / (1 - b1**t)
            vhat = v / (1 - b2**t)
            W = W - rate(t) * mhat / (np.sqrt(vhat) + eps)
        else:
            if name == "momentum":
                buf = g.copy() if buf is None else mu * buf + g
                g = g + mu * buf if nesterov else buf
            W = W - rate(t) * g
        out.append(W.copy())
    return out


def _flat(weights):
    return np.concatenate([W.ravel() for W in weights])


def _reference_run(name, kwargs, init, X, T, lr, steps):
    """The written-out rules on a 2-3-2 tanh/identity net's concatenated parameters (mean
    reduction, full batch), gradients from the engine's backprop (checked above)."""
    shapes = [W.shape for W in init]
    sizes = [W.size for W in init]

    def flat_grad(flat):
        probe = MLP([2, 3, 2], "tanh", "identity")
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        probe.set_weights([p.reshape(s) for p, s in zip(parts, shapes, strict=True)])
        return _flat(backprop_gradients(probe, X, T, "mse", "mean"))

    ref_kwargs = {
        "mu": kwargs.get("momentum", 0.9),
        "nesterov": kwargs.get("nesterov", False),
        "wd": kwargs.get("weight_decay", 0.0),
        "b1": kwargs.get("beta1", 0.9),
        "b2": kwargs.get("beta2", 0.999),
        "eps": kwargs.get("eps", 1e-8),
    }
    return _reference_updates(name, _flat(init), flat_grad, lr, steps, **ref_kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("sgd", {}),
        ("sgd", {"weight_decay": 0.1}),
        ("momentum", {"momentum": 0.9}),
        ("momentum", {"momentum": 0.9, "nesterov": True}),
        ("momentum", {"momentum": 0.5, "weight_decay": 0.01}),
        ("adam", {}),
        ("adam", {"weight_decay": 0.05, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}),
    ],
)
def test_first_three_updates_match_reference(name, kwargs):
    """A fixed 2-3-2 problem: the engine's first three updates equal the written-out rules."""
    rng, X, T = _problem([2, 3, 2], "mse", seed=5)
    net = MLP([2, 3, 2], "tanh", "identity")
    init = init_weights(net.sizes, "normal", rng)
    lr = 0.05
    spec = OptimizerSpec(name, lr, **kwargs)
    engine_steps = []  # the weights after 1, 2 and 3 full-batch epochs of training
    for epochs in (1, 2, 3):
        net.set_weights(init)
        settings = TrainSettings(epochs=epochs, tol=0.0, reduction="mean")
        engine_steps.append(fit_one(net, X, T, spec, settings, rng).weights)
    ref = _reference_run(name, kwargs, init, X, T, lr, 3)
    for got, want in zip(engine_steps, ref, strict=True):
        np.testing.assert_allclose(_flat(got), want, rtol=1e-12, atol=1e-14)


# -- learning-rate schedules -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("schedule", "gamma", "expected"),
    [
        ("constant", 0.25, [0.8] * 8),
        ("step", 0.25, [0.8, 0.8, 0.8, 0.2, 0.2, 0.2, 0.05, 0.05]),  # × gamma every 3 epochs
        ("exponential", 0.5, [0.8, 0.4, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625]),
    ],
)
def test_scheduled_lr_follows_the_readme(schedule, gamma, expected):
    """``scheduled_lr(lr, schedule, epoch from 0, step_size=3, gamma)``, the README's numbers."""
    got = [scheduled_lr(0.8, schedule, epoch, 3, gamma) for epoch in range(8)]
    assert got == pytest.approx(expected, rel=1e-15, abs=0)


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        scheduled_lr(0.1, "cosine", 0, 1, 0.5)


SCHEDULES = [("step", 2, 0.3), ("exponential", 1000, 0.7)]


@pytest.mark.parametrize(("schedule", "step_size", "gamma"), SCHEDULES)
def test_plain_gradient_descent_follows_the_schedule(schedule, step_size, gamma):
    """The tutorial's descent with each epoch's rate, against the same written out by hand
    (the rate is folded into the training step: the step must be re-scaled every epoch)."""
    rng = np.random.default_rng(8)
    x, t = rng.random((9, 2)), rng.random((9, 2))
    v, w = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    lrs = [reference.lr_at(0.9, schedule, e, step_size, gamma) for e in range(1, 8)]
    v_ref, w_ref, history = reference.tutorial_descent(v, w, x, t, lrs)
    net = MLP([2, 2, 2], "sigmoid", "sigmoid")
    net.set_weights([v, w])
    settings = TrainSettings(epochs=7, tol=0.0, schedule=schedule, step_size=step_size, gamma=gamma)
    result = fit_one(net, x, t, OptimizerSpec("sgd", 0.9), settings, rng)
    np.testing.assert_allclose(result.weights[0], v_ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(result.weights[1], w_ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(result.history["train_rmse"], history, rtol=1e-13)


@pytest.mark.parametrize(("schedule", "step_size", "gamma"), SCHEDULES)
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("sgd", {"weight_decay": 0.1}), ("momentum", {"momentum": 0.9}), ("adam", {})],
)
def test_optimisers_follow_the_schedule(name, kwargs, schedule, step_size, gamma):
    rng, X, T = _problem([2, 3, 2], "mse", seed=6)
    net = MLP([2, 3, 2], "tanh", "identity")
    init = init_weights(net.sizes, "normal", rng)
    net.set_weights(init)
    settings = TrainSettings(
        epochs=5, tol=0.0, reduction="mean", schedule=schedule, step_size=step_size, gamma=gamma
    )
    got = fit_one(net, X, T, OptimizerSpec(name, 0.05, **kwargs), settings, rng).weights
    rate = lambda epoch: reference.lr_at(0.05, schedule, epoch, step_size, gamma)
    want = _reference_run(name, kwargs, init, X, T, rate, 5)[-1]
    np.testing.assert_allclose(_flat(got), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch_size", [None, 16, 7])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_float32_stays_float32(batch_size, optimizer):
    rng, X, T = _problem([4, 8, 3], "mse", n=40)
    net = MLP([4, 8, 3], "relu", "identity", dtype="float32")
    net.set_weights(init_weights(net.sizes, "he", rng))
    spec = OptimizerSpec(optimizer, 0.01, momentum=0.9, weight_decay=0.01)
    settings = TrainSettings(
        epochs=5,
        batch_size=batch_size,
        tol=0.0,
        reduction="mean",
        schedule="exponential",
        gamma=0.9,
    )
    opt = make_optimizer(net.weights, [spec])
    result = fit(net, TrainData(X, T, X[:5], T[:5]), opt, [settings], [rng])[0]
    arrays = [*net.weights, *net.grads, *result.weights]
    for ws in net._workspaces.values():
        arrays += [*ws.actsT[1:], *ws.zT, *ws.deltasT, *ws.tmpT]
    arrays += getattr(opt, "m", []) + getattr(opt, "v", []) + (getattr(opt, "bufs", None) or [])
    assert len(arrays) > 12 and all(a.dtype == np.float32 for a in arrays), {
        a.dtype for a in arrays
    }
    assert net.predict(X).dtype == np.float32


@pytest.mark.parametrize(("schedule", "step_size", "gamma"), [("constant", 1, 1.0), *SCHEDULES])
def test_minibatches_in_order_without_shuffle(schedule, step_size, gamma):
    """shuffle=false: batch b is rows bB..(b+1)B; equals stepping batch by batch by hand, each
    batch's mean gradient (the last, partial batch by its own size) at the epoch's rate."""
    rng, X, T = _problem([2, 3, 1], "mse", n=10)
    init = init_weights([2, 3, 1], "normal", rng)
    net = MLP([2, 3, 1], "sigmoid", "identity")
    net.set_weights(init)
    settings = TrainSettings(
        epochs=3,
        batch_size=4,
        shuffle=False,
        tol=0.0,
        reduction="mean",
        schedule=schedule,
        step_size=step_size,
        gamma=gamma,
    )
    fit_one(net, X, T, OptimizerSpec("sgd", 0.1), settings, rng)
    ref = MLP([2, 3, 1], "sigmoid", "identity")
    ref.set_weights(init)
    for epoch, (a, b) in itertools.product(range(1, 4), [(0, 4), (4, 8), (8, 10)]):
        lr = reference.lr_at(0.1, schedule, epoch, step_size, gamma)
        for W, g in zip(
            ref.weights, backprop_gradients(ref, X[a:b], T[a:b], "mse", "mean"), strict=True
        ):
            W -= lr * g
    for got, want in zip(net.weights, ref.weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13)


def test_shuffle_is_seeded_and_changes_order():
    def train(seed, shuffle):
        _, X, T = _problem([2, 3, 1], "mse", n=12)
        net = MLP([2, 3, 1], "tanh", "identity")
        net.set_weights(init_weights([2, 3, 1], "normal", np.random.default_rng(1)))
        settings = TrainSettings(epochs=3, batch_size=4, shuffle=shuffle, tol=0.0)
        fit_one(net, X, T, OptimizerSpec("sgd", 0.1), settings, np.random.default_rng(seed))
        return net.weights[0]

    np.testing.assert_array_equal(train(7, True), train(7, True))
    assert not np.array_equal(train(7, True), train(8, True))
    assert not np.array_equal(train(7, True), train(7, False))


def test_tolerance_stops_and_divergence_fails():
    rng, X, T = _problem([2, 3, 1], "mse", n=20)
    net = MLP([2, 3, 1], "sigmoid", "identity")
    net.set_weights(init_weights(net.sizes, "normal", rng))
    res = fit_one(
        net, X, T, OptimizerSpec("sgd", 0.01), TrainSettings(epochs=100000, tol=1e-4), rng
    )
    assert res.stop_reason == "tolerance" and res.epochs_run < 100000
    h = res.history["train_rmse"]
    assert abs(h[-1] - h[-2]) < 1e-4 and len(h) == res.epochs_run
    net.set_weights(init_weights(net.sizes, "normal", rng))
    settings = TrainSettings(epochs=1000, tol=0.0)
    bad = fit_one(net, X * 1e3, T * 1e6, OptimizerSpec("sgd", 1e3), settings, rng)
    assert bad.stop_reason == "diverged" and bad.failure.startswith("diverged at epoch ")
    assert np.isfinite(bad.history["train_rmse"]).all()
    assert len(bad.history["train_rmse"]) == bad.epochs_run < 1000


def test_early_stopping_restores_best_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    T = rng.normal(size=(30, 1))  # pure noise: validation error soon rises
    Xv, Tv = rng.normal(size=(30, 3)), rng.normal(size=(30, 1))
    net = MLP([3, 32, 1], "tanh", "identity")
    net.set_weights(init_weights(net.sizes, "xavier", rng))
    settings = TrainSettings(epochs=2000, tol=0.0, patience=20, reduction="mean")
    res = fit_one(net, X, T, OptimizerSpec("adam", 0.05), settings, rng, Xv, Tv)
    assert res.stop_reason == "early_stopping" and res.best_epoch is not None
    val = res.history["val_rmse"]
    assert res.epochs_run == res.best_epoch + 20
    assert val[res.best_epoch - 1] == val.min()
    final = MLP([3, 32, 1], "tanh", "identity")
    final.set_weights(res.weights)  # the weights logged as final are the best ones
    now = np.sqrt(np.mean((Tv - final.predict(Xv)) ** 2))
    assert now == pytest.approx(val.min(), rel=1e-12)
    last = np.sqrt(np.mean((Tv - net.predict(Xv)) ** 2))  # where training actually ended
    assert last == pytest.approx(val[-1], rel=1e-12) and last > now


@pytest.mark.parametrize(
    ("seed", "lr", "tol", "patience", "epochs", "reason"),
    [
        (4, 0.05, 0.01, 4, 400, "early_stopping"),  # epoch 5 gains < tol on val: not counted
        (4, 0.05, 0.003, 4, 400, "early_stopping"),  # ... and > tol here: counted
        (2, 0.02, 1e-3, None, 400, "tolerance"),
        (2, 0.02, 0.0, None, 30, "max_epochs"),
    ],
)
def test_stopping_rules_match_the_readme(seed, lr, tol, patience, epochs, reason):
    """Why and when training stopped, and the best epoch, equal the README's rules applied to
    the run's own histories; with early stopping the weights are the best epoch's."""
    rng = np.random.default_rng(seed)
    X, T = rng.normal(size=(40, 3)), rng.normal(size=(40, 1))
    Xv, Tv = rng.normal(size=(20, 3)), rng.normal(size=(20, 1))
    net = MLP([3, 16, 1], "tanh", "identity")
    net.set_weights(init_weights(net.sizes, "xavier", rng))
    settings = TrainSettings(epochs=epochs, tol=tol, patience=patience, reduction="mean")
    res = fit_one(net, X, T, OptimizerSpec("adam", lr), settings, rng, Xv, Tv)
    train, val = res.history["train_rmse"], res.history["val_rmse"]
    expected = reference.expected_stop(train, val, epochs, tol, patience)
    assert (res.epochs_run, res.stop_reason, res.best_epoch) == expected
    assert res.stop_reason == reason and len(train) == len(val) == res.epochs_run
    val_now = reference.rmse(Tv, reference.forward(res.weights, Xv, "tanh", "identity"))
    if reason == "early_stopping":
        assert val_now == pytest.approx(val[res.best_epoch - 1], rel=1e-12)
    else:  # the weights training ended with
        assert [W.tobytes() for W in res.weights] == [W.tobytes() for W in net.weights]


@pytest.mark.parametrize("method", ["normal", "xavier", "he"])
def test_init_is_seeded_and_scaled(method):
    """Each method's spread, measured on 20 000 weights, is its formula times init_scale."""
    sizes = [100, 200]
    a = init_weights(sizes, method, np.random.default_rng(0), 2.0)
    b = init_weights(sizes, method, np.random.default_rng(0), 2.0)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert [W.shape for W in a] == [(101, 200)]
    W = a[0]
    if method == "normal":  # standard normal × scale, the bias row included
        assert W[0].any() and W.std() == pytest.approx(2.0, rel=0.03)
    elif method == "xavier":  # U(±scale·√(6/(fan_in+fan_out))), bias row 0
        bound = 2.0 * np.sqrt(6 / 300)
        assert not W[0].any() and 0.98 * bound < np.abs(W[1:]).max() <= bound
        assert W[1:].std() == pytest.approx(bound / np.sqrt(3), rel=0.03)
    else:  # he: N(0, (scale·√(2/fan_in))²), bias row 0
        assert not W[0].any() and W[1:].std() == pytest.approx(2.0 * np.sqrt(2 / 100), rel=0.03)

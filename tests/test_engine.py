"""The engine against finite differences, hand computations and reference optimisers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

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


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_one_gradient_descent_step_equals_hand_computation():
    """The tutorial's step on a 2-2-2 sigmoid net, written out in its notation."""
    rng = np.random.default_rng(3)
    x = rng.random((5, 2))
    t = rng.random((5, 2))
    v = rng.standard_normal((3, 2))
    w = rng.standard_normal((3, 2))
    alpha = 0.3
    # by hand
    x_bias = np.hstack([np.ones((5, 1)), x])
    z = _sig(x_bias @ v)
    z_bias = np.hstack([np.ones((5, 1)), z])
    y = _sig(z_bias @ w)
    theta_k = (y - t) * y * (1 - y)
    delta_k = z_bias.T @ theta_k
    theta_in_j = theta_k @ w[1:].T
    theta_j = theta_in_j * z * (1 - z)
    delta_j = x_bias.T @ theta_j
    w_new, v_new = w - alpha * delta_k, v - alpha * delta_j
    # engine: one full-batch epoch of plain gradient descent
    net = MLP([2, 2, 2], "sigmoid", "sigmoid")
    net.set_weights([v, w])
    settings = TrainSettings(epochs=1, tol=0.0, reduction="sum")
    result = fit_one(net, x, t, OptimizerSpec("sgd", alpha), settings, rng)
    np.testing.assert_allclose(net.weights[0], v_new, rtol=0, atol=1e-15)
    np.testing.assert_allclose(net.weights[1], w_new, rtol=0, atol=1e-15)
    assert result.history["train_rmse"][0] == pytest.approx(np.sqrt(np.mean((t - y) ** 2)))


def _reference_updates(
    name, W0, grad_fn, lr, steps=3, mu=0.9, nesterov=False, wd=0.0, b1=0.9, b2=0.999, eps=1e-8
):
    """torch.optim.SGD / Adam update rules written out independently (one matrix)."""
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
            W = W - lr * mhat / (np.sqrt(vhat) + eps)
        else:
            if name == "momentum":
                buf = g.copy() if buf is None else mu * buf + g
                g = g + mu * buf if nesterov else buf
            W = W - lr * g
        out.append(W.copy())
    return out


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
    net.set_weights(init)
    lr = 0.05
    spec = OptimizerSpec(name, lr, **kwargs)

    def grads_at(weights):
        probe = MLP([2, 3, 2], "tanh", "identity")
        probe.set_weights(weights)
        return backprop_gradients(probe, X, T, "mse", "mean")

    engine_steps = []  # the weights after 1, 2 and 3 full-batch epochs of training
    for epochs in (1, 2, 3):
        net.set_weights(init)
        settings = TrainSettings(epochs=epochs, tol=0.0, reduction="mean")
        engine_steps.append(fit_one(net, X, T, spec, settings, rng).weights)
    # reference: the same rules on the concatenated parameters, gradients from the same net
    ref_kwargs = {
        "mu": kwargs.get("momentum", 0.9),
        "nesterov": kwargs.get("nesterov", False),
        "wd": kwargs.get("weight_decay", 0.0),
        "b1": kwargs.get("beta1", 0.9),
        "b2": kwargs.get("beta2", 0.999),
        "eps": kwargs.get("eps", 1e-8),
    }
    shapes = [W.shape for W in init]
    sizes = [W.size for W in init]

    def split(flat):
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        return [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]

    def flat_grad(flat):
        return np.concatenate([g.ravel() for g in grads_at(split(flat))])

    flat0 = np.concatenate([W.ravel() for W in init])
    ref = _reference_updates(name, flat0, flat_grad, lr, **ref_kwargs)
    for got, want in zip(engine_steps, ref, strict=True):
        np.testing.assert_allclose(
            np.concatenate([W.ravel() for W in got]), want, rtol=1e-12, atol=1e-14
        )


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


def test_minibatches_in_order_without_shuffle():
    """shuffle=false: batch b is rows bB..(b+1)B; equals stepping batch by batch by hand."""
    rng, X, T = _problem([2, 3, 1], "mse", n=10)
    init = init_weights([2, 3, 1], "normal", rng)
    net = MLP([2, 3, 1], "sigmoid", "identity")
    net.set_weights(init)
    settings = TrainSettings(epochs=2, batch_size=4, shuffle=False, tol=0.0, reduction="mean")
    fit_one(net, X, T, OptimizerSpec("sgd", 0.1), settings, rng)
    ref = MLP([2, 3, 1], "sigmoid", "identity")
    ref.set_weights(init)
    for _epoch, (a, b) in itertools.product(range(2), [(0, 4), (4, 8), (8, 10)]):
        for W, g in zip(
            ref.weights, backprop_gradients(ref, X[a:b], T[a:b], "mse", "mean"), strict=True
        ):
            W -= 0.1 * g
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

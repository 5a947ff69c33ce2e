"""The engine's parts the trace, the served model and populations rely on.

Activations outside a bound kernel (values, derivatives, formulas), the step's buffers
(pre-activations and f' left where the trace reads them), the network's own API (defaults,
refusals, members, large inputs), the gradient check's helpers and the optimiser factory.
Expected values are the formulas written out (tests/reference.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import reference

from mlplab.nn.activations import ACTIVATIONS, get_activation
from mlplab.nn.gradcheck import (
    backprop_gradients,
    gradient_check,
    max_relative_error,
    numeric_gradients,
)
from mlplab.nn.losses import get_loss
from mlplab.nn.network import MLP, add_bias, init_weights, transposed
from mlplab.nn.optimizers import OptimizerSpec, make_optimizer
from mlplab.nn.trainer import TrainData, TrainSettings, fit
from mlplab.weights import weights_sha256

Z = np.linspace(-3, 3, 13).reshape(13, 1) * np.array([[1.0, 0.37]])
DERIVATIVES = {  # f' written with the output a = f(z), and z
    "sigmoid": lambda a, z, s: a * (1 - a),
    "tanh": lambda a, z, s: 1 - a * a,
    "relu": lambda a, z, s: (z > 0).astype(float),
    "leaky_relu": lambda a, z, s: np.where(z > 0, 1.0, s),
    "identity": lambda a, z, s: np.ones_like(z),
}


def _leaky(z: np.ndarray, s: float) -> np.ndarray:
    return np.where(z > 0, z, s * z)


@pytest.mark.parametrize("name", sorted(DERIVATIVES))
def test_activations_outside_a_kernel(name: str) -> None:
    act = get_activation(name)
    for slope in (0.0, 0.2):
        out = np.empty_like(Z)
        act.apply(Z, out, slope)
        f = _leaky(Z, slope) if name == "leaky_relu" else reference.ACTIVATIONS[name](Z)
        np.testing.assert_allclose(out, f, rtol=1e-15, atol=0)
        d = np.empty_like(Z)
        act.derivative_of(out, d, slope)
        np.testing.assert_allclose(d, DERIVATIVES[name](f, Z, slope), rtol=1e-15, atol=0)
    default = np.empty_like(Z)
    act.apply(Z, default)  # the slope defaults to 0: leaky ReLU is ReLU
    expected = _leaky(Z, 0.0) if name == "leaky_relu" else reference.ACTIVATIONS[name](Z)
    np.testing.assert_allclose(default, expected, rtol=1e-15, atol=0)
    d = np.empty_like(Z)
    act.derivative_of(default, d)
    np.testing.assert_allclose(d, DERIVATIVES[name](expected, Z, 0.0), rtol=1e-15, atol=0)


def test_softmax_has_no_derivative_of_its_own() -> None:
    softmax = get_activation("softmax")
    out = np.empty((2, 3))
    softmax.apply(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]).T.copy(), out.T)
    with pytest.raises(ValueError) as info:
        softmax.derivative_of(out, np.empty_like(out))
    assert str(info.value) == "softmax has no derivative of its own"
    with pytest.raises(ValueError) as info:
        get_activation("swish")
    assert str(info.value) == "unknown activation 'swish'"
    with pytest.raises(ValueError) as info:
        get_loss("hinge")
    assert str(info.value) == "unknown loss 'hinge'"
    net = MLP([2, 3, 2], "softmax", "identity")
    with pytest.raises(ValueError) as info:
        net.make_step(net.workspace(4), get_loss("mse"))
    assert str(info.value) == "softmax has no derivative of its own (softmax needs cross_entropy)"


@pytest.mark.parametrize(
    ("name", "formula", "derivative"),
    [
        ("sigmoid", "1 / (1 + e^(−s))", "z·(1 − z)"),
        ("tanh", "tanh(s)", "1 − z²"),
        ("relu", "max(s, 0)", "1 if s_in > 0 else 0"),
        ("leaky_relu", "max(s, 0.2·s)", "1 if s_in > 0 else 0.2"),
        ("identity", "s", "1"),
    ],
)
def test_activation_formulas_as_the_trace_prints_them(name, formula, derivative) -> None:
    act = ACTIVATIONS[name]
    assert act.describe(0.2) == formula
    assert act.describe_derivative("z", "s_in", 0.2) == derivative


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu"])
def test_float32_kernels_compute_in_float32(name: str) -> None:
    """Constants take the buffers' dtype: every value equals the float32 computation."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 32)).astype(np.float32) * np.float32(3)
    act, s = get_activation(name), 0.3
    out, d = np.empty_like(z), np.empty_like(z)
    act.apply(z, out, s)
    act.derivative_of(out, d, s)
    s32, one = np.float32(s), np.float32(1)
    forward = {
        "sigmoid": lambda: one / (one + np.exp(-z)),
        "tanh": lambda: np.tanh(z),
        "relu": lambda: np.maximum(z, np.float32(0)),
        "leaky_relu": lambda: np.maximum(z, s32 * z),
    }[name]()
    derivative = {
        "sigmoid": lambda a: (one - a) * a,
        "tanh": lambda a: one - a * a,
        "relu": lambda a: (a > 0).astype(np.float32),
        "leaky_relu": lambda a: (a > 0).astype(np.float32) * (one - s32) + s32,
    }[name](out)
    assert out.dtype == d.dtype == np.float32
    np.testing.assert_allclose(out, forward, rtol=5e-7)
    np.testing.assert_array_equal(d, derivative)


# -- the step's buffers ----------------------------------------------------------------------
@pytest.mark.parametrize(("hidden", "output"), [("tanh", "identity"), ("identity", "sigmoid")])
def test_a_step_leaves_pre_activations_and_derivatives_in_its_buffers(hidden, output) -> None:
    rng = np.random.default_rng(3)
    net = MLP([3, 4, 5, 2], hidden, output)
    weights = init_weights(net.sizes, "normal", rng, 0.5)
    net.set_weights(weights)
    X, T = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    ws = net.workspace(6)
    net.make_step(ws, get_loss("mse"))(transposed(add_bias(X)), np.ascontiguousarray(T.T))
    a = X
    for layer, W in enumerate(weights):
        z = W[0] + a @ W[1:]
        np.testing.assert_allclose(ws.zT[layer].T, z, rtol=1e-13, err_msg=f"z of {layer + 1}")
        act = output if layer == len(weights) - 1 else hidden
        a = reference.ACTIVATIONS[act](z)
        np.testing.assert_allclose(ws.activation(layer + 1).T, a, rtol=1e-13)
        if act != "identity":  # f' where the backward pass put it
            np.testing.assert_allclose(ws.tmpT[layer].T, DERIVATIVES[act](a, z, 0), rtol=1e-13)
    assert ws.batch == 6 and ws.actsT[0].size == 0


# -- the network's API -----------------------------------------------------------------------
def test_network_defaults_and_refusals() -> None:
    net = MLP([2, 2, 2])
    assert (net.hidden_act.name, net.output_act.name, net.negative_slope) == (
        "sigmoid",
        "sigmoid",
        0.01,
    )
    assert (net.dtype, net.members, net.n_layers) == (np.float64, 1, 2)
    for sizes in ([2], [2, 0, 1]):
        with pytest.raises(ValueError) as info:
            MLP(sizes)
        assert str(info.value) == f"sizes must be >= 2 positive widths, got {sizes}"
    with pytest.raises(ValueError) as info:
        MLP([2, 2], members=0)
    assert str(info.value) == "members must be >= 1, got 0"
    with pytest.raises(ValueError) as info:
        net.set_weights([np.zeros((3, 2))])
    assert str(info.value) == "expected 2 weight matrices, got 1"
    with pytest.raises(ValueError) as info:
        net.set_weights([np.zeros((3, 2)), np.zeros((2, 2))])
    assert str(info.value) == "W1 has shape (2, 2), expected (3, 2)"
    with pytest.raises(ValueError) as info:
        MLP([2, 2], members=2).predict(np.zeros((1, 2)))
    assert str(info.value) == "predict takes one network: use net.member(i)"
    with pytest.raises(ValueError) as info:
        init_weights([2, 2], "orthogonal", np.random.default_rng(0))
    assert str(info.value) == "unknown init 'orthogonal'"
    assert np.array_equal(
        init_weights([2, 3], "normal", np.random.default_rng(0))[0],
        np.random.default_rng(0).standard_normal((3, 3)),  # scale 1 by default
    )


def test_members_are_networks_of_their_own() -> None:
    rng = np.random.default_rng(4)
    nets = [init_weights([2, 3, 1], "normal", rng) for _ in range(3)]
    pop = MLP([2, 3, 1], "tanh", "identity", members=3)
    for i, w in enumerate(nets):
        pop.set_member(i, w)
    X = rng.normal(size=(5, 2))
    for i, w in enumerate(nets):
        one = pop.member(i)
        assert one.members == 1 and one.hidden_act.name == "tanh"
        np.testing.assert_allclose(
            one.predict(X), reference.forward(w, X, "tanh", "identity"), rtol=1e-14
        )
    picked = pop.select([2, 0])
    assert picked.members == 2
    assert weights_sha256(picked.member_weights(0)) == weights_sha256(nets[2])
    single = MLP([2, 3, 1])
    single.set_member(0, nets[1])
    assert weights_sha256(single.weights) == weights_sha256(nets[1])
    assert single.like(dtype="float32").dtype == np.float32 and single.like().dtype == np.float64


@pytest.mark.parametrize("hidden", sorted(DERIVATIVES))
def test_predict_through_each_hidden_activation(hidden: str) -> None:
    rng = np.random.default_rng(9)
    w = init_weights([3, 6, 2], "normal", rng)
    net = MLP([3, 6, 2], hidden, "identity", negative_slope=0.2)
    net.set_weights(w)
    X = rng.normal(size=(7, 3))
    h = X @ w[0][1:] + w[0][0]
    h = _leaky(h, 0.2) if hidden == "leaky_relu" else reference.ACTIVATIONS[hidden](h)
    np.testing.assert_allclose(net.predict(X), h @ w[1][1:] + w[1][0], rtol=1e-13)


def test_predict_takes_more_rows_than_one_chunk() -> None:
    rng = np.random.default_rng(5)
    w = init_weights([3, 4, 2], "normal", rng)
    net = MLP([3, 4, 2], "tanh", "sigmoid")
    net.set_weights(w)
    X = rng.normal(size=(9000, 3))
    np.testing.assert_allclose(
        net.predict(X), reference.forward(w, X, "tanh", "sigmoid"), rtol=1e-13
    )


# -- the gradient check's helpers --------------------------------------------------------------
def test_the_gradient_check_of_a_float32_network_runs_in_float64() -> None:
    rng = np.random.default_rng(6)
    net = MLP([2, 3, 2], "tanh", "sigmoid", dtype="float32")
    net.set_weights(init_weights(net.sizes, "normal", rng))
    X, T = rng.normal(size=(5, 2)).astype(np.float32), rng.random((5, 2)).astype(np.float32)
    assert gradient_check(net, X, T, "mse", "mean") < 1e-7
    coarse = gradient_check(net, X, T, "mse", "mean", h=0.3)
    assert 1e-5 < coarse < 1e-1  # the step h is the one given
    assert net.dtype == np.float32  # the network itself is untouched


def test_backprop_gradients_take_the_networks_dtype() -> None:
    rng = np.random.default_rng(7)
    net = MLP([2, 3, 2], "tanh", "sigmoid", dtype="float32")
    net.set_weights(init_weights(net.sizes, "normal", rng))
    X, T = rng.normal(size=(5, 2)), rng.random((5, 2))
    for reduction in ("sum", "mean"):
        a = backprop_gradients(net, X, T, "mse", reduction)
        b = backprop_gradients(net, X.astype(np.float32), T.astype(np.float32), "mse", reduction)
        assert all(g.dtype == np.float32 for g in a)
        assert [g.tobytes() for g in a] == [g.tobytes() for g in b]
    before = net.get_weights()
    numeric_gradients(net, X, T, "mse", "sum")
    assert [W.tobytes() for W in net.weights] == [W.tobytes() for W in before]


def test_max_relative_error() -> None:
    a = [np.array([[0.3, -0.4]]), np.zeros((2, 2))]
    b = [np.array([[0.3, -0.1]]), np.zeros((2, 2))]
    # ‖a − b‖ = 0.3, ‖a‖ + ‖b‖ = 0.5 + √0.1; an all-zero pair counts as no error
    assert max_relative_error(a, b) == pytest.approx(0.3 / (0.5 + np.sqrt(0.1)), rel=1e-14)
    assert max_relative_error(b, b) == 0.0
    assert max_relative_error([np.zeros(3)], [np.zeros(3)]) == 0.0
    # a NaN gradient anywhere (here in the second matrix, after a worse first one) is NaN:
    # the check must fail, not skip the matrix
    nan = [np.array([[0.3, -0.4]]), np.full((2, 2), np.nan)]
    assert np.isnan(max_relative_error(nan, b)) and np.isnan(max_relative_error(b, nan))


# -- the optimiser factory ---------------------------------------------------------------------
def test_plain_sgd_is_folded_into_the_training_step() -> None:
    weights = [np.zeros((3, 2))]
    plain = make_optimizer(weights, [OptimizerSpec("sgd", 0.1)])
    assert type(plain).__name__ == "PlainSGD" and plain.folds_into_step
    with pytest.raises(NotImplementedError) as info:
        plain.step([np.zeros((3, 2))], [0.1])
    assert str(info.value) == "PlainSGD is applied by the training step"
    decay = make_optimizer(weights, [OptimizerSpec("sgd", 0.1, weight_decay=0.1)])
    assert type(decay).__name__ == "SGD" and not decay.folds_into_step
    assert type(make_optimizer(weights, [OptimizerSpec("adam", 0.1)])).__name__ == "Adam"


@pytest.mark.parametrize(
    "spec",
    [
        OptimizerSpec("momentum", 0.05, momentum=0.9, weight_decay=0.01),
        OptimizerSpec("momentum", 0.05, momentum=0.5, nesterov=True),
        OptimizerSpec("adam", 0.02, weight_decay=0.01),
    ],
)
def test_the_last_member_of_a_population_goes_on_as_if_alone(spec: OptimizerSpec) -> None:
    """Members stop at their own epochs; the one left keeps its optimiser state."""
    rng = np.random.default_rng(8)
    X, T = rng.normal(size=(2, 12, 3)), rng.normal(size=(2, 12, 2))
    inits = [init_weights([3, 4, 2], "normal", rng) for _ in range(2)]
    epochs = [4, 9]

    def train(members: list[int]) -> list:
        net = MLP([3, 4, 2], "tanh", "identity", members=len(members))
        for i, m in enumerate(members):
            net.set_member(i, inits[m])
        data = TrainData(X[members[0]], T[members[0]]) if len(members) == 1 else TrainData(X, T)
        opt = make_optimizer(net.weights, [spec] * len(members))
        settings = [
            TrainSettings(epochs=epochs[m], tol=0.0, batch_size=5, snapshot_epochs=(0, 3, 6))
            for m in members
        ]
        return fit(net, data, opt, settings, [np.random.default_rng(m) for m in members])

    together = train([0, 1])
    for m in (0, 1):
        (alone,) = train([m])
        assert together[m].epochs_run == epochs[m]
        assert weights_sha256(together[m].weights) == weights_sha256(alone.weights)
        assert sorted(together[m].snapshots) == sorted(alone.snapshots)
        for e, weights in alone.snapshots.items():
            assert weights_sha256(together[m].snapshots[e]) == weights_sha256(weights)

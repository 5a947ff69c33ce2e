"""The contestants: the same training algorithm written for each engine, timed from inside.

Every function here runs in a fresh worker process (see ``run.py``) and returns a dict of
plain numbers. The data and the initial weights are drawn from fixed seeds, so every
contestant of a case trains the same network on the same data (scikit-learn draws its own
initial weights: it has no way to take them).

* ``tutorial``: the textbook 2-2-2 sigmoid net (SPEC §1) on 50 samples, full batch, summed
  squared error, plain gradient descent, the RMSE recorded every epoch, no early stop.
* ``large``: 100 000 × 64 → 256 → 256 → 8, relu hidden layers, identity output, squared
  error averaged over the batch, mini-batch SGD (batch 256, reshuffled every epoch).
* ``population``: P tutorial jobs of a seed sweep (seeds 0..P-1, each its own data and
  initial weights, drawn as the pipeline draws them), trained as one stacked population or
  as a loop of P single networks, one after the other.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import resource
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

Array = np.ndarray
Result = dict[str, Any]

TUTORIAL_LR = 0.5
LARGE_SIZES = (64, 256, 256, 8)
LARGE_LR = 0.01
LARGE_BATCH = 256


# -- data ----------------------------------------------------------------------------------
def _sigmoid(x: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-x))


def tutorial_problem(n: int = 50, seed: int = 0) -> tuple[Array, Array, list[Array]]:
    """SPEC §1: x ~ U[0,1]², y = σ(σ(x) + 0.1·u1) + 0.1·u2; weights v, w ~ N(0, 1), 3×2 each."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n, 2))
    u1, u2 = rng.uniform(), rng.uniform()
    Y = _sigmoid(_sigmoid(X) + 0.1 * u1) + 0.1 * u2
    weights = [rng.standard_normal((3, 2)), rng.standard_normal((3, 2))]
    return X, Y, weights


def large_problem(
    n: int, dtype: str, sizes: tuple[int, ...] = LARGE_SIZES, seed: int = 0
) -> tuple[Array, Array, list[Array]]:
    """Gaussian inputs, targets from a random teacher net, He-initialised student weights."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]))
    a = X
    for fan_in, fan_out in itertools.pairwise(sizes):
        a = np.maximum(a @ (rng.standard_normal((fan_in, fan_out)) / math.sqrt(fan_in)), 0.0)
    Y = a / (a.std() + 1e-12)
    weights = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        W = np.zeros((fan_in + 1, fan_out))
        W[1:] = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
        weights.append(W)
    return X.astype(dtype), Y.astype(dtype), [W.astype(dtype) for W in weights]


def n_weights(sizes: tuple[int, ...] = LARGE_SIZES) -> int:
    """Weights and biases of the network."""
    return sum((a + 1) * b for a, b in itertools.pairwise(sizes))


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


# -- tutorial ------------------------------------------------------------------------------
def tutorial_ours(epochs: int) -> Result:
    """mlplab.nn.fit, as the pipeline calls it (float64, full batch, tol=0)."""
    from mlplab.nn import MLP, OptimizerSpec, TrainData, TrainSettings, fit, make_optimizer

    X, Y, weights = tutorial_problem()
    net = MLP([2, 2, 2], "sigmoid", "sigmoid", dtype="float64")
    net.set_weights(weights)
    opt = make_optimizer(net.weights, [OptimizerSpec("sgd", TUTORIAL_LR)])
    settings = TrainSettings(epochs=epochs, batch_size=None, reduction="sum", tol=0.0)
    start = _clock()
    (res,) = fit(net, TrainData(X, Y), opt, [settings], [np.random.default_rng(0)])
    wall, cpu = _since(start)
    return {
        "wall": wall,
        "cpu": cpu,
        "epochs": res.epochs_run,
        "final_rmse": float(res.history["train_rmse"][-1]),
    }


def tutorial_bare(epochs: int) -> Result:
    """The floor: the tutorial's loop written by hand as tightly as NumPy allows.

    Same arithmetic as the engine: buffers allocated once, one sample per column so every
    activation block is contiguous, the bias as a constant row of ones, the learning rate
    folded into the output error, constants as 0-d arrays, each update as soon as its
    gradient is known: 18 NumPy calls per epoch.
    """
    from scipy.special import expit

    X, Y, (v, w) = tutorial_problem()
    n = X.shape[0]
    xT = np.empty((3, n))
    xT[0] = 1.0
    xT[1:] = X.T
    tT = np.ascontiguousarray(Y.T)
    hT = np.empty((3, n))
    hT[0] = 1.0
    h = hT[1:]
    y, d, dh, tmp, tmp_h = (np.empty((2, n)) for _ in range(5))
    d_flat, dT, dhT = d.reshape(-1), d.T, dh.T
    grad_v, grad_w = np.empty((3, 2)), np.empty((3, 2))
    vT, wT, w_units = v.T, w.T, w[1:]
    one, lr = np.array(1.0), np.array(TUTORIAL_LR)
    hist = np.empty(epochs)
    inv = 1.0 / Y.size
    dot, sub, mul, sqrt = np.dot, np.subtract, np.multiply, math.sqrt
    start = _clock()
    for epoch in range(epochs):
        dot(vT, xT, h)
        expit(h, h)
        dot(wT, hT, y)
        expit(y, y)
        sub(y, tT, d)
        sse = dot(d_flat, d_flat)
        sub(one, y, tmp)
        mul(tmp, y, tmp)
        mul(d, tmp, d)
        mul(d, lr, d)
        dot(hT, dT, grad_w)
        dot(w_units, d, dh)
        sub(w, grad_w, w)
        sub(one, h, tmp_h)
        mul(tmp_h, h, tmp_h)
        mul(dh, tmp_h, dh)
        dot(xT, dhT, grad_v)
        sub(v, grad_v, v)
        hist[epoch] = sqrt(sse * inv)
    wall, cpu = _since(start)
    return {"wall": wall, "cpu": cpu, "epochs": epochs, "final_rmse": float(hist[-1])}


def tutorial_textbook(epochs: int) -> Result:
    """The tutorial's loop as usually written: one sample per row, new arrays every step."""
    X, Y, (v, w) = tutorial_problem()
    x_bias = np.hstack([np.ones((X.shape[0], 1)), X])
    ones = np.ones((X.shape[0], 1))
    hist = np.empty(epochs)
    start = _clock()
    for epoch in range(epochs):
        z = _sigmoid(x_bias @ v)
        z_bias = np.hstack([ones, z])
        y = _sigmoid(z_bias @ w)
        err = y - Y
        hist[epoch] = math.sqrt(np.mean(err**2))
        theta_k = err * y * (1 - y)
        theta_j = (theta_k @ w[1:].T) * z * (1 - z)
        w -= TUTORIAL_LR * (z_bias.T @ theta_k)
        v -= TUTORIAL_LR * (x_bias.T @ theta_j)
    wall, cpu = _since(start)
    return {"wall": wall, "cpu": cpu, "epochs": epochs, "final_rmse": float(hist[-1])}


def tutorial_sklearn(epochs: int) -> Result:
    """MLPRegressor: logistic hidden layer, sgd, batch 50, no momentum, no early stop.

    Its output layer is always the identity and its loss the mean (not the sum) of the
    squared errors, so it learns a slightly different net at the same cost per epoch.
    """
    from sklearn.neural_network import MLPRegressor

    X, Y, _ = tutorial_problem()
    model = MLPRegressor(
        hidden_layer_sizes=(2,),
        activation="logistic",
        solver="sgd",
        batch_size=X.shape[0],
        learning_rate="constant",
        learning_rate_init=TUTORIAL_LR,
        momentum=0.0,
        nesterovs_momentum=False,
        alpha=0.0,
        max_iter=epochs,
        shuffle=False,
        tol=0.0,
        n_iter_no_change=10**9,
        early_stopping=False,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = _clock()
        model.fit(X, Y)
        wall, cpu = _since(start)
    rmse = float(np.sqrt(np.mean((model.predict(X) - Y) ** 2)))
    return {"wall": wall, "cpu": cpu, "epochs": int(model.n_iter_), "final_rmse": rmse}


def _torch_mlp(torch: Any, weights: list[Array], hidden: str, output: str) -> Any:
    layers: list[Any] = []
    acts = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}
    for i, W in enumerate(weights):
        lin = torch.nn.Linear(W.shape[0] - 1, W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W[1:].T)))
            lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(W[0])))
        layers.append(lin)
        act = hidden if i < len(weights) - 1 else output
        if act != "identity":
            layers.append(acts[act]())
    return torch.nn.Sequential(*layers)


def tutorial_torch(epochs: int) -> Result:
    """PyTorch on the CPU, one thread (more only costs on a 50-sample batch), float64."""
    import torch

    torch.set_num_threads(1)
    X, Y, weights = tutorial_problem()
    model = _torch_mlp(torch, weights, "sigmoid", "sigmoid").double()
    opt = torch.optim.SGD(model.parameters(), lr=TUTORIAL_LR)
    x, t = torch.from_numpy(X), torch.from_numpy(Y)
    hist = np.empty(epochs)
    inv = 1.0 / Y.size
    start = _clock()
    for epoch in range(epochs):
        opt.zero_grad(set_to_none=True)
        err = model(x) - t
        sse = (err * err).sum()
        (0.5 * sse).backward()
        opt.step()
        hist[epoch] = math.sqrt(sse.item() * inv)
    wall, cpu = _since(start)
    return {"wall": wall, "cpu": cpu, "epochs": epochs, "final_rmse": float(hist[-1])}


# -- large ---------------------------------------------------------------------------------
def _epoch_timer() -> tuple[list[float], Callable[[], None]]:
    """Timestamps: the start, then one per ``mark()`` (an epoch's end)."""
    marks = [time.perf_counter()]

    def mark() -> None:
        marks.append(time.perf_counter())

    return marks, mark


def large_ours(n: int, dtype: str, epochs: int) -> Result:
    """mlplab.nn.fit on the large net."""
    from mlplab.nn import MLP, OptimizerSpec, TrainData, TrainSettings, fit, make_optimizer

    X, Y, weights = large_problem(n, dtype)
    net = MLP(list(LARGE_SIZES), "relu", "identity", dtype=dtype)
    net.set_weights(weights)
    opt = make_optimizer(net.weights, [OptimizerSpec("sgd", LARGE_LR)])
    settings = TrainSettings(
        epochs=epochs, batch_size=LARGE_BATCH, shuffle=True, reduction="mean", tol=0.0
    )
    marks, mark = _epoch_timer()  # fit's monitor runs after every epoch of a slow epoch
    (res,) = fit(
        net, TrainData(X, Y), opt, [settings], [np.random.default_rng(1)], lambda p: mark()
    )
    assert net.weights[0].dtype == np.dtype(dtype)
    return {
        "epoch_seconds": np.diff(marks).tolist(),
        "final_rmse": float(res.history["train_rmse"][-1]),
    }


def large_bare(n: int, dtype: str, epochs: int) -> Result:
    """A hand-written NumPy loop: one sample per row, buffers allocated once, bias added."""
    X, Y, (W0, W1, W2) = large_problem(n, dtype)
    rng = np.random.default_rng(1)
    B = LARGE_BATCH
    bufs: dict[int, tuple[Array, ...]] = {}

    def buffers(m: int) -> tuple[Array, ...]:
        if m not in bufs:
            shapes = [
                (m, 64),
                (m, 8),
                (m, 256),
                (m, 256),
                (m, 8),
                (m, 256),
                (m, 256),
                (m, 256),
                (m, 256),
            ]
            bufs[m] = tuple(np.empty(s, dtype) for s in shapes)
        return bufs[m]

    G0, G1, G2 = np.empty_like(W0), np.empty_like(W1), np.empty_like(W2)
    dot = np.dot
    marks, mark = _epoch_timer()
    sse = 0.0
    for _ in range(epochs):
        perm = rng.permutation(n)
        sse = 0.0
        for start in range(0, n, B):
            idx = perm[start : start + B]
            m = idx.shape[0]
            xb, tb, h1, h2, y, d1, d2, mask1, mask2 = buffers(m)
            np.take(X, idx, axis=0, out=xb)
            np.take(Y, idx, axis=0, out=tb)
            dot(xb, W0[1:], out=h1)
            h1 += W0[0]
            np.maximum(h1, 0.0, out=h1)
            dot(h1, W1[1:], out=h2)
            h2 += W1[0]
            np.maximum(h2, 0.0, out=h2)
            dot(h2, W2[1:], out=y)
            y += W2[0]
            y -= tb
            sse += float(np.vdot(y, y))
            y *= LARGE_LR / m  # δ_out with the learning rate folded in
            dot(h2.T, y, out=G2[1:])
            np.sum(y, axis=0, out=G2[0])
            dot(y, W2[1:].T, out=d2)
            np.greater(h2, 0.0, out=mask2)
            d2 *= mask2
            W2 -= G2
            dot(h1.T, d2, out=G1[1:])
            np.sum(d2, axis=0, out=G1[0])
            dot(d2, W1[1:].T, out=d1)
            np.greater(h1, 0.0, out=mask1)
            d1 *= mask1
            W1 -= G1
            dot(xb.T, d1, out=G0[1:])
            np.sum(d1, axis=0, out=G0[0])
            W0 -= G0
        mark()
    return {"epoch_seconds": np.diff(marks).tolist(), "final_rmse": math.sqrt(sse / Y.size)}


def large_products(n: int, dtype: str, epochs: int) -> Result:
    """The ceiling of any NumPy implementation of the large net: its matrix products alone.

    Per batch, the eight products of ``mlplab.nn``'s training step, in its layout (one
    sample per column, the bias row folded into each product, the batch a transposed view
    of the data): 3 forward products, 3 weight gradients, 2 back-propagated errors. Nothing
    runs between them (no activation, no update, no shuffle), so no implementation that
    calls NumPy for these products can train an epoch faster on the same machine.
    """
    X, _, weights = large_problem(n, dtype)
    Xb = np.hstack([np.ones((n, 1), dtype), X])  # one sample per row, bias column first
    WT = [W.T for W in weights]
    rows = [W[1:] for W in weights]
    bufs: dict[int, tuple[list[Array], list[Array]]] = {}

    def buffers(m: int) -> tuple[list[Array], list[Array]]:
        if m not in bufs:  # activations with their bias row, and the errors of each layer
            acts = [np.ones((W.shape[0], m), dtype) for W in weights]
            bufs[m] = acts, [np.full((W.shape[1], m), 0.01, dtype) for W in weights]
        return bufs[m]

    G = [np.empty_like(W) for W in weights]
    dot, L = np.dot, len(weights)
    marks, mark = _epoch_timer()
    for _ in range(epochs):
        for start in range(0, n, LARGE_BATCH):
            xT = Xb[start : start + LARGE_BATCH].T
            acts, deltas = buffers(xT.shape[1])
            acts[0] = xT
            for l in range(L):  # forward: Zᵀ = Wᵀ Aᵀ (into the errors' buffers: no matter)
                dot(WT[l], acts[l], deltas[l])
            for l in range(L - 1, 0, -1):  # backward: the gradient, then the error below
                dot(acts[l], deltas[l].T, G[l])
                dot(rows[l], deltas[l], deltas[l - 1])
            dot(xT, deltas[0].T, G[0])
        mark()
    return {"epoch_seconds": np.diff(marks).tolist()}  # it trains nothing: no RMSE


def large_sklearn(n: int, dtype: str, epochs: int) -> Result:
    """MLPRegressor(256, 256), relu, sgd, batch 256, no momentum; one partial_fit per epoch."""
    from sklearn.neural_network import MLPRegressor

    X, Y, _ = large_problem(n, dtype)
    model = MLPRegressor(
        hidden_layer_sizes=LARGE_SIZES[1:-1],
        activation="relu",
        solver="sgd",
        batch_size=LARGE_BATCH,
        learning_rate="constant",
        learning_rate_init=LARGE_LR,
        momentum=0.0,
        nesterovs_momentum=False,
        alpha=0.0,
        shuffle=True,
        tol=0.0,
        n_iter_no_change=10**9,
        early_stopping=False,
        random_state=0,
    )
    marks, mark = _epoch_timer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            model.partial_fit(X, Y)
            mark()
    assert model.coefs_[0].dtype == np.dtype(dtype)
    return {
        "epoch_seconds": np.diff(marks).tolist(),
        "final_rmse": math.sqrt(2.0 * float(model.loss_) / Y.shape[1]),
    }


def large_torch(n: int, dtype: str, epochs: int) -> Result:
    """PyTorch on the CPU with every core: Linear/ReLU, loss ½·Σ(y − t)²/batch, SGD."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    X, Y, weights = large_problem(n, dtype)
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    model = _torch_mlp(torch, weights, "relu", "identity").to(tdtype)
    opt = torch.optim.SGD(model.parameters(), lr=LARGE_LR)
    x, t = torch.from_numpy(X), torch.from_numpy(Y)
    gen = torch.Generator().manual_seed(1)
    marks, mark = _epoch_timer()
    sse = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        sse = 0.0
        for start in range(0, n, LARGE_BATCH):
            idx = perm[start : start + LARGE_BATCH]
            xb, tb = x.index_select(0, idx), t.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            err = model(xb) - tb
            batch_sse = (err * err).sum()
            (0.5 * batch_sse / idx.shape[0]).backward()
            opt.step()
            sse += batch_sse.item()
        mark()
    return {"epoch_seconds": np.diff(marks).tolist(), "final_rmse": math.sqrt(sse / Y.size)}


def gemm_peak(n: int, dtype: str, repeats: int = 3) -> Result:
    """The best GFLOP/s of an n×n×n np.matmul (all cores), after one warm-up product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return {"seconds": best, "gflops": 2.0 * n**3 / best / 1e9}


# -- populations ---------------------------------------------------------------------------
SWEEP_DATA = {  # conf/data/tutorial.yaml: a tutorial job's data node
    "name": "tutorial",
    "task": "regression",
    "n_samples": 50,
    "n_features": 2,
    "n_outputs": 2,
    "n_classes": 2,
    "noise": 0.1,
    "teacher_hidden": 0,
    "test_fraction": 0.2,
    "val_fraction": 0.0,
    "standardize": False,
    "path": None,
    "features": None,
    "targets": None,
}


def sweep_member(seed: int) -> tuple[Array, Array, list[Array]]:
    """The training split and initial weights of the tutorial job with ``seed``, as
    ``make sweep SWEEP=base ARGS="seed=range(0,P)"`` makes them (``pipeline.make_rngs``:
    the seed's data, init and shuffle streams; ``data.generate``; the ``normal`` init)."""
    from types import SimpleNamespace

    from mlplab.data import generate
    from mlplab.nn import init_weights

    data_rng, init_rng, _ = np.random.default_rng(seed).spawn(3)
    data = generate(SimpleNamespace(**SWEEP_DATA), data_rng)
    sizes = [data.n_features, 2, data.n_outputs]
    return data.X_train, data.Y_train, init_weights(sizes, "normal", init_rng, 1.0)


def _rss_mib() -> float:
    """This process's resident memory now (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fit_members(members: list[tuple[Array, Array, list[Array]]], epochs: int, tol: float) -> Any:
    """Train ``members`` as one population (plain arrays for one): its results."""
    from mlplab.nn import MLP, OptimizerSpec, TrainData, TrainSettings, fit, make_optimizer

    P = len(members)
    net = MLP([2, 2, 2], "sigmoid", "sigmoid", dtype="float64", members=P)
    for i, (_, _, weights) in enumerate(members):
        net.set_member(i, weights)
    X, Y = (
        (members[0][0], members[0][1])
        if P == 1
        else (np.stack([m[0] for m in members]), np.stack([m[1] for m in members]))
    )
    opt = make_optimizer(net.weights, [OptimizerSpec("sgd", TUTORIAL_LR)] * P)
    settings = TrainSettings(epochs=epochs, batch_size=None, reduction="sum", tol=tol)
    rngs = [np.random.default_rng(i) for i in range(P)]
    return fit(net, TrainData(X, Y), opt, [settings] * P, rngs)


def _population_result(results: list[Any], start: tuple[float, float], rss: float) -> Result:
    """What a population worker reports: times, network-epochs, memory, the final weights' hash."""
    wall, cpu = _since(start)
    digest = hashlib.sha256()
    for r in results:
        for W in r.weights:
            digest.update(np.ascontiguousarray(W).tobytes())
    return {
        "wall": wall,
        "cpu": cpu,
        "members": len(results),
        "network_epochs": sum(r.epochs_run for r in results),
        "rss_before_mib": rss,
        "peak_rss_mib": _peak_rss_mib(),
        "final_rmse": float(np.mean([r.history["train_rmse"][-1] for r in results])),
        "weights_sha256": digest.hexdigest(),
    }


def population_stacked(P: int, epochs: int, tol: float = 0.0) -> Result:
    """P tutorial jobs trained as one population (the network's construction included)."""
    members = [sweep_member(seed) for seed in range(P)]
    rss = _rss_mib()
    start = _clock()
    results = _fit_members(members, epochs, tol)
    return _population_result(results, start, rss)


def population_loop(P: int, epochs: int, tol: float = 0.0) -> Result:
    """The same P jobs as P single networks, fit one after the other."""
    members = [sweep_member(seed) for seed in range(P)]
    rss = _rss_mib()
    start = _clock()
    results = [r for m in members for r in _fit_members([m], epochs, tol)]
    return _population_result(results, start, rss)


POPULATION = {"stacked": population_stacked, "loop": population_loop}
TUTORIAL = {
    "ours": tutorial_ours,
    "bare": tutorial_bare,
    "textbook": tutorial_textbook,
    "sklearn": tutorial_sklearn,
    "torch": tutorial_torch,
}
LARGE = {
    "ours": large_ours,
    "bare": large_bare,
    "products": large_products,
    "sklearn": large_sklearn,
    "torch": large_torch,
}

"""The one factory: the engine's network, optimiser and loop settings, built from the config.

Every network of the project is made here: a run's (or a population's), the trace's, the
gradient check's (:meth:`MLP.like`) and the served model's (:func:`network_from_spec`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mlplab.environment import available_memory
from mlplab.errors import ConfigError
from mlplab.nn import MLP, TrainSettings, init_weights, make_optimizer
from mlplab.nn.optimizers import Optimizer
from mlplab.weights import check_weights, load_weights

if TYPE_CHECKING:  # annotations only: the served model (and the tracking helper) need no Hydra
    from mlplab.config import Config

Array = np.ndarray


def layer_sizes(cfg: Config, n_features: int, n_outputs: int) -> list[int]:
    """Input width, hidden widths, output width."""
    return [n_features, *cfg.model.hidden, n_outputs]


def memory_needed(cfg: Config, sizes: Sequence[int], n_train: int, n_val: int) -> int:
    """Roughly the bytes one run's training holds at its peak (an upper estimate).

    Weight-sized: the weights, their gradients, the optimiser's state and scratch (up to
    three), the initial, final and best weights, and each animation snapshot. Batch-sized:
    five buffers per unit (pre-activation, activation, error, derivative, scratch) for a
    training batch and for a validation chunk (up to 4 096 samples).
    """
    weights = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
    units = sum(sizes[1:])
    batch = min(cfg.train.batch_size or n_train, n_train) + min(n_val, 4096)
    copies = 8 + len(snapshot_epochs(cfg))
    return np.dtype(cfg.train.dtype).itemsize * (copies * weights + 5 * units * batch)


def check_memory(cfg: Config, sizes: Sequence[int], n_train: int, n_val: int) -> None:
    """Refuse a network whose training cannot fit in this machine's available memory (it
    would be killed by the system part-way, or swap for hours), before anything starts."""
    needed, available = memory_needed(cfg, sizes, n_train, n_val), available_memory()
    if available is not None and needed > available:
        raise ConfigError(
            "model.hidden",
            list(cfg.model.hidden),
            f"a network that fits in memory: training {sizes} in {cfg.train.dtype} needs "
            f"about {needed / 2**30:.1f} GiB, and {available / 2**30:.1f} GiB are available",
        )


def network(cfg: Config, sizes: Sequence[int], members: int = 1) -> MLP:
    """The network of ``cfg`` (``members`` of them for a population), weights zero."""
    m = cfg.model
    return MLP(sizes, m.activation, m.output_activation, m.negative_slope, cfg.train.dtype, members)


def initial_weights(cfg: Config, sizes: Sequence[int], rng: np.random.Generator) -> list[Array]:
    """The initial weights, drawn from ``rng`` (normal, xavier, he: in float64) or read from a
    file, in the network's dtype: what it starts from (``weights/initial.npz``)."""
    m = cfg.model
    if m.init == "file":
        weights = load_weights(str(m.init_file))
        check_weights(weights, sizes, f"model.init_file={m.init_file!r}")
    else:
        weights = init_weights(sizes, m.init, rng, m.init_scale)
    return [W.astype(cfg.train.dtype, copy=False) for W in weights]


def optimizer(cfgs: Sequence[Config], net: MLP) -> Optimizer:
    """The optimiser over ``net``'s weights, one spec (the ``optimizer`` node) per member."""
    return make_optimizer(net.weights, [c.optimizer for c in cfgs])


def snapshot_epochs(cfg: Config) -> list[int]:
    """Epochs at which the animation captures weights (0 = initial).

    Evenly spaced and geometrically spaced candidates, so that a run stopping early (by
    ``train.tol``) still has many frames; the plot stage picks ``plot.frames`` of them.
    """
    if not (cfg.plot.enabled and cfg.plot.animate):
        return []
    E, n = cfg.train.epochs, min(cfg.plot.frames, cfg.train.epochs + 1)
    candidates = (*np.linspace(0, E, n), *np.geomspace(1, E, 3 * n))
    return sorted({round(float(e)) for e in candidates})


def train_settings(cfg: Config) -> TrainSettings:
    """The loop's settings for one member."""
    t, o = cfg.train, cfg.optimizer
    return TrainSettings(
        epochs=t.epochs,
        batch_size=t.batch_size,
        shuffle=t.shuffle,
        loss=t.loss,
        reduction=t.reduction,
        tol=t.tol,
        patience=t.patience,
        schedule=o.schedule,
        step_size=o.step_size,
        gamma=o.gamma,
        classification=cfg.data.task == "classification",
        snapshot_epochs=snapshot_epochs(cfg),
    )


def network_spec(
    cfg: Config,
    sizes: Sequence[int],
    features: list[str],
    targets: list[str],
    scaling: dict[str, list[float]],
) -> dict[str, Any]:
    """What the served model needs to rebuild the network (``network.json``)."""
    return {
        "sizes": list(sizes),
        "activation": cfg.model.activation,
        "output_activation": cfg.model.output_activation,
        "negative_slope": cfg.model.negative_slope,
        "dtype": cfg.train.dtype,
        "features": features,
        "targets": targets,
        "scaling": scaling,
    }


def network_from_spec(spec: dict[str, Any], weights: Sequence[Array]) -> MLP:
    """The network described by :func:`network_spec`, holding ``weights``."""
    net = MLP(
        spec["sizes"],
        spec["activation"],
        spec["output_activation"],
        spec["negative_slope"],
        spec["dtype"],
    )
    net.set_weights(weights)
    return net


def stack_key(
    cfg: Config, n_features: int, n_outputs: int, n_train: int, n_val: int
) -> tuple[Any, ...]:
    """Runs whose networks stack into one population have equal keys.

    Same layer sizes, activations, loss, dtype, batch size, BLAS threads, task and data
    shape, and the same update rule (the code path of the optimiser; its hyperparameters
    may differ).
    """
    m, t = cfg.model, cfg.train
    return (
        tuple(layer_sizes(cfg, n_features, n_outputs)),
        str(m.activation),
        str(m.output_activation),
        m.negative_slope,
        str(t.loss),
        str(t.dtype),
        t.batch_size,
        t.blas_threads,
        str(cfg.data.task),
        n_train,
        n_val,
        cfg.optimizer.rule,
    )

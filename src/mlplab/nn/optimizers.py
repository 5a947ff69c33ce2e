"""Optimisers with PyTorch's update rules (``torch.optim.SGD`` and ``torch.optim.Adam``).

Each member of a population has its own hyperparameters (:class:`OptimizerSpec`); inside,
they are arrays broadcast over the member axis (0-d for one network), in the weights' dtype,
and every scalar is computed with Python floats exactly as it would be for one network
alone, so a member's update is bit-identical to running alone. All updates are in place and
allocate nothing after the first step (intermediate products go to one scratch buffer per
parameter); the gradient arrays passed to :meth:`Optimizer.step` are used as scratch space.
Weight decay is added to the gradient of the whole matrix, bias row included.

Plain SGD (no momentum, no weight decay) has no ``step`` here: the training step folds the
learning rate into the output error and updates each matrix in place as soon as its
gradient is known (:meth:`mlplab.nn.network.MLP.make_step`), its one implementation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Array = np.ndarray

#: The ``optimizer.name`` choices.
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "step", "exponential")


@dataclass
class OptimizerSpec:
    """One member's update rule and hyperparameters (the config's ``optimizer`` node is one)."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    @property
    def rule(self) -> tuple[str | bool, ...]:
        """The code path of the update: members stack only when their rules are equal."""
        if self.name == "adam":
            return ("adam", self.weight_decay > 0)
        if self.momentum == 0 and self.weight_decay == 0:
            return ("plain_sgd",)
        return ("sgd", self.momentum > 0, self.nesterov, self.weight_decay > 0)


def scheduled_lr(lr: float, schedule: str, epoch: int, step_size: int, gamma: float) -> float:
    """Learning rate of ``epoch`` (counted from 0): constant, step or exponential decay."""
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr * gamma ** (epoch // step_size)
    if schedule == "exponential":
        return lr * gamma**epoch
    raise ValueError(f"unknown schedule {schedule!r}")


def member_values(values: Sequence[float], like: Array) -> Array:
    """Per-member scalars broadcast over ``like``'s members: 0-d for one network, else (P, 1, 1)."""
    if like.ndim == 2:
        return np.array(values[0], like.dtype)
    return np.array(values, like.dtype).reshape(-1, 1, 1)


def _take(state: list[Array], members: Sequence[int], single: bool) -> list[Array]:
    """The given members' rows of per-member state arrays (a plain matrix when one is left)."""
    if state[0].ndim == 2:  # one network: nothing to choose from
        return [s.copy() for s in state]
    if single:
        return [s[members[0]].copy() for s in state]
    return [s[list(members)] for s in state]


class Optimizer:
    """Base class: the parameters (weight stacks) and each member's spec."""

    #: Plain SGD: the training step itself applies the update (``MLP.make_step(update=True)``).
    folds_into_step = False

    def __init__(self, params: Sequence[Array], specs: Sequence[OptimizerSpec]) -> None:
        self.params = list(params)
        self.specs = list(specs)
        rules = {s.rule for s in self.specs}
        if len(rules) != 1:
            raise ValueError(f"members with different update rules cannot share a step: {rules}")
        self._scratch: list[Array] | None = None
        self._decay = self.constant([s.weight_decay for s in self.specs])

    def constant(self, values: Sequence[float]) -> Array:
        """Per-member values as an operand for the weights (see :func:`member_values`)."""
        return member_values(values, self.params[0])

    def step(self, grads: Sequence[Array], lrs: Sequence[float]) -> None:
        """Apply one update with each member's learning rate ``lrs``."""
        raise NotImplementedError(f"{type(self).__name__} is applied by the training step")

    def scratch(self) -> list[Array]:
        """One buffer per parameter for intermediate products (allocated on first use)."""
        if self._scratch is None:
            self._scratch = [np.empty_like(W) for W in self.params]
        return self._scratch

    def add_decay(self, W: Array, g: Array, tmp: Array) -> None:
        """g += weight_decay·W (members of one rule all decay, or none does)."""
        if self.specs[0].weight_decay > 0:
            np.multiply(W, self._decay, out=tmp)
            g += tmp

    def select(self, members: Sequence[int], params: Sequence[Array]) -> Optimizer:
        """This optimiser for a smaller population over ``params`` (the members' state kept)."""
        new = type(self)(params, [self.specs[m] for m in members])
        new.take_state(self, members)
        return new

    def take_state(self, old: Optimizer, members: Sequence[int]) -> None:
        """Copy the given members' state from ``old`` (nothing to copy without state)."""


class PlainSGD(Optimizer):
    """W ← W − lr·∂E/∂W: folded into the training step, never applied from here."""

    folds_into_step = True


class SGD(Optimizer):
    """SGD with weight decay and/or momentum (buffer starts at the first gradient), Nesterov."""

    def __init__(self, params: Sequence[Array], specs: Sequence[OptimizerSpec]) -> None:
        super().__init__(params, specs)
        self.mu = self.constant([s.momentum for s in self.specs])
        self.bufs: list[Array] | None = None

    def take_state(self, old: Optimizer, members: Sequence[int]) -> None:
        assert isinstance(old, SGD)
        if old.bufs is not None:
            self.bufs = _take(old.bufs, members, self.params[0].ndim == 2)

    def step(self, grads: Sequence[Array], lrs: Sequence[float]) -> None:
        spec = self.specs[0]
        lr = self.constant(lrs)
        first = self.bufs is None
        if first:
            self.bufs = [np.empty_like(W) for W in self.params]
        assert self.bufs is not None
        for W, g, buf, tmp in zip(self.params, grads, self.bufs, self.scratch(), strict=True):
            self.add_decay(W, g, tmp)
            if spec.momentum > 0:
                if first:
                    np.copyto(buf, g)
                else:
                    buf *= self.mu
                    buf += g
                if spec.nesterov:
                    np.multiply(buf, self.mu, out=tmp)
                    g += tmp
                else:
                    g = buf  # the step is lr·buf: read it without copying
            np.multiply(g, lr, out=tmp)
            W -= tmp


class Adam(Optimizer):
    """Adam: bias-corrected moments, eps outside the square root (as PyTorch)."""

    def __init__(self, params: Sequence[Array], specs: Sequence[OptimizerSpec]) -> None:
        super().__init__(params, specs)
        self.b1 = self.constant([s.beta1 for s in self.specs])
        self.b2 = self.constant([s.beta2 for s in self.specs])
        self.one_minus_b1 = self.constant([1.0 - s.beta1 for s in self.specs])
        self.one_minus_b2 = self.constant([1.0 - s.beta2 for s in self.specs])
        self.eps = self.constant([s.eps for s in self.specs])
        self.m = [np.zeros_like(W) for W in self.params]
        self.v = [np.zeros_like(W) for W in self.params]
        self.t = 0

    def take_state(self, old: Optimizer, members: Sequence[int]) -> None:
        assert isinstance(old, Adam)
        single = self.params[0].ndim == 2
        self.m, self.v, self.t = _take(old.m, members, single), _take(old.v, members, single), old.t

    def step(self, grads: Sequence[Array], lrs: Sequence[float]) -> None:
        self.t += 1
        t = self.t
        step_size = self.constant(
            [float(lr) / (1.0 - s.beta1**t) for lr, s in zip(lrs, self.specs, strict=True)]
        )
        bc2_sqrt = self.constant([math.sqrt(1.0 - s.beta2**t) for s in self.specs])
        for W, g, m, v, tmp in zip(self.params, grads, self.m, self.v, self.scratch(), strict=True):
            self.add_decay(W, g, tmp)
            m *= self.b1
            np.multiply(g, self.one_minus_b1, out=tmp)
            m += tmp
            v *= self.b2
            np.multiply(g, g, out=g)
            g *= self.one_minus_b2
            v += g
            # denom = sqrt(v) / sqrt(1 - b2^t) + eps, written into g (scratch)
            np.sqrt(v, out=g)
            g /= bc2_sqrt
            g += self.eps
            np.divide(m, g, out=g)
            g *= step_size
            W -= g


def make_optimizer(params: Sequence[Array], specs: Sequence[OptimizerSpec]) -> Optimizer:
    """The optimiser for ``params`` (one spec per member; all of one update rule)."""
    rule = specs[0].rule
    if rule[0] == "adam":
        return Adam(params, specs)
    if rule[0] == "plain_sgd":
        return PlainSGD(params, specs)
    return SGD(params, specs)

"""Optimisers with PyTorch's update rules (``torch.optim.SGD`` and ``torch.optim.Adam``).

All updates are in place on the weight arrays and allocate nothing after the first step
(intermediate products go to one scratch buffer per parameter). Weight decay is added to the
gradient of the whole matrix, bias row included. The gradient arrays passed to :meth:`step`
are used as scratch space (they are recomputed every batch). Scalars stay Python floats, so
float32 weights stay float32 (NEP 50). Plain SGD inside :func:`mlplab.nn.fit` does not come
here: the training step folds the learning rate into the output error and updates in place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Array = np.ndarray


class Optimizer:
    """Base class: holds the parameters and the base learning rate."""

    def __init__(self, params: Sequence[Array], lr: float, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self._scratch: list[Array] | None = None

    def step(self, grads: Sequence[Array], lr: float) -> None:
        """Apply one update with learning rate ``lr``."""
        raise NotImplementedError

    def scratch(self) -> list[Array]:
        """One buffer per parameter for intermediate products (allocated on first use)."""
        if self._scratch is None:
            self._scratch = [np.empty_like(W) for W in self.params]
        return self._scratch

    def _decay(self, W: Array, g: Array, tmp: Array) -> None:
        if self.weight_decay:
            np.multiply(W, self.weight_decay, out=tmp)
            g += tmp


class SGD(Optimizer):
    """SGD with optional momentum (buffer starts at the first gradient) and Nesterov."""

    def __init__(
        self,
        params: Sequence[Array],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.bufs: list[Array] | None = None

    def step(self, grads: Sequence[Array], lr: float) -> None:
        lr = float(lr)  # a Python float keeps float32 weights float32 (NEP 50)
        mu = self.momentum
        if mu == 0.0 and not self.weight_decay:
            for W, g in zip(self.params, grads, strict=True):
                g *= lr
                W -= g
            return
        first = self.bufs is None
        if first:
            self.bufs = [np.empty_like(W) for W in self.params]
        assert self.bufs is not None
        for W, g, buf, tmp in zip(self.params, grads, self.bufs, self.scratch(), strict=True):
            self._decay(W, g, tmp)
            if mu != 0.0:
                if first:
                    np.copyto(buf, g)
                else:
                    buf *= mu
                    buf += g
                if self.nesterov:
                    np.multiply(buf, mu, out=tmp)
                    g += tmp
                else:
                    g = buf  # the step is lr·buf: read it without copying
            np.multiply(g, lr, out=tmp)
            W -= tmp


class Adam(Optimizer):
    """Adam: bias-corrected moments, eps outside the square root (as PyTorch)."""

    def __init__(
        self,
        params: Sequence[Array],
        lr: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.m = [np.zeros_like(W) for W in self.params]
        self.v = [np.zeros_like(W) for W in self.params]
        self.t = 0

    def step(self, grads: Sequence[Array], lr: float) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        bc1 = 1.0 - b1**self.t
        bc2_sqrt = math.sqrt(1.0 - b2**self.t)
        step_size = float(lr) / bc1
        for W, g, m, v, tmp in zip(self.params, grads, self.m, self.v, self.scratch(), strict=True):
            self._decay(W, g, tmp)
            m *= b1
            np.multiply(g, 1.0 - b1, out=tmp)
            m += tmp
            v *= b2
            np.multiply(g, g, out=g)
            g *= 1.0 - b2
            v += g
            # denom = sqrt(v) / sqrt(1 - b2^t) + eps, written into g (scratch)
            np.sqrt(v, out=g)
            g /= bc2_sqrt
            g += self.eps
            np.divide(m, g, out=g)
            g *= step_size
            W -= g


def make_optimizer(
    name: str,
    params: Sequence[Array],
    lr: float,
    *,
    momentum: float = 0.0,
    nesterov: bool = False,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> Optimizer:
    """Build an optimiser by its config name: ``sgd``, ``momentum`` or ``adam``."""
    if name == "sgd":
        return SGD(params, lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if name == "momentum":
        return SGD(params, lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if name == "adam":
        return Adam(params, lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def scheduled_lr(lr: float, schedule: str, epoch: int, step_size: int, gamma: float) -> float:
    """Learning rate of ``epoch`` (counted from 0): constant, step or exponential decay."""
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr * gamma ** (epoch // step_size)
    if schedule == "exponential":
        return lr * gamma**epoch
    raise ValueError(f"unknown schedule {schedule!r}")

"""Optimisers with PyTorch's update rules (``torch.optim.SGD`` and ``torch.optim.Adam``).

All updates are in place on the weight arrays. Weight decay is added to the gradient of
the whole matrix, bias row included. The gradient arrays passed to :meth:`step` are used
as scratch space (they are recomputed every batch).
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

    def step(self, grads: Sequence[Array], lr: float) -> None:
        """Apply one update with learning rate ``lr``."""
        raise NotImplementedError

    def _decay(self, W: Array, g: Array) -> None:
        if self.weight_decay:
            g += self.weight_decay * W


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
        lr = float(lr)
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
        for W, g, buf in zip(self.params, grads, self.bufs, strict=True):
            self._decay(W, g)
            if mu != 0.0:
                if first:
                    np.copyto(buf, g)
                else:
                    buf *= mu
                    buf += g
                if self.nesterov:
                    g += mu * buf
                else:
                    np.copyto(g, buf)
            g *= lr
            W -= g


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
        for W, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            self._decay(W, g)
            m *= b1
            m += (1.0 - b1) * g
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

"""Heads: the last, parameter-free step from the network's raw outputs to prediction units.

Each head keeps what it needs as buffers (target statistics, a fitted spread), so a checkpoint's
state dict alone restores it; ``mlptrain-eval`` rebuilds a head with placeholder statistics and then
loads them.  Buffer names are part of the checkpoint format: do not rename them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AffineHead(nn.Module):
    """Regression mean in target units: ``z * y_std + y_mean`` (the body learns standardised targets)."""

    def __init__(self, y_mean: torch.Tensor, y_std: torch.Tensor):
        super().__init__()
        self.register_buffer("y_mean", y_mean.float().reshape(-1))
        self.register_buffer("y_std", y_std.float().reshape(-1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.y_std + self.y_mean


class PointHead(AffineHead):
    """A point regressor's head: the mean, plus a constant noise spread per output (not an output).

    ``spread`` is the Gaussian variance or the Laplace scale, refitted by :meth:`Task.calibrate` on
    the validation residuals after every epoch; it starts as the spread of the targets themselves
    (``spread``, computed by the likelihood from ``y_std``).
    """

    def __init__(self, y_mean, y_std, family: str, spread: torch.Tensor):
        super().__init__(y_mean, y_std)
        self.family = family
        self.register_buffer("spread", spread.float().reshape(-1).clone())

    def extra_repr(self) -> str:
        return f"{self.family}, constant spread fitted on validation"


class ScaleHead(AffineHead):
    """Mean and a positive spread (variance for Gaussian, scale b for Laplace), both in target units.

    Output columns: ``[mean_1..mean_d, spread_1..spread_d]``.  The floor is in standardised units.
    ``power`` is how the spread scales with the target's units: 2 for a variance, 1 for a scale.
    """

    def __init__(self, y_mean, y_std, kind: str, positive: str, floor: float, power: int):
        super().__init__(y_mean, y_std)
        self.kind, self.positive, self.floor, self.power = kind, positive, floor, power

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d = self.y_mean.numel()
        mean = z[:, :d] * self.y_std + self.y_mean
        raw = z[:, d:]
        pos = F.softplus(raw) if self.positive == "softplus" else torch.exp(raw.clamp(max=30.0))
        # Variance scales with std^2, a Laplace scale with std.
        unit = self.y_std**self.power
        return torch.cat([mean, (pos + self.floor) * unit], 1)

    def extra_repr(self) -> str:
        return f"{self.kind}, positive={self.positive}, floor={self.floor}"


class LogRateHead(nn.Module):
    """Poisson log link: the output is the log-rate ``z + log(mean count)``; the rate is its exp.

    Not :class:`AffineHead`'s ``z * y_std + y_mean``: that standardises the *rate*, which then can be
    negative, and a log-rate has no target units to scale by.  Here the body's z is a log-ratio to the
    training mean count, so an untrained network (z near 0) predicts that mean, and every output is a
    valid rate.  The floor keeps log(0) out when every training count is 0 (or in a placeholder head).
    """

    def __init__(self, y_mean: torch.Tensor, floor: float = 1e-3):
        super().__init__()
        self.register_buffer("log_mean", y_mean.float().reshape(-1).clamp_min(floor).log())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.log_mean

    def extra_repr(self) -> str:
        return "poisson, log link"

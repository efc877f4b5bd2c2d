"""Losses as likelihoods: each loss is the negative log-likelihood of an output distribution.

A :class:`Task` ties a loss to what the dataset needs: the head (its width and
the transform to prediction units), the loss itself, the metrics and the
default monitored metric.  See docs/losses.md for the derivations.

=============  ====================  ================================  ===========
loss           tasks                 distribution of y given x         head width
=============  ====================  ================================  ===========
cross_entropy  classification        Categorical(softmax(z))           K
nll            classification        Categorical, written log p + NLL  K
mse            classification        Gaussian on one-hot targets       K
bce            binary classif.       Bernoulli(sigmoid(z))             1
mse            regression            Gaussian, fixed sigma             d
l1             regression            Laplace, fixed scale              d
huber          regression            Gaussian core, Laplace tails      d
gaussian_nll   regression            Gaussian, learned sigma(x)        2d
laplace_nll    regression            Laplace, learned b(x)             2d
=============  ====================  ================================  ===========
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mlptrain.config import ConfigError

# loss name -> tasks it fits ("binary" = classification with exactly two classes)
SUPPORTED = {
    "cross_entropy": ("classification",),
    "nll": ("classification",),
    "mse": ("classification", "regression"),
    "bce": ("binary",),
    "l1": ("regression",),
    "huber": ("regression",),
    "gaussian_nll": ("regression",),
    "laplace_nll": ("regression",),
}
PROBABILISTIC = ("gaussian_nll", "laplace_nll")
# The metric each task optimises by default, and whether larger is better.
DEFAULT_MONITOR = {"classification": "acc", "regression": "rmse", "probabilistic": "nll"}
MAXIMISE = {"acc", "r2"}


def losses_for(task: str, n_classes: int | None) -> list[str]:
    kinds = {task} | ({"binary"} if task == "classification" and n_classes == 2 else set())
    return [name for name, fits in SUPPORTED.items() if kinds & set(fits)]


# ----------------------------------------------------------------------------- heads
class AffineHead(nn.Module):
    """Regression mean in target units: ``z * y_std + y_mean`` (the body learns standardised targets)."""

    def __init__(self, y_mean: torch.Tensor, y_std: torch.Tensor):
        super().__init__()
        self.register_buffer("y_mean", y_mean.float().reshape(-1))
        self.register_buffer("y_std", y_std.float().reshape(-1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.y_std + self.y_mean


class ScaleHead(AffineHead):
    """Mean and a positive spread (variance for Gaussian, scale b for Laplace), both in target units.

    Output columns: ``[mean_1..mean_d, spread_1..spread_d]``.
    """

    def __init__(self, y_mean, y_std, kind: str, positive: str, floor: float):
        super().__init__(y_mean, y_std)
        self.kind, self.positive, self.floor = kind, positive, floor

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d = self.y_mean.numel()
        mean = z[:, :d] * self.y_std + self.y_mean
        raw = z[:, d:]
        pos = F.softplus(raw) if self.positive == "softplus" else torch.exp(raw.clamp(max=30.0))
        # Variance scales with std^2, a Laplace scale with std.
        unit = self.y_std**2 if self.kind == "gaussian_nll" else self.y_std
        return torch.cat([mean, (pos + self.floor) * unit], 1)

    def extra_repr(self) -> str:
        return f"{self.kind}, positive={self.positive}, floor={self.floor}"


# ----------------------------------------------------------------------------- task
@dataclass
class Task:
    loss_name: str
    task: str  # classification | regression
    n_outputs: int
    head: nn.Module
    head_width: int
    label_smoothing: float = 0.0
    mse_output: str = "softmax"
    huber_delta: float = 1.0

    @property
    def kind(self) -> str:
        """classification | regression | probabilistic: picks the metrics."""
        return "probabilistic" if self.loss_name in PROBABILISTIC else self.task

    @property
    def default_monitor(self) -> str:
        return DEFAULT_MONITOR[self.kind]

    # --- the loss: mean over the batch -------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = self.loss_name
        if self.task == "classification":
            if n == "cross_entropy":
                return F.cross_entropy(out, y, label_smoothing=self.label_smoothing)
            if n == "nll":
                return F.nll_loss(F.log_softmax(out, 1), y)
            if n == "bce":
                return F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype))
            if n == "mse":  # squared error to the one-hot target, summed over classes (the Brier score)
                p = F.softmax(out, 1) if self.mse_output == "softmax" else out
                return (p - F.one_hot(y, self.n_outputs).to(p.dtype)).pow(2).sum(1).mean()
        y = y.reshape(len(y), -1).to(out.dtype)
        d = y.shape[1]
        if n == "mse":
            return F.mse_loss(out, y)
        if n == "l1":
            return F.l1_loss(out, y)
        if n == "huber":
            return F.huber_loss(out, y, delta=self.huber_delta)
        if n == "gaussian_nll":
            return F.gaussian_nll_loss(out[:, :d], y, out[:, d:], full=True)
        if n == "laplace_nll":
            b = out[:, d:]
            return ((out[:, :d] - y).abs() / b + torch.log(2 * b)).mean()
        raise AssertionError(n)

    # --- predictions ---------------------------------------------------------------------
    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "bce":
            p1 = torch.sigmoid(out[:, 0])
            return torch.stack([1 - p1, p1], 1)
        if self.loss_name == "mse" and self.mse_output == "raw":
            return out.clamp_min(0) / out.clamp_min(0).sum(1, keepdim=True).clamp_min(1e-12)
        return F.softmax(out.float(), 1)

    def mean_and_std(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        d = self.n_outputs
        if self.loss_name == "gaussian_nll":
            return out[:, :d], out[:, d:].sqrt()
        if self.loss_name == "laplace_nll":
            return out[:, :d], out[:, d:] * math.sqrt(2)
        return out[:, :d], None

    # --- metrics: whole-split tensors in, python floats out -----------------------------
    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        out = out.float()
        m = {"loss": self.loss(out, y)}
        if self.task == "classification":
            p = self.probabilities(out)
            m["acc"] = (p.argmax(1) == y).float().mean()
            m["nll"] = F.nll_loss(torch.log(p.clamp_min(1e-12)), y)
            m["ece"] = expected_calibration_error(p, y)
        else:
            y = y.reshape(len(y), -1).float()
            mean, std = self.mean_and_std(out)
            err = mean - y
            m["rmse"] = err.pow(2).mean().sqrt()
            m["mae"] = err.abs().mean()
            m["r2"] = 1 - err.pow(2).sum(0) .div((y - y.mean(0)).pow(2).sum(0).clamp_min(1e-12)).mean()
            if std is not None:
                d = self.n_outputs
                if self.loss_name == "gaussian_nll":
                    m["nll"] = F.gaussian_nll_loss(mean, y, out[:, d:], full=True, reduction="sum") / len(y)
                    half = 1.959964 * std
                else:  # Laplace: the central 95% interval is mean +- b ln(20)
                    b = out[:, d:]
                    m["nll"] = ((err.abs() / b + torch.log(2 * b)).sum(1)).mean()
                    half = b * math.log(20.0)
                m["coverage95"] = (err.abs() <= half).float().mean()
        # One device->host transfer for all metrics.
        names = list(m)
        values = torch.stack([m[k].detach().float() for k in names]).tolist()
        return dict(zip(names, values))


def expected_calibration_error(p: torch.Tensor, y: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    conf, pred = p.max(1)
    correct = (pred == y).float()
    idx = (conf * bins).long().clamp(max=bins - 1)
    count = torch.zeros(bins, device=p.device).index_add_(0, idx, torch.ones_like(conf))
    gap = torch.zeros(bins, device=p.device).index_add_(0, idx, correct - conf)
    return gap.abs().sum() / count.sum().clamp_min(1)


def build_task(loss_cfg, meta: dict, y_mean: torch.Tensor, y_std: torch.Tensor) -> Task:
    """Check that the loss fits the dataset's task and build the matching head."""
    task, k = meta["task"], meta["n_outputs"]
    fits = losses_for(task, k if task == "classification" else None)
    if loss_cfg.name not in fits:
        raise ConfigError(
            f"loss={loss_cfg.name} does not fit dataset={meta['name']} ({task}"
            f"{f', {k} classes' if task == 'classification' else ''}); losses that fit: {', '.join(fits)}")
    if task == "classification":
        head, width = nn.Identity(), (1 if loss_cfg.name == "bce" else k)
    elif loss_cfg.name in PROBABILISTIC:
        head = ScaleHead(y_mean, y_std, loss_cfg.name, loss_cfg.variance, loss_cfg.min_variance)
        width = 2 * k
    else:
        head, width = AffineHead(y_mean, y_std), k
    return Task(loss_cfg.name, task, k, head, width, loss_cfg.label_smoothing, loss_cfg.output,
                loss_cfg.huber_delta)


def monitor_of(task: Task, monitor: str, mode: str) -> tuple[str, str]:
    """Resolve ``trainer.monitor``/``trainer.mode`` ('auto' = per task) to a metric and a direction."""
    name = task.default_monitor if monitor == "auto" else monitor.removeprefix("val/")
    valid = {"classification": ("loss", "acc", "nll", "ece"),
             "regression": ("loss", "rmse", "mae", "r2"),
             "probabilistic": ("loss", "rmse", "mae", "r2", "nll", "coverage95")}[task.kind]
    if name not in valid:
        raise ConfigError(f"trainer.monitor: {name!r} is not a metric of this task; valid choices: auto, {', '.join(valid)}")
    if mode == "auto":
        mode = "max" if name in MAXIMISE else "min"
    return name, mode

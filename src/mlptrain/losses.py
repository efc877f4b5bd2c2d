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

Every regression model is scored as a predictive distribution.  The
probabilistic losses predict their spread per input; a point regressor
(mse, l1, huber) gets a constant spread, the maximum-likelihood fit to the
validation residuals (Gaussian variance ``mean(r^2)``; Laplace scale
``mean(|r|)`` for l1), kept in the head so a checkpoint carries it.  That makes
NLL and interval coverage comparable across all regression losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Laplace, Normal

from mlptrain.config import loss_misfit
from mlptrain.errors import ConfigError

PROBABILISTIC = ("gaussian_nll", "laplace_nll")
LAPLACE = ("l1", "laplace_nll")  # regression losses whose noise model is Laplace; the rest are Gaussian
# Metrics each kind of task reports (metrics.json, TensorBoard, HParams).
METRICS = {
    "classification": ("loss", "acc", "nll", "ece"),
    "regression": ("loss", "rmse", "mae", "r2", "nll", "coverage95"),
    "probabilistic": ("loss", "rmse", "mae", "r2", "nll", "coverage95"),
}
# The metric each task selects on by default. Never "loss": it is not comparable across losses
# (a sweep over loss= must rank its jobs on one scale). Point regressors rank by RMSE, predictive
# distributions by NLL (a proper scoring rule that rewards calibrated spread).
DEFAULT_MONITOR = {"classification": "acc", "regression": "rmse", "probabilistic": "nll"}
MAXIMISE = {"acc", "r2"}
NOT_MONITORABLE = {"coverage95"}  # good when near 0.95, so neither min nor max selects on it
Z975 = NormalDist().inv_cdf(0.975)  # Gaussian central 95% interval: mean +- 1.96 sigma
LN20 = math.log(20.0)  # Laplace central 95% interval: mean +- b ln 20, since P(|y - mu| > t) = exp(-t/b)


def family_of(loss: str) -> str:
    """The regression noise model a loss is the likelihood of: gaussian | laplace."""
    return "laplace" if loss in LAPLACE else "gaussian"


# ----------------------------------------------------------------------------- heads
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
    the validation residuals after every epoch; it starts as the spread of the targets themselves.
    """

    def __init__(self, y_mean, y_std, family: str):
        super().__init__(y_mean, y_std)
        self.family = family
        spread = self.y_std**2 if family == "gaussian" else self.y_std / math.sqrt(2)
        self.register_buffer("spread", spread.clone())

    def extra_repr(self) -> str:
        return f"{self.family}, constant spread fitted on validation"


class ScaleHead(AffineHead):
    """Mean and a positive spread (variance for Gaussian, scale b for Laplace), both in target units.

    Output columns: ``[mean_1..mean_d, spread_1..spread_d]``.  The floor is in standardised units.
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


def elementwise_nll(family: str, mean: torch.Tensor, y: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """-log p(y) per element, for a Gaussian (spread = variance) or a Laplace (spread = scale b)."""
    # torch.distributions with validate_args=False rather than F.gaussian_nll_loss, whose check for
    # negative variances is a host-device sync on every step; the heads already keep spreads positive.
    if family == "gaussian":
        return -Normal(mean, spread.sqrt(), validate_args=False).log_prob(y)
    return -Laplace(mean, spread, validate_args=False).log_prob(y)


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
        """classification | regression | probabilistic: picks the default monitor."""
        return "probabilistic" if self.loss_name in PROBABILISTIC else self.task

    @property
    def family(self) -> str:
        """The regression noise model: gaussian | laplace."""
        return family_of(self.loss_name)

    @property
    def default_monitor(self) -> str:
        return DEFAULT_MONITOR[self.kind]

    @property
    def metric_names(self) -> tuple[str, ...]:
        return METRICS[self.kind]

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
        if n in PROBABILISTIC:  # per-example NLL (summed over outputs), so the loss is exactly the nll metric
            return elementwise_nll(self.family, out[:, :d], y, out[:, d:]).sum(1).mean()
        raise AssertionError(n)

    # --- predictions ---------------------------------------------------------------------
    def predicted_class(self, out: torch.Tensor) -> torch.Tensor:
        return (out[:, 0] > 0).long() if self.loss_name == "bce" else out.argmax(1)

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "bce":
            p1 = torch.sigmoid(out[:, 0])
            return torch.stack([1 - p1, p1], 1)
        if self.loss_name == "mse" and self.mse_output == "raw":
            # Raw outputs are no distribution: clip to >= 0 and normalise; an all-negative row is uniform.
            p = out.clamp_min(0)
            p = torch.where(p.sum(1, keepdim=True) > 0, p, torch.ones_like(p))
            return p / p.sum(1, keepdim=True)
        return F.softmax(out.float(), 1)

    def log_probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """log p(class | x), from the logits where there are logits: log(softmax) in float32 rounds a
        confident mistake's probability to 0, which would cap its NLL."""
        if self.loss_name == "bce":
            return torch.stack([F.logsigmoid(-out[:, 0]), F.logsigmoid(out[:, 0])], 1)
        if self.loss_name == "mse" and self.mse_output == "raw":
            return torch.log(self.probabilities(out).clamp_min(1e-12))  # no logits: a clipped distribution
        return F.log_softmax(out.float(), 1)

    def predictive(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and spread (variance or Laplace scale) of the predictive distribution, in target units."""
        d = self.n_outputs
        if self.loss_name in PROBABILISTIC:
            return out[:, :d], out[:, d:]
        return out[:, :d], self.head.spread.expand_as(out[:, :d])

    def mean_and_std(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, spread = self.predictive(out)
        return mean, spread.sqrt() if self.family == "gaussian" else spread * math.sqrt(2)

    @torch.no_grad()
    def calibrate(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """Refit a point regressor's constant spread: the maximum-likelihood value on these residuals."""
        if not isinstance(self.head, PointHead):
            return
        err = out.float()[:, :self.n_outputs] - y.reshape(len(y), -1).float()
        fit = err.pow(2).mean(0) if self.family == "gaussian" else err.abs().mean(0)
        self.head.spread.copy_(fit.clamp_min(1e-12))

    # --- metrics: whole-split tensors in, python floats out -----------------------------
    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        out = out.float()
        m = {"loss": self.loss(out, y)}
        if self.task == "classification":
            p = self.probabilities(out)
            m["acc"] = (self.predicted_class(out) == y).float().mean()
            m["nll"] = F.nll_loss(self.log_probabilities(out), y)
            m["ece"] = expected_calibration_error(p, y)
        else:
            y = y.reshape(len(y), -1).float()
            mean, spread = self.predictive(out)
            err = mean - y
            m["rmse"] = err.pow(2).mean().sqrt()
            m["mae"] = err.abs().mean()
            m["r2"] = 1 - err.pow(2).sum(0).div((y - y.mean(0)).pow(2).sum(0).clamp_min(1e-12)).mean()
            m["nll"] = elementwise_nll(self.family, mean, y, spread).sum(1).mean()  # per example
            half = Z975 * spread.sqrt() if self.family == "gaussian" else LN20 * spread
            m["coverage95"] = (err.abs() <= half).float().mean()
        # One device->host transfer for all metrics.
        names = list(m)
        values = torch.stack([m[k].detach().float() for k in names]).tolist()
        return dict(zip(names, values))


def expected_calibration_error(p: torch.Tensor, y: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    conf, pred = p.max(1)
    correct = (pred == y).float()
    # Non-finite outputs (a diverged model) give a NaN ECE, not an out-of-range bin index.
    idx = (conf.nan_to_num(0.0) * bins).long().clamp(0, bins - 1)
    gap = torch.zeros(bins, device=p.device).index_add_(0, idx, correct - conf)
    return gap.abs().sum() / max(len(conf), 1)


def build_task(loss_cfg, meta: dict, y_mean: torch.Tensor, y_std: torch.Tensor) -> Task:
    """Check that the loss fits the dataset's task and build the matching head."""
    task, k = meta["task"], meta["n_outputs"]
    problem = loss_misfit(loss_cfg.name, meta["name"], task, k if task == "classification" else None)
    if problem:
        raise ConfigError(problem)
    if task == "classification":
        head, width = nn.Identity(), (1 if loss_cfg.name == "bce" else k)
    elif loss_cfg.name in PROBABILISTIC:
        head = ScaleHead(y_mean, y_std, loss_cfg.name, loss_cfg.variance, loss_cfg.min_variance)
        width = 2 * k
    else:
        head, width = PointHead(y_mean, y_std, family_of(loss_cfg.name)), k
    return Task(loss_cfg.name, task, k, head, width, loss_cfg.label_smoothing, loss_cfg.output,
                loss_cfg.huber_delta)


def monitor_of(task: Task, monitor: str, mode: str) -> tuple[str, str]:
    """Resolve ``trainer.monitor``/``trainer.mode`` ('auto' = per task) to a metric and a direction."""
    name = task.default_monitor if monitor == "auto" else monitor.removeprefix("val/")
    valid = [m for m in task.metric_names if m not in NOT_MONITORABLE]
    if name not in valid:
        raise ConfigError(f"trainer.monitor: {name!r} is not a metric this task can select on; "
                          f"valid choices: auto, {', '.join(valid)}")
    if mode == "auto":
        mode = "max" if name in MAXIMISE else "min"
    return name, mode

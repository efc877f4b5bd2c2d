"""One class per loss: the negative log-likelihood it minimises and everything that follows from it.

A :class:`Likelihood` owns its head (width and transform to prediction units), its loss, and its
predictions: class probabilities for classification; for regression the predictive distribution
(mean and spread), its per-example NLL and its central 95% interval, and for point regressors the
refit of their constant spread.  :class:`mlptrain.losses.Task` computes the metrics from these, the
same way for every loss.  Which class implements which ``loss=`` is ``mlptrain.registry.LOSSES``.

Regression noise models (:class:`NoiseModel`) are shared: ``mse`` and ``huber`` are Gaussians with a
fitted constant variance, ``gaussian_nll`` a Gaussian with a learned one, and so on.  The spread is
the model's natural second parameter: a Gaussian's variance, a Laplace's scale b, a Poisson's
variance (its rate).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Laplace, Normal

from mlptrain.losses.heads import LogRateHead, PointHead, ScaleHead
from mlptrain.registry import LOSSES

Z975 = NormalDist().inv_cdf(0.975)  # Gaussian central 95% interval: mean +- 1.96 sigma
LN20 = math.log(20.0)  # Laplace central 95% interval: mean +- b ln 20, since P(|y - mu| > t) = exp(-t/b)


# ----------------------------------------------------------------------------- noise models
class NoiseModel:
    """A regression noise model: -log p(y), the central 95% interval, and the spread <-> std maps."""

    name: str

    def nll(self, mean: torch.Tensor, y: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        """-log p(y) per element."""
        raise NotImplementedError

    def covered95(self, mean: torch.Tensor, y: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        """Per element: is y inside the central 95% interval of the predictive distribution?"""
        raise NotImplementedError

    def std(self, spread: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def spread_of_std(self, std: torch.Tensor) -> torch.Tensor:
        """The spread of this model with standard deviation ``std``."""
        raise NotImplementedError

    def fit(self, err: torch.Tensor) -> torch.Tensor:
        """The maximum-likelihood constant spread per output, given residuals ``err`` (rows x outputs)."""
        raise NotImplementedError


# torch.distributions with validate_args=False rather than F.gaussian_nll_loss, whose check for
# negative variances is a host-device sync on every step; the heads already keep spreads positive.
class Gaussian(NoiseModel):
    name = "gaussian"  # spread = variance

    def nll(self, mean, y, spread):
        return -Normal(mean, spread.sqrt(), validate_args=False).log_prob(y)

    def covered95(self, mean, y, spread):
        return (y - mean).abs() <= Z975 * spread.sqrt()

    def std(self, spread):
        return spread.sqrt()

    def spread_of_std(self, std):
        return std**2

    def fit(self, err):
        return err.pow(2).mean(0)


class LaplaceNoise(NoiseModel):
    name = "laplace"  # spread = scale b

    def nll(self, mean, y, spread):
        return -Laplace(mean, spread, validate_args=False).log_prob(y)

    def covered95(self, mean, y, spread):
        return (y - mean).abs() <= LN20 * spread

    def std(self, spread):
        return spread * math.sqrt(2)

    def spread_of_std(self, std):
        return std / math.sqrt(2)

    def fit(self, err):
        return err.abs().mean(0)


class Poisson(NoiseModel):
    """Counts: mean = variance = the rate.  The spread is the rate itself."""

    name = "poisson"

    def nll(self, mean, y, spread):
        # The exact -log p(y) = rate - y log(rate) + log(y!), log(y!) included (lgamma), so it is on the
        # scale of every other nll metric. xlogy: a count of 0 adds 0 even where the rate underflows.
        return mean - torch.xlogy(y, mean) + torch.lgamma(y + 1)

    def covered95(self, mean, y, spread):
        # The central 95% interval [q(0.025), q(0.975)] of Poisson(rate), with q(p) the smallest count
        # whose CDF F reaches p. For a count y: y >= q(0.025) iff F(y) >= 0.025, and y <= q(0.975) iff
        # F(y - 1) < 0.975; F(k) = Q(k + 1, rate), the regularised upper incomplete gamma. A discrete
        # interval holds at least 95% (more at small rates: Poisson(0.5) gives [0, 2], 98.6%), so a
        # calibrated model covers >= 0.95 of its targets, not exactly 0.95.
        cdf = lambda k: torch.where(k >= 0, torch.special.gammaincc((k + 1).clamp_min(1e-12), mean), 0.0)
        return (cdf(y) >= 0.025) & (cdf(y - 1) < 0.975)

    def std(self, spread):
        return spread.sqrt()

    def spread_of_std(self, std):
        return std**2


GAUSSIAN, LAPLACE, POISSON = Gaussian(), LaplaceNoise(), Poisson()
FAMILIES = {m.name: m for m in (GAUSSIAN, LAPLACE, POISSON)}


def elementwise_nll(family: str, mean: torch.Tensor, y: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """-log p(y) per element under the noise model ``family`` (gaussian: spread = variance; laplace:
    spread = scale b; poisson: mean = spread = rate)."""
    return FAMILIES[family].nll(mean, y, spread)


# ----------------------------------------------------------------------------- the base class
class Likelihood:
    """One ``loss=``: built from its LossConfig and the number of classes / target dimensions."""

    task: str  # classification | regression
    family: str = "gaussian"  # the regression noise model (classification losses: unused)
    # loss.class_weight resolved to one weight per class (cross_entropy, nll, bce), or None: unweighted
    class_weight: torch.Tensor | None = None

    def __init__(self, cfg, n_outputs: int):
        self.cfg, self.name, self.n_outputs = cfg, cfg.name, n_outputs

    def head(self, y_mean: torch.Tensor, y_std: torch.Tensor) -> tuple[nn.Module, int]:
        """The head module and the width of the body's last layer that feeds it."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss, a mean over the batch. Weighted (per-row weights ``w`` from dataset.weight,
        times the weight of the row's class from loss.class_weight): sum(w_i l_i) / sum(w_i), torch's
        convention for ``F.cross_entropy(weight=...)``, so the loss keeps the scale of the plain mean."""
        if self.class_weight is not None:
            if self.class_weight.device != y.device:  # moved once, on the first batch
                self.class_weight = self.class_weight.to(y.device)
            cw = self.class_weight[y]
            w = cw if w is None else w * cw
        if w is None:
            return self.mean_loss(out, y)
        return (self.per_row(out, y) * w).sum() / w.sum().clamp_min(1e-12)

    def mean_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The unweighted loss, a mean over the batch."""
        raise NotImplementedError

    def per_row(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of each row (its mean over the rows is ``mean_loss``)."""
        raise NotImplementedError

    def target_problem(self, y: torch.Tensor) -> str | None:
        """None if this likelihood can score these targets, else the offending value, in a few words."""
        return None

    def calibrate(self, head: nn.Module, out: torch.Tensor, y: torch.Tensor) -> None:
        """Refit what the model does not learn from the loss (a point regressor's spread); default: nothing."""


# ----------------------------------------------------------------------------- classification
class CrossEntropy(Likelihood):
    """Categorical(softmax(z)): -log softmax(z)[y]."""

    task = "classification"

    def head(self, y_mean, y_std):
        return nn.Identity(), self.n_outputs

    def mean_loss(self, out, y):
        return F.cross_entropy(out, y, label_smoothing=self.cfg.label_smoothing)

    def per_row(self, out, y):
        return F.cross_entropy(out, y, label_smoothing=self.cfg.label_smoothing, reduction="none")

    def predicted_class(self, out: torch.Tensor) -> torch.Tensor:
        return out.argmax(1)

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        return F.softmax(out.float(), 1)

    def log_probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """log p(class | x), from the logits where there are logits: log(softmax) in float32 rounds a
        confident mistake's probability to 0, which would cap its NLL."""
        return F.log_softmax(out.float(), 1)


class NLL(CrossEntropy):
    """The same Categorical written out: log_softmax, then the negative log-likelihood."""

    def mean_loss(self, out, y):
        return F.nll_loss(F.log_softmax(out, 1), y)

    def per_row(self, out, y):
        return F.nll_loss(F.log_softmax(out, 1), y, reduction="none")


class Brier(CrossEntropy):
    """mse on classes: squared error to the one-hot target, summed over classes (the Brier score)."""

    def mean_loss(self, out, y):
        return self.per_row(out, y).mean()

    def per_row(self, out, y):
        p = F.softmax(out, 1) if self.cfg.output == "softmax" else out
        return (p - F.one_hot(y, self.n_outputs).to(p.dtype)).pow(2).sum(1)

    def probabilities(self, out):
        if self.cfg.output == "raw":
            # Raw outputs are no distribution: clip to >= 0 and normalise; an all-negative row is uniform.
            p = out.clamp_min(0)
            p = torch.where(p.sum(1, keepdim=True) > 0, p, torch.ones_like(p))
            return p / p.sum(1, keepdim=True)
        return super().probabilities(out)

    def log_probabilities(self, out):
        if self.cfg.output == "raw":
            return torch.log(self.probabilities(out).clamp_min(1e-12))  # no logits: a clipped distribution
        return super().log_probabilities(out)


class BCE(CrossEntropy):
    """Bernoulli(sigmoid(z)) on one logit: binary cross-entropy."""

    def head(self, y_mean, y_std):
        return nn.Identity(), 1

    # loss.class_weight: per-class weights [w_0, w_1] as for cross_entropy (torch's pos_weight is w_1 / w_0
    # up to the scale of the loss), so balanced means the same for all three classification losses.
    def mean_loss(self, out, y):
        return F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype))

    def per_row(self, out, y):
        return F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype), reduction="none")

    def predicted_class(self, out):
        return (out[:, 0] > 0).long()

    def probabilities(self, out):
        p1 = torch.sigmoid(out[:, 0])
        return torch.stack([1 - p1, p1], 1)

    def log_probabilities(self, out):
        return torch.stack([F.logsigmoid(-out[:, 0]), F.logsigmoid(out[:, 0])], 1)


# ----------------------------------------------------------------------------- regression
def _columns(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return y.reshape(len(y), -1).to(like.dtype)


class Regression(Likelihood):
    """A predictive distribution per input: mean and spread in target units, scored by its noise model."""

    task = "regression"

    @property
    def noise(self) -> NoiseModel:
        return FAMILIES[self.family]

    def predictive(self, out: torch.Tensor, head: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and spread of the predictive distribution, in target units."""
        raise NotImplementedError

    def nll(self, mean: torch.Tensor, y: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        return self.noise.nll(mean, y, spread)

    def covered95(self, mean: torch.Tensor, y: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        return self.noise.covered95(mean, y, spread)

    def std(self, spread: torch.Tensor) -> torch.Tensor:
        return self.noise.std(spread)


class PointRegressor(Regression):
    """A mean only; the spread is a constant per output, the MLE on the validation residuals."""

    def head(self, y_mean, y_std):
        y_std = y_std.float().reshape(-1)
        return PointHead(y_mean, y_std, self.family, self.noise.spread_of_std(y_std)), self.n_outputs

    def predictive(self, out, head):
        d = self.n_outputs
        return out[:, :d], head.spread.expand_as(out[:, :d])

    @torch.no_grad()
    def calibrate(self, head, out, y):
        """Refit the constant spread: the maximum-likelihood value on these residuals."""
        err = out.float()[:, : self.n_outputs] - y.reshape(len(y), -1).float()
        head.spread.copy_(self.noise.fit(err).clamp_min(1e-12))


class MSE(PointRegressor):
    """Gaussian with a fixed sigma: squared error."""

    def mean_loss(self, out, y):
        return F.mse_loss(out, _columns(y, out))

    def per_row(self, out, y):
        return F.mse_loss(out, _columns(y, out), reduction="none").mean(1)


class L1(PointRegressor):
    """Laplace with a fixed scale: absolute error (the median regressor)."""

    family = "laplace"

    def mean_loss(self, out, y):
        return F.l1_loss(out, _columns(y, out))

    def per_row(self, out, y):
        return F.l1_loss(out, _columns(y, out), reduction="none").mean(1)


class Huber(PointRegressor):
    """Gaussian core, Laplace tails: quadratic within huber_delta, linear beyond; scored as a Gaussian."""

    def mean_loss(self, out, y):
        return F.huber_loss(out, _columns(y, out), delta=self.cfg.huber_delta)

    def per_row(self, out, y):
        return F.huber_loss(out, _columns(y, out), delta=self.cfg.huber_delta, reduction="none").mean(1)


class LearnedSpread(Regression):
    """Mean and spread per input: the head doubles (``[mean_1..mean_d, spread_1..spread_d]``)."""

    power = 2  # how the spread scales with the target's units

    def head(self, y_mean, y_std):
        return ScaleHead(
            y_mean, y_std, self.name, self.cfg.variance, self.cfg.min_variance, self.power
        ), 2 * self.n_outputs

    def predictive(self, out, head):
        d = self.n_outputs
        return out[:, :d], out[:, d:]

    def mean_loss(self, out, y):
        # Per-example NLL (summed over outputs), so the loss is exactly the nll metric.
        return self.per_row(out, y).mean()

    def per_row(self, out, y):
        mean, spread = self.predictive(out, None)
        return self.nll(mean, _columns(y, out), spread).sum(1)


class GaussianNLL(LearnedSpread):
    """Heteroscedastic Gaussian: learned variance sigma^2(x)."""


class LaplaceNLL(LearnedSpread):
    """Laplace with a learned scale b(x)."""

    family, power = "laplace", 1


class PoissonNLL(Regression):
    """Poisson(rate(x)) for counts, log link: the network outputs log rate(x), one column per target.

    The loss is ``F.poisson_nll_loss(log_input=True, full=False)``: rate - y log(rate) per element,
    summed over outputs and averaged over the batch. It omits the constant log(y!), which moves no
    gradient; torch's ``full=True`` would add Stirling's approximation of it (only for y > 1), not
    the exact term. The nll metric adds the exact log(y!) = lgamma(y + 1), so it is the true
    -log p(y) per example and compares with any other loss's nll: loss = nll - mean log(y!).
    """

    family = "poisson"

    def head(self, y_mean, y_std):
        return LogRateHead(y_mean), self.n_outputs

    def mean_loss(self, out, y):
        return F.poisson_nll_loss(out, _columns(y, out), log_input=True, full=False, reduction="sum") / len(y)

    def per_row(self, out, y):
        return F.poisson_nll_loss(out, _columns(y, out), log_input=True, full=False, reduction="none").sum(1)

    def predictive(self, out, head):
        rate = out[:, : self.n_outputs].exp()
        return rate, rate  # a Poisson's variance is its mean

    def target_problem(self, y):
        y = y.float()
        bad = y < 0
        if bad.any():
            return f"{y[bad].min().item():g} (negative)"
        bad = ~torch.isfinite(y) | (y != y.round())
        if bad.any():
            return f"{y[bad][0].item():g} (not a whole number)"
        return None


def family_of(loss: str, task: str = "regression") -> str:
    """The regression noise model a loss is the likelihood of: gaussian | laplace | poisson."""
    return LOSSES[loss].implementation(task).family

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
poisson_nll    regression (counts)   Poisson(exp(z)), log link         d
=============  ====================  ================================  ===========

Every regression model is scored as a predictive distribution.  The
probabilistic losses predict their spread per input (poisson_nll: the rate is
both mean and variance); a point regressor (mse, l1, huber) gets a constant
spread, the maximum-likelihood fit to the validation residuals (Gaussian
variance ``mean(r^2)``; Laplace scale ``mean(|r|)`` for l1), kept in the head
so a checkpoint carries it.  That makes NLL and interval coverage comparable
across all regression losses.

Layout: ``registry.LOSSES`` (torch-free) names each loss's tasks, keys and
class; :mod:`.likelihoods` holds one class per loss; :mod:`.heads` the heads;
:mod:`.task` the :class:`Task`, its metrics, :func:`build_task` and
:func:`monitor_of`.  Adding a loss is a YAML file, one ``LOSSES`` line and one
class.
"""

from mlptrain.losses.heads import AffineHead, LogRateHead, PointHead, ScaleHead
from mlptrain.losses.likelihoods import LN20, Z975, Likelihood, elementwise_nll, family_of
from mlptrain.losses.task import Task, build_task, expected_calibration_error, monitor_of
from mlptrain.registry import DEFAULT_MONITOR, MAXIMISE, METRICS, NOT_MONITORABLE, PROBABILISTIC

__all__ = [
    "AffineHead",
    "DEFAULT_MONITOR",
    "LN20",
    "Likelihood",
    "LogRateHead",
    "MAXIMISE",
    "METRICS",
    "NOT_MONITORABLE",
    "PROBABILISTIC",
    "PointHead",
    "ScaleHead",
    "Task",
    "Z975",
    "build_task",
    "elementwise_nll",
    "expected_calibration_error",
    "family_of",
    "monitor_of",
]

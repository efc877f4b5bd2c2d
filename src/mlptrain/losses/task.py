"""The Task: a likelihood with its head, the metrics it reports and the metric it selects on.

Nothing here knows a loss by name: what differs between losses is their
:class:`~mlptrain.losses.likelihoods.Likelihood` class (``registry.LOSSES[name].impl``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mlptrain.errors import ConfigError
from mlptrain.losses.likelihoods import Likelihood
from mlptrain.registry import (
    AUTO_LOSS,
    DEFAULT_MONITOR,
    LOSSES,
    MAXIMISE,
    METRICS,
    NOT_MONITORABLE,
    loss_misfit,
    target_misfit,
)


@dataclass
class Task:
    likelihood: Likelihood
    head: nn.Module
    head_width: int

    @property
    def loss_name(self) -> str:
        return self.likelihood.name

    @property
    def task(self) -> str:
        """classification | regression"""
        return self.likelihood.task

    @property
    def n_outputs(self) -> int:
        return self.likelihood.n_outputs

    @property
    def kind(self) -> str:
        """classification | regression | probabilistic: picks the default monitor."""
        return LOSSES[self.loss_name].kind(self.task)

    @property
    def family(self) -> str:
        """The regression noise model: gaussian | laplace | poisson."""
        return self.likelihood.family

    @property
    def default_monitor(self) -> str:
        return DEFAULT_MONITOR[self.kind]

    @property
    def metric_names(self) -> tuple[str, ...]:
        return METRICS[self.kind]

    # --- the loss: mean over the batch -------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.likelihood.loss(out, y)

    # --- predictions ---------------------------------------------------------------------
    def predicted_class(self, out: torch.Tensor) -> torch.Tensor:
        return self.likelihood.predicted_class(out)

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        return self.likelihood.probabilities(out)

    def log_probabilities(self, out: torch.Tensor) -> torch.Tensor:
        return self.likelihood.log_probabilities(out)

    def predictive(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and spread (variance, Laplace scale, Poisson rate) of the predictive distribution, in
        target units."""
        return self.likelihood.predictive(out, self.head)

    def mean_and_std(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, spread = self.predictive(out)
        return mean, self.likelihood.std(spread)

    @torch.no_grad()
    def calibrate(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """Refit a point regressor's constant spread: the maximum-likelihood value on these residuals."""
        self.likelihood.calibrate(self.head, out, y)

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
            m["nll"] = self.likelihood.nll(mean, y, spread).sum(1).mean()  # per example
            m["coverage95"] = self.likelihood.covered95(mean, y, spread).float().mean()
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


def build_task(
    loss_cfg, meta: dict, y_mean: torch.Tensor, y_std: torch.Tensor, targets: Sequence[torch.Tensor] = ()
) -> Task:
    """Check that the loss fits the dataset's task and build the matching head.

    ``targets`` (the splits' targets, when the data is at hand) are checked against what the loss can
    score, e.g. counts for poisson_nll: one pass over them, before any training.  A checkpoint is
    rebuilt without them.
    """
    task, k = meta["task"], meta["n_outputs"]
    if loss_cfg.name == "auto":  # the loss follows the task; its keys are checked against the loss chosen
        loss_cfg = dataclasses.replace(loss_cfg, name=AUTO_LOSS[task])
    problem = loss_misfit(loss_cfg.name, meta["name"], task, k if task == "classification" else None)
    if problem:
        raise ConfigError(problem)
    spec = LOSSES[loss_cfg.name]
    likelihood = spec.implementation(task)(loss_cfg, k)
    for y in targets:
        found = likelihood.target_problem(y)
        if found:
            raise ConfigError(target_misfit(loss_cfg.name, _target_key(meta), found))
    head, width = likelihood.head(y_mean, y_std)
    return Task(likelihood, head, width)


def _target_key(meta: dict) -> str:
    """Where the targets come from, as the user names it: a table's target column, or the dataset."""
    column = (meta.get("preprocess") or {}).get("target")
    return f"dataset.target {column!r}" if column else f"dataset={meta['name']}"


def monitor_of(task: Task, monitor: str, mode: str) -> tuple[str, str]:
    """Resolve ``trainer.monitor``/``trainer.mode`` ('auto' = per task) to a metric and a direction."""
    name = task.default_monitor if monitor == "auto" else monitor.removeprefix("val/")
    valid = [m for m in task.metric_names if m not in NOT_MONITORABLE]
    if name not in valid:
        raise ConfigError(
            f"trainer.monitor: {name!r} is not a metric this task can select on; "
            f"valid choices: auto, {', '.join(valid)}"
        )
    if mode == "auto":
        mode = "max" if name in MAXIMISE else "min"
    return name, mode

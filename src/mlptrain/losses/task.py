"""The Task: a likelihood with its head, the metrics it reports and the metric it selects on.

Nothing here knows a loss by name: what differs between losses is their
:class:`~mlptrain.losses.likelihoods.Likelihood` class (``registry.LOSSES[name].impl``).
"""

from __future__ import annotations

import dataclasses
import logging
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

log = logging.getLogger("mlptrain")


@dataclass
class Task:
    likelihood: Likelihood
    head: nn.Module
    head_width: int
    # (metric, split) pairs already logged as undefined: a split that lacks a class says so once, not per epoch
    _noted: set = dataclasses.field(default_factory=set, repr=False)

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
    def loss(self, out: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """``w``: per-row weights (dataset.weight) or None; loss.class_weight is applied in any case."""
        return self.likelihood.loss(out, y, w)

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
    def metrics(self, out: torch.Tensor, y: torch.Tensor, split: str = "") -> dict[str, float]:
        """Every metric of ``metric_names`` that is defined on these rows (``split``: their name, for the
        one log line that says why a metric is left out, e.g. roc_auc when a class has no rows)."""
        out = out.float()
        m = {"loss": self.loss(out, y)}
        if self.task == "classification":
            p = self.probabilities(out)
            pred = self.predicted_class(out)
            m["acc"] = (pred == y).float().mean()
            m["nll"] = F.nll_loss(self.log_probabilities(out), y)
            m["ece"] = expected_calibration_error(p, y)
            m.update(macro_scores(pred, y, p.shape[1]))
            if self._defined("roc_auc", y, split):
                m["roc_auc"] = roc_auc(p, y)
        else:
            y = y.reshape(len(y), -1).float()
            mean, spread = self.predictive(out)
            err = mean - y
            m["rmse"] = err.pow(2).mean().sqrt()
            m["mae"] = err.abs().mean()
            m["r2"] = 1 - err.pow(2).sum(0).div((y - y.mean(0)).pow(2).sum(0).clamp_min(1e-12)).mean()
            m["nll"] = self.likelihood.nll(mean, y, spread).sum(1).mean()  # per example
            m["coverage95"] = self.likelihood.covered95(mean, y, spread).float().mean()
            if self._defined("mape", y, split):
                m["mape"] = (err.abs() / y).mean()
        # One device->host transfer for all metrics.
        names = list(m)
        values = torch.stack([m[k].detach().float() for k in names]).tolist()
        return dict(zip(names, values))

    def _defined(self, metric: str, y: torch.Tensor, split: str) -> bool:
        """Whether ``metric`` is defined on targets ``y``; where not, the reason is logged once per split."""
        reason = undefined_reason(metric, y, self.n_outputs if self.task == "classification" else None)
        if reason is None:
            return True
        if (metric, split) not in self._noted:
            self._noted.add((metric, split))
            where = f"{split} split" if split else "these rows"
            log.info("%s not reported on the %s: %s", metric, where, reason)
        return False


def undefined_reason(metric: str, y: torch.Tensor, n_classes: int | None) -> str | None:
    """Why ``metric`` is undefined on targets ``y`` (None: it is defined). ROC-AUC ranks each class's rows
    against the others', so every class needs a row; MAPE divides by the target, so it must be > 0."""
    if metric == "roc_auc" and n_classes:
        counts = torch.bincount(y.reshape(-1).long(), minlength=n_classes)
        absent = (counts == 0).nonzero().flatten().tolist()
        if absent:
            return f"undefined, class {absent[0]} has no rows (ROC-AUC needs every class present)"
    if metric == "mape" and n_classes is None and not bool((y > 0).all()):
        return f"the target is not positive everywhere (min {y.min().item():g}); MAPE needs targets > 0"
    return None


def expected_calibration_error(p: torch.Tensor, y: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    conf, pred = p.max(1)
    correct = (pred == y).float()
    # Non-finite outputs (a diverged model) give a NaN ECE, not an out-of-range bin index.
    idx = (conf.nan_to_num(0.0) * bins).long().clamp(0, bins - 1)
    gap = torch.zeros(bins, device=p.device).index_add_(0, idx, correct - conf)
    return gap.abs().sum() / max(len(conf), 1)


def macro_scores(pred: torch.Tensor, y: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Balanced accuracy and macro precision, recall and F1 from the confusion matrix, as scikit-learn
    defines them: balanced accuracy is the mean recall over the classes that have rows; the macro
    averages run over the classes that occur among the targets or predictions, a ratio with a zero
    denominator counting 0 (scikit-learn's zero_division default)."""
    cm = torch.bincount(y.long() * k + pred.long(), minlength=k * k).reshape(k, k).float()
    tp, support, predicted = cm.diagonal(), cm.sum(1), cm.sum(0)
    ratio = lambda a, b: torch.where(b > 0, a / b.clamp_min(1), torch.zeros_like(a))  # noqa: E731
    occurs = (support + predicted > 0).float()
    n = occurs.sum().clamp_min(1)
    has_rows = (support > 0).float()
    return {
        "balanced_acc": (ratio(tp, support) * has_rows).sum() / has_rows.sum().clamp_min(1),
        "f1": (ratio(2 * tp, support + predicted) * occurs).sum() / n,
        "precision": (ratio(tp, predicted) * occurs).sum() / n,
        "recall": (ratio(tp, support) * occurs).sum() / n,
    }


def roc_auc(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ROC-AUC: binary, of the positive class's probability; more classes, the macro mean of one-vs-rest
    AUCs. Each AUC is the Mann-Whitney statistic, tied scores sharing their mean rank (as
    scikit-learn's roc_auc_score); every class must have rows (see :func:`undefined_reason`); NaN
    scores (a diverged model) give NaN.

    Only the positives are ranked: a row is the positive of its own class's column, so each column is
    sorted once and its positives are found in it by binary search; the mean rank of a tie run is
    (rows below + rows at or below + 1) / 2, summed as integers (exact)."""
    k = p.shape[1]
    y = y.long()
    p = p.detach() if p.dtype in (torch.float32, torch.float64) else p.detach().float()  # exact: the same ties
    if k == 2:
        scores = p[:, 1:]
        positives = [scores[y == 1, 0]]
    else:
        scores = p
        by_class = y.argsort(stable=True)  # each row's score in its own class's column, class by class
        positives = scores[by_class, y[by_class]].split(torch.bincount(y, minlength=k).tolist())
    if scores.device.type == "cpu":  # numpy's sort: ~15x torch's on CPU (0.6 against 9 ms for MNIST's test split)
        import numpy as np

        columns = np.sort(scores.T.numpy(), axis=1)
        keys = (np.sort(v.numpy()) for v in positives)  # sorted keys: each search starts where the last ended
        below = [
            int(np.searchsorted(c, v, "left").sum() + np.searchsorted(c, v, "right").sum())
            for c, v in zip(columns, keys)
        ]
        twice = torch.tensor(below, device=p.device)
    else:
        columns = scores.T.contiguous().sort(1).values
        below = [
            torch.searchsorted(c, v).sum() + torch.searchsorted(c, v, right=True).sum()
            for c, v in zip(columns, positives)
        ]
        twice = torch.stack(below)
    # twice: per column, twice its positives' rank sum less their count (ranks from 1)
    n_pos = torch.tensor([len(v) for v in positives], dtype=torch.float64, device=p.device)
    n_neg = len(scores) - n_pos
    auc = ((twice.double() + n_pos) / 2 - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    if torch.isnan(scores).any():
        auc = torch.full_like(auc, float("nan"))
    return auc.mean().float()


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
    if loss_cfg.class_weight is not None:
        likelihood.class_weight = class_weights(loss_cfg.class_weight, meta, targets[0] if targets else None)
        meta["class_weight"] = likelihood.class_weight.tolist()  # a checkpoint rebuilds the same loss from it
    for y in targets:
        found = likelihood.target_problem(y)
        if found:
            raise ConfigError(target_misfit(loss_cfg.name, _target_key(meta), found))
    head, width = likelihood.head(y_mean, y_std)
    return Task(likelihood, head, width)


def class_weights(spec: str | list, meta: dict, y_train: torch.Tensor | None) -> torch.Tensor:
    """``loss.class_weight`` as one weight per class. balanced: n_rows / (n_classes * rows of the class) on
    the training split, as scikit-learn's ``compute_class_weight("balanced")``; without the data (a
    checkpoint being rebuilt), the weights it recorded in its data description."""
    names = meta.get("class_names") or [str(c) for c in range(meta["n_outputs"])]
    k = len(names)
    if spec != "balanced":
        if len(spec) != k:
            raise ConfigError(
                f"loss.class_weight: {len(spec)} weights given, expected {k} (one per class, in the order "
                f"{', '.join(map(str, names[:10]))}{', ...' if k > 10 else ''}), or balanced"
            )
        return torch.tensor(spec, dtype=torch.float32)
    if y_train is None:
        if "class_weight" not in meta:
            raise ConfigError("loss.class_weight=balanced: the checkpoint does not record its class weights")
        return torch.tensor(meta["class_weight"], dtype=torch.float32)
    counts = torch.bincount(y_train.long(), minlength=k)
    if (counts == 0).any():
        absent = names[int((counts == 0).nonzero()[0])]
        raise ConfigError(
            f"loss.class_weight=balanced: class {absent!r} has no rows in the training split; "
            f"give explicit weights (a list of {k})"
        )
    return (len(y_train) / (k * counts.double())).float()


def _target_key(meta: dict) -> str:
    """Where the targets come from, as the user names it: a table's target column, or the dataset."""
    column = (meta.get("preprocess") or {}).get("target")
    return f"dataset.target {column!r}" if column else f"dataset={meta['name']}"


def monitor_of(task: Task, monitor: str, mode: str, y_val: torch.Tensor | None = None) -> tuple[str, str]:
    """Resolve ``trainer.monitor``/``trainer.mode`` ('auto' = per task) to a metric and a direction;
    ``y_val`` (the validation targets): a metric undefined on them (roc_auc, mape) is refused as the monitor."""
    name = task.default_monitor if monitor == "auto" else monitor.removeprefix("val/")
    valid = [m for m in task.metric_names if m not in NOT_MONITORABLE]
    if name not in valid:
        raise ConfigError(
            f"trainer.monitor: {name!r} is not a metric this task can select on; "
            f"valid choices: auto, {', '.join(valid)}"
        )
    if y_val is not None:
        k = task.n_outputs if task.task == "classification" else None
        y = y_val if k else y_val.reshape(len(y_val), -1)
        reason = undefined_reason(name, y, k)
        if reason:
            raise ConfigError(f"trainer.monitor: val/{name} cannot select on this validation split: {reason}")
    if mode == "auto":
        mode = "max" if name in MAXIMISE else "min"
    return name, mode

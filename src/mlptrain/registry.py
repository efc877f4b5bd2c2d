"""Torch-free registries of mlptrain's extension points: what each option is, fits and is implemented by.

Each section is one table keyed by the option's name (the ``name:`` of its YAML file).  An
implementation is named by a ``"module:attr"`` string and imported on first use, so this module and
everything that only validates (``config.parse``, ``mlptrain --help``) never imports torch; that is
enforced by tests/test_startup.py.  Nothing here may import torch, directly or through another
mlptrain module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Mapping, Optional, Union


def load(ref: str):
    """The object named by ``"package.module:attr"`` (the module is imported now, not before)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# --- losses ----------------------------------------------------------------------------------------
# Adding a loss: configs/loss/<name>.yaml, one LOSSES line below, one Likelihood class in
# mlptrain/losses/likelihoods.py (docs/losses.md says which distribution it is the NLL of).


@dataclass(frozen=True)
class LossSpec:
    """One loss: the tasks it fits, the ``loss.*`` keys it reads, and the class that implements it."""

    # "classification", "regression", or "binary" (classification with exactly two classes).
    tasks: tuple[str, ...]
    # A mlptrain.losses.likelihoods class, per task when one name covers two (mse: Brier on classes,
    # a Gaussian on real targets); a plain string serves every task of the loss.
    impl: Union[str, Mapping[str, str]]
    # The LossConfig keys this loss reads; any other key set away from its default is refused.
    params: tuple[str, ...] = ()
    # Predicts its own spread per input (a predictive distribution): ranked by nll by default.
    probabilistic: bool = False
    # "counts": the targets must be integers >= 0 (checked against the targets once the data is loaded,
    # since only then are they known; see losses.build_task).
    targets: str = "real"

    def implementation(self, task: str) -> type:
        """The Likelihood class for ``task`` (classification | regression), imported on first use."""
        return load(self.impl if isinstance(self.impl, str) else self.impl[task])

    def kind(self, task: str) -> str:
        """classification | regression | probabilistic: what picks the metric set and default monitor."""
        return "probabilistic" if self.probabilistic else task


_L = "mlptrain.losses.likelihoods:"
LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(("classification",), _L + "CrossEntropy", ("label_smoothing",)),
    "nll": LossSpec(("classification",), _L + "NLL"),
    "mse": LossSpec(("classification", "regression"), {"classification": _L + "Brier", "regression": _L + "MSE"},
                    ("output",)),
    "bce": LossSpec(("binary",), _L + "BCE"),
    "l1": LossSpec(("regression",), _L + "L1"),
    "huber": LossSpec(("regression",), _L + "Huber", ("huber_delta",)),
    "gaussian_nll": LossSpec(("regression",), _L + "GaussianNLL", ("variance", "min_variance"), probabilistic=True),
    "laplace_nll": LossSpec(("regression",), _L + "LaplaceNLL", ("variance", "min_variance"), probabilistic=True),
    "poisson_nll": LossSpec(("regression",), _L + "PoissonNLL", probabilistic=True, targets="counts"),
}
# Loss -> the tasks it fits ("binary": classification with exactly two classes). Torch-free, so a
# misfit is caught by parse(); losses.build_task checks again with the loaded data's true shape.
LOSS_TASKS = {name: spec.tasks for name, spec in LOSSES.items()}
PROBABILISTIC = tuple(name for name, spec in LOSSES.items() if spec.probabilistic)

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


def losses_for(task: str, n_classes: Optional[int] = None) -> list[str]:
    """Losses that fit a task; ``n_classes`` None (not known yet) keeps bce as a candidate."""
    kinds = {task} | ({"binary"} if task == "classification" and n_classes in (2, None) else set())
    return [name for name, fits in LOSS_TASKS.items() if kinds & set(fits)]


def loss_misfit(loss: str, dataset: str, task: str, n_classes: Optional[int] = None) -> Optional[str]:
    """None if ``loss`` fits the dataset's task, else the one-line reason naming the losses that do."""
    fits = losses_for(task, n_classes)
    if loss in fits:
        return None
    what = f"{task}, {n_classes} classes" if n_classes else task
    if n_classes is None and "bce" in fits:
        fits[fits.index("bce")] = "bce (two classes only)"
    return f"loss={loss} does not fit dataset={dataset} ({what}); losses that fit: {', '.join(fits)}"


def loss_param_misuse(loss: str, key: str) -> Optional[str]:
    """None if ``loss.<key>`` is read by ``loss``, else why not (which losses do read it)."""
    if key in LOSSES[loss].params:
        return None
    users = [name for name, spec in LOSSES.items() if key in spec.params]
    return f"only applies to loss={' or '.join(users)}, not loss={loss}"


TARGETS = {"counts": "counts (integers >= 0)"}  # LossSpec.targets other than "real", as the user reads them


def target_misfit(loss: str, where: str, found: str) -> str:
    """The one-line reason ``loss`` cannot take these targets (``found``: an offending value), naming the
    losses that can."""
    other = [name for name in losses_for("regression") if LOSSES[name].targets == "real"]
    return (f"{where}: loss={loss} needs {TARGETS[LOSSES[loss].targets]} as targets, but they include {found}"
            f"; losses for real-valued targets: {', '.join(other)}")

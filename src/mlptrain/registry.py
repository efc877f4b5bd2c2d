"""One table per extension point: every name a config group or key accepts, and what implements it.

An implementation is named as ``"module:attr"`` and imported on first use (:func:`resolve`), so
this module is torch-free and complete: the CLI validates every choice against these tables before
torch is imported, and adding a dataset, loss, scheduler or logger is one line here plus its class
(or function) and its YAML.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from mlptrain.dataset_config import CsvConfig, SyntheticConfig, VisionConfig
from mlptrain.errors import ConfigError


def resolve(ref: str) -> Any:
    """The object a ``"module:attr"`` reference names (the module is imported now, not before)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# ----------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class DatasetSpec:
    schema: type  # the dataclass its config group is merged onto (mlptrain.dataset_config)
    loader: str  # "module:function", called with the typed config: returns a DataBundle
    task: str | None  # classification | regression; None: only the data can tell (a CSV with task=auto)
    # Classes of a classification set, when the config alone decides them: a number, the name of a
    # config key holding it, or None (known once the data is loaded).
    classes: int | str | None = None
    make: str | None = None  # synthetic sets: "module:function" (cfg, generator) -> (x, y)
    cached: bool = False  # torchvision sets: the decoded tensors are cached (mlptrain.data.processed)


def _synthetic(task: str, classes: int | str | None = None) -> Any:
    def spec(name: str) -> DatasetSpec:
        return DatasetSpec(
            SyntheticConfig,
            "mlptrain.data.synthetic:load_synthetic",
            task,
            classes,
            make=f"mlptrain.data.synthetic:{name}",
        )

    return spec


def _vision(name: str) -> DatasetSpec:
    return DatasetSpec(VisionConfig, "mlptrain.data.vision:load_vision", "classification", cached=True)


_DATASETS = {
    "spirals": _synthetic("classification", "n_classes"),
    "moons": _synthetic("classification", 2),
    "circles": _synthetic("classification", 2),
    "xor": _synthetic("classification", 2),
    "blobs": _synthetic("classification", "n_classes"),
    "sine": _synthetic("regression"),
    "friedman1": _synthetic("regression"),
    "heteroscedastic": _synthetic("regression"),
    "counts": _synthetic("regression"),
    "mnist": _vision,
    "fashion_mnist": _vision,
    "kmnist": _vision,
    "cifar10": _vision,
    "csv": lambda name: DatasetSpec(CsvConfig, "mlptrain.data.tabular:load_csv", None),
}
DATASETS: dict[str, DatasetSpec] = {name: make(name) for name, make in _DATASETS.items()}


def datasets(schema: type, task: str | None = None) -> tuple[str, ...]:
    """Names of the datasets with this schema (and task)."""
    return tuple(n for n, s in DATASETS.items() if s.schema is schema and (task is None or s.task == task))


def dataset_task(ds: Any) -> tuple[str, int | None] | None:
    """(task, classes) of a typed dataset config when known without loading it (classes None: unknown)."""
    spec = DATASETS.get(getattr(ds, "name", None))
    if spec is None:
        return None
    task = spec.task or (ds.task if getattr(ds, "task", "auto") != "auto" else None)
    if task is None:
        return None
    classes = getattr(ds, spec.classes) if isinstance(spec.classes, str) else spec.classes
    return task, (classes if task == "classification" else None)


# ----------------------------------------------------------------------------- losses
# Adding a loss: configs/loss/<name>.yaml, one LOSSES line below, one Likelihood class in
# mlptrain/losses/likelihoods.py (docs/losses.md says which distribution it is the NLL of).


@dataclass(frozen=True)
class LossSpec:
    """One loss: the tasks it fits, the ``loss.*`` keys it reads, and the class that implements it."""

    # "classification", "regression", or "binary" (classification with exactly two classes).
    tasks: tuple[str, ...]
    # A mlptrain.losses.likelihoods class, per task when one name covers two (mse: Brier on classes,
    # a Gaussian on real targets); a plain string serves every task of the loss.
    impl: str | Mapping[str, str]
    # The LossConfig keys this loss reads; any other key set away from its default is refused.
    params: tuple[str, ...] = ()
    # Predicts its own spread per input (a predictive distribution): ranked by nll by default.
    probabilistic: bool = False
    # "counts": the targets must be integers >= 0 (checked against the targets once the data is loaded,
    # since only then are they known; see losses.build_task).
    targets: str = "real"

    def implementation(self, task: str) -> type:
        """The Likelihood class for ``task`` (classification | regression), imported on first use."""
        return resolve(self.impl if isinstance(self.impl, str) else self.impl[task])

    def kind(self, task: str) -> str:
        """classification | regression | probabilistic: what picks the metric set and default monitor."""
        return "probabilistic" if self.probabilistic else task


_L = "mlptrain.losses.likelihoods:"
LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(("classification",), _L + "CrossEntropy", ("label_smoothing", "class_weight")),
    "nll": LossSpec(("classification",), _L + "NLL", ("class_weight",)),
    "mse": LossSpec(
        ("classification", "regression"), {"classification": _L + "Brier", "regression": _L + "MSE"}, ("output",)
    ),
    "bce": LossSpec(("binary",), _L + "BCE", ("class_weight",)),
    "l1": LossSpec(("regression",), _L + "L1"),
    "huber": LossSpec(("regression",), _L + "Huber", ("huber_delta",)),
    "gaussian_nll": LossSpec(("regression",), _L + "GaussianNLL", ("variance", "min_variance"), probabilistic=True),
    "laplace_nll": LossSpec(("regression",), _L + "LaplaceNLL", ("variance", "min_variance"), probabilistic=True),
    "poisson_nll": LossSpec(("regression",), _L + "PoissonNLL", probabilistic=True, targets="counts"),
}
# Loss -> the tasks it fits ("binary": classification with exactly two classes). Torch-free, so a
# misfit is caught by parse(); losses.build_task checks again with the loaded data's true shape.
LOSS_TASKS = {name: spec.tasks for name, spec in LOSSES.items()}
# loss=auto (the default): the likelihood that follows the task, resolved once the task is known
# (from the config, or from the data for a CSV with dataset.task=auto).
AUTO_LOSS = {"classification": "cross_entropy", "regression": "mse"}
PROBABILISTIC = tuple(name for name, spec in LOSSES.items() if spec.probabilistic)

# Metrics each kind of task reports (metrics.json, TensorBoard, HParams).
# roc_auc (every class needs a row) and mape (the target must be > 0) are left out of a split where they
# are undefined (mlptrain.losses.task.undefined_reason); the others are always reported.
_CLASSIFICATION = ("balanced_acc", "f1", "precision", "recall", "roc_auc")
METRICS = {
    "classification": ("loss", "acc", "nll", "ece", *_CLASSIFICATION),
    "regression": ("loss", "rmse", "mae", "r2", "nll", "coverage95", "mape"),
    "probabilistic": ("loss", "rmse", "mae", "r2", "nll", "coverage95", "mape"),
}
# The metric each task selects on by default: the validation loss of the default loss, on a scale every
# loss of the task shares (a sweep over loss= ranks its jobs on one scale). Classification: NLL, which is
# the cross-entropy loss; unlike accuracy it does not saturate (a small validation split reaches 100%
# accuracy in the first epochs, and selecting there tests an under-trained model). Point regressors: RMSE,
# the square root of the MSE loss; predictive distributions: NLL, a proper scoring rule that rewards
# calibrated spread. All are minimised, so the default objective's direction is known from the config.
DEFAULT_MONITOR = {"classification": "nll", "regression": "rmse", "probabilistic": "nll"}
MAXIMISE = {"acc", "r2", *_CLASSIFICATION}  # the rest (loss, nll, ece, rmse, mae, mape) are minimised
NOT_MONITORABLE = {"coverage95"}  # good when near 0.95, so neither min nor max selects on it


def losses_for(task: str, n_classes: int | None = None) -> list[str]:
    """Losses that fit a task; ``n_classes`` None (not known yet) keeps bce as a candidate."""
    kinds = {task} | ({"binary"} if task == "classification" and n_classes in (2, None) else set())
    return [name for name, fits in LOSS_TASKS.items() if kinds & set(fits)]


def loss_misfit(loss: str, dataset: str, task: str, n_classes: int | None = None) -> str | None:
    """None if ``loss`` fits the dataset's task, else the one-line reason naming the losses that do."""
    fits = losses_for(task, n_classes)
    if loss == "auto" or loss in fits:
        return None
    what = f"{task}, {n_classes} classes" if n_classes else task
    if n_classes is None and "bce" in fits:
        fits[fits.index("bce")] = "bce (two classes only)"
    return f"loss={loss} does not fit dataset={dataset} ({what}); losses that fit: {', '.join(fits)}"


def loss_param_misuse(loss: str, key: str) -> str | None:
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
    return (
        f"{where}: loss={loss} needs {TARGETS[LOSSES[loss].targets]} as targets, but they include {found}"
        f"; losses for real-valued targets: {', '.join(other)}"
    )


# ----------------------------------------------------------------------------- model
ACTIVATIONS = {
    "relu": "torch.nn:ReLU",
    "sigmoid": "torch.nn:Sigmoid",
    "tanh": "torch.nn:Tanh",
    "gelu": "torch.nn:GELU",
    "silu": "torch.nn:SiLU",
    "leaky_relu": "torch.nn:LeakyReLU",
    "elu": "torch.nn:ELU",
    "identity": "torch.nn:Identity",
}
NORMS = {"none": None, "batch": "torch.nn:BatchNorm1d", "layer": "torch.nn:LayerNorm"}
INITS = ("default", "kaiming", "xavier", "orthogonal", "normal")

# ----------------------------------------------------------------------------- schedulers
# name -> "module:function" (cfg, optimizer, sizes) -> mlptrain.optim.Schedule
SCHEDULERS = {
    name: f"mlptrain.optim:{name}_schedule" for name in ("none", "step", "exponential", "cosine", "onecycle", "plateau")
}

# ----------------------------------------------------------------------------- loggers
# trainer.loggers: name -> the class (mlptrain.loggers.base.Logger) that writes it.
LOGGERS = {
    "tensorboard": "mlptrain.loggers.tensorboard:TensorBoard",
    "csv": "mlptrain.loggers.csv:CSVLogger",
}

# ----------------------------------------------------------------------------- objective direction
DIRECTIONS = {"min": "minimize", "max": "maximize"}


def objective_mode(trainer: Any, dataset: Any) -> str | None:
    """min/max of the objective as far as the config alone decides it (None: only the data can tell).
    ``trainer``/``dataset``: the config groups (typed or DictConfig)."""
    if trainer.mode != "auto":
        return trainer.mode
    monitor = str(trainer.monitor).removeprefix("val/")
    if monitor == "auto":  # every task's default (DEFAULT_MONITOR) is a loss-like metric, minimised
        return "min"
    return "max" if monitor in MAXIMISE else "min"


def check_direction(direction: str | None, mode: str | None, what: str) -> None:
    """An optimising sweeper's direction must agree with the mode of the objective the jobs return."""
    if direction is None or mode is None or direction == DIRECTIONS[mode]:
        return
    raise ConfigError(
        f"hydra.sweeper.direction: {direction} does not match the objective {what} (mode {mode}); "
        f"valid: {DIRECTIONS[mode]} (or change trainer.monitor / trainer.mode)"
    )


def sweep_direction(sweeper: Any) -> str | None:
    """The sweeper's single optimisation direction (Optuna: Direction enum or string), if it has one."""
    d = sweeper.get("direction") if sweeper is not None else None
    if d is None or not isinstance(d, (str, Enum)):
        return None
    return str(getattr(d, "name", d)).rsplit(".", 1)[-1]

"""One table per extension point: every name a config group or key accepts, and what implements it.

An implementation is named as ``"module:attr"`` and imported on first use (:func:`resolve`), so
this module is torch-free and complete: the CLI validates every choice against these tables before
torch is imported, and adding a dataset, loss, scheduler or logger is one line here plus its class
(or function) and its YAML.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

from mlptrain.dataset_config import CsvConfig, SyntheticConfig, VisionConfig
from mlptrain.errors import ConfigError


def resolve(ref: str) -> Any:
    """The object a ``"module:attr"`` reference names (imported now)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# ----------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class DatasetSpec:
    schema: type  # the dataclass its config group is merged onto (mlptrain.dataset_config)
    loader: str  # "module:function", called with the typed config: returns a DataBundle
    task: Optional[str]  # classification | regression; None: only the data can tell (a CSV with task=auto)
    # Classes of a classification set, when the config alone decides them: a number, the name of a
    # config key holding it, or None (known once the data is loaded).
    classes: int | str | None = None
    make: Optional[str] = None  # synthetic sets: "module:function" (cfg, generator) -> (x, y)
    cached: bool = False  # torchvision sets: the decoded tensors are cached (mlptrain.data.processed)


def _synthetic(task: str, classes: int | str | None = None) -> Any:
    def spec(name: str) -> DatasetSpec:
        return DatasetSpec(SyntheticConfig, "mlptrain.data.synthetic:load_synthetic", task, classes,
                           make=f"mlptrain.data.synthetic:{name}")

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


def dataset_task(ds: Any) -> Optional[tuple[str, Optional[int]]]:
    """(task, classes) of a typed dataset config when known without loading it (classes None: unknown)."""
    spec = DATASETS.get(getattr(ds, "name", None))
    if spec is None:
        return None
    task = spec.task or (ds.task if getattr(ds, "task", "auto") != "auto" else None)
    if task is None:
        return None
    classes = getattr(ds, spec.classes) if isinstance(spec.classes, str) else spec.classes
    return task, (classes if task == "classification" else None)


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
SCHEDULERS = {name: f"mlptrain.optim:{name}_schedule"
              for name in ("none", "step", "exponential", "cosine", "onecycle", "plateau")}

# ----------------------------------------------------------------------------- objective direction
MAXIMISED = ("acc", "r2")  # metrics where larger is better; every other one is minimised
DIRECTIONS = {"min": "minimize", "max": "maximize"}


def objective_mode(trainer: Any, dataset: Any) -> str | None:
    """min/max of the objective as far as the config alone decides it (None: only the data can tell).
    ``trainer``/``dataset``: the config groups (typed or DictConfig)."""
    if trainer.mode != "auto":
        return trainer.mode
    monitor = str(trainer.monitor).removeprefix("val/")
    if monitor == "auto":  # the task's default: accuracy for classification, an error for regression
        spec = DATASETS.get(dataset.get("name") if hasattr(dataset, "get") else getattr(dataset, "name", None))
        task = spec.task if spec is not None else None
        return {"classification": "max", "regression": "min"}.get(task)
    return "max" if monitor in MAXIMISED else "min"


def check_direction(direction: str | None, mode: str | None, what: str) -> None:
    """An optimising sweeper's direction must agree with the mode of the objective the jobs return."""
    if direction is None or mode is None or direction == DIRECTIONS[mode]:
        return
    raise ConfigError(f"hydra.sweeper.direction: {direction} does not match the objective {what} (mode {mode}); "
                      f"valid: {DIRECTIONS[mode]} (or change trainer.monitor / trainer.mode)")


def sweep_direction(sweeper: Any) -> str | None:
    """The sweeper's single optimisation direction (Optuna: Direction enum or string), if it has one."""
    d = sweeper.get("direction") if sweeper is not None else None
    if d is None or not isinstance(d, (str, Enum)):
        return None
    return str(getattr(d, "name", d)).rsplit(".", 1)[-1]

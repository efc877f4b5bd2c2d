"""Typed run configuration: the one place where Hydra's DictConfig becomes plain objects.

Every group is merged onto a dataclass schema (unknown keys and wrong types are
caught by OmegaConf), then range-checked in ``__post_init__``.  Any problem is
raised as :class:`ConfigError`, whose message names the key and what is allowed.
Nothing here imports torch, so ``mlptrain --help`` and validation stay fast.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A bad configuration value: the message is one line for the user."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _choice(value: str, key: str, choices) -> None:
    _check(value in choices, key, f"unknown value {value!r}; valid choices: {', '.join(choices)}")


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu", "silu", "leaky_relu", "elu", "identity")
NORMS = ("none", "batch", "layer")
INITS = ("default", "kaiming", "xavier", "orthogonal", "normal")
DEVICES_HELP = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MAX_THREADS = 4096
SYNTHETIC_CLASSIFICATION = ("spirals", "moons", "circles", "xor", "blobs")
SYNTHETIC_REGRESSION = ("sine", "friedman1", "heteroscedastic")
VISION = ("mnist", "fashion_mnist", "kmnist", "cifar10")
# Loss -> the tasks it fits ("binary": classification with exactly two classes). Torch-free, so a
# misfit is caught by parse(); losses.build_task checks again with the loaded data's true shape.
LOSS_TASKS = {
    "cross_entropy": ("classification",),
    "nll": ("classification",),
    "mse": ("classification", "regression"),
    "bce": ("binary",),
    "l1": ("regression",),
    "huber": ("regression",),
    "gaussian_nll": ("regression",),
    "laplace_nll": ("regression",),
}
LOSSES = tuple(LOSS_TASKS)


# ----------------------------------------------------------------------------- data
@dataclass
class SyntheticConfig:
    """Embedded toy sets, generated from ``seed`` with no download."""

    name: str = "spirals"
    n_samples: int = 3000
    noise: float = 0.2
    n_classes: int = 3  # spiral arms / blob centres; moons, circles and xor are binary
    n_features: int = 10  # friedman1 only (>= 5; the extra ones are noise)
    seed: int = 0  # the data's own seed: fixed, so a seed sweep varies init and order, not data
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        _choice(self.name, "dataset.name", SYNTHETIC_CLASSIFICATION + SYNTHETIC_REGRESSION)
        _check(self.n_samples >= 30, "dataset.n_samples", f"must be >= 30, got {self.n_samples}")
        _check(_finite(self.noise) and self.noise >= 0, "dataset.noise", f"must be >= 0, got {self.noise}")
        _check(self.n_classes >= 2, "dataset.n_classes", f"must be >= 2, got {self.n_classes}")
        _check(self.n_classes <= self.n_samples, "dataset.n_classes",
               f"must be <= dataset.n_samples ({self.n_samples}), got {self.n_classes}")
        _check(self.n_features >= 5, "dataset.n_features", f"must be >= 5, got {self.n_features}")
        _split_fractions(self.val_fraction, self.test_fraction)

    @property
    def classes(self) -> int:
        """Classes of a classification set: moons, circles and xor are binary."""
        return self.n_classes if self.name in ("spirals", "blobs") else 2


def _split_fractions(val: float, test: Optional[float]) -> None:
    _check(_finite(val) and 0 < val < 1, "dataset.val_fraction", f"must be in (0, 1), got {val}")
    if test is not None:
        _check(_finite(test) and 0 < test < 1, "dataset.test_fraction", f"must be in (0, 1), got {test}")
        _check(val + test < 1, "dataset.val_fraction", f"val_fraction + test_fraction must be < 1, got {val + test}")


@dataclass
class VisionConfig:
    """torchvision image sets; pixels stay uint8 in memory and are normalised per batch."""

    name: str = "mnist"
    data_dir: str = "${oc.env:MLPTRAIN_DATA,${oc.env:HOME,.}/.cache/mlptrain}"
    download: bool = True
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        _choice(self.name, "dataset.name", VISION)
        _check(bool(self.data_dir), "dataset.data_dir", "must be a folder path")
        _split_fractions(self.val_fraction, None)


MISSING_POLICIES = ("mean", "median", "most_frequent", "error")
NA_VALUES = ["", "NA", "N/A", "NaN", "null", "None", "?"]


@dataclass
class CsvConfig:
    """A user's own table: one row per example, one target column."""

    name: str = "csv"
    path: str = "???"
    target: str = "???"
    task: str = "auto"  # auto (integer/string target: classification, float: regression) | classification | regression
    test_path: Optional[str] = None  # a separate test table; otherwise test_fraction of path is held out
    features: Optional[list[str]] = None  # default: every column but the target
    categorical: list[str] = field(default_factory=list)  # one-hot these even if they look numeric (codes, ids)
    # Missing cells: imputed from the training split (numeric: mean/median/most frequent; categorical:
    # most frequent) or rejected (error).
    missing: str = "mean"
    na_values: list[str] = field(default_factory=lambda: list(NA_VALUES))  # cells that mean "missing" (any case)
    delimiter: str = ","
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        _check(bool(self.path.strip()), "dataset.path", "must be the path of a CSV file")
        _check(bool(self.target.strip()), "dataset.target", "must name the target column")
        _choice(self.task, "dataset.task", ("auto", "classification", "regression"))
        _choice(self.missing, "dataset.missing", MISSING_POLICIES)
        if self.delimiter in ("tab", "\\t"):  # a tab is hard to type on a command line
            self.delimiter = "\t"
        _check(len(self.delimiter) == 1, "dataset.delimiter", f"must be one character or tab, got {self.delimiter!r}")
        _split_fractions(self.val_fraction, None if self.test_path else self.test_fraction)


DATASET_SCHEMAS: dict[str, type] = {
    **{n: SyntheticConfig for n in SYNTHETIC_CLASSIFICATION + SYNTHETIC_REGRESSION},
    **{n: VisionConfig for n in VISION},
    "csv": CsvConfig,
}


# ----------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    name: str = "mlp"  # mlp | linear
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    dropout: float = 0.0
    norm: str = "none"
    init: str = "default"

    def __post_init__(self) -> None:
        _choice(self.name, "model.name", ("mlp", "linear"))
        if self.name == "mlp":
            _check(len(self.hidden) > 0, "model.hidden", "an mlp needs at least one hidden size (use model=linear for none)")
        _check(all(h >= 1 for h in self.hidden), "model.hidden", f"sizes must be positive integers, got {list(self.hidden)}")
        _choice(self.activation, "model.activation", ACTIVATIONS)
        _check(_finite(self.dropout) and 0 <= self.dropout < 1, "model.dropout", f"must be in [0, 1), got {self.dropout}")
        _choice(self.norm, "model.norm", NORMS)
        _choice(self.init, "model.init", INITS)


# ----------------------------------------------------------------------------- loss
@dataclass
class LossConfig:
    name: str = "cross_entropy"
    label_smoothing: float = 0.0  # cross_entropy
    output: str = "softmax"  # mse on classes: softmax | raw
    huber_delta: float = 1.0
    variance: str = "softplus"  # gaussian_nll / laplace_nll: how the spread is kept positive: softplus | exp
    min_variance: float = 1e-6  # floor on the variance (Laplace: the scale), in standardised target units

    def __post_init__(self) -> None:
        _choice(self.name, "loss.name", LOSSES)
        _check(_finite(self.label_smoothing) and 0 <= self.label_smoothing < 1, "loss.label_smoothing",
               f"must be in [0, 1), got {self.label_smoothing}")
        _check(self.label_smoothing == 0 or self.name == "cross_entropy", "loss.label_smoothing",
               f"only applies to loss=cross_entropy, not loss={self.name}")
        _choice(self.output, "loss.output", ("softmax", "raw"))
        _check(_finite(self.huber_delta) and self.huber_delta > 0, "loss.huber_delta", f"must be > 0, got {self.huber_delta}")
        _choice(self.variance, "loss.variance", ("softplus", "exp"))
        _check(_finite(self.min_variance) and self.min_variance > 0, "loss.min_variance", f"must be > 0, got {self.min_variance}")


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


def dataset_task(ds: Any) -> Optional[tuple[str, Optional[int]]]:
    """(task, classes) of a dataset config when known without loading it (classes None: unknown)."""
    if isinstance(ds, SyntheticConfig):
        if ds.name in SYNTHETIC_REGRESSION:
            return "regression", None
        return "classification", ds.classes
    if isinstance(ds, VisionConfig):
        return "classification", None
    if isinstance(ds, CsvConfig) and ds.task != "auto":
        return ds.task, None
    return None


# ----------------------------------------------------------------------------- optim
@dataclass
class OptimConfig:
    """``kwargs`` are passed to the torch.optim class named by ``target`` (Hydra ``_target_``)."""

    target: str
    lr: float
    kwargs: dict[str, Any]
    # Put biases and norm weights in a group without weight decay.
    decay_exclude_bias_norm: bool = False

    def __post_init__(self) -> None:
        _check(_finite(self.lr) and self.lr > 0, "optim.lr", f"must be a positive number, got {self.lr}")
        wd = self.kwargs.get("weight_decay", 0.0)
        _check(_finite(wd) and wd >= 0, "optim.weight_decay", f"must be >= 0, got {wd}")
        if "momentum" in self.kwargs:
            v = self.kwargs["momentum"]
            _check(_finite(v) and 0 <= v < 1, "optim.momentum", f"must be in [0, 1), got {v}")
        for key in ("alpha", "dampening"):  # RMSprop's smoothing constant, SGD's dampening
            if key in self.kwargs:
                v = self.kwargs[key]
                _check(_finite(v) and 0 <= v <= 1, f"optim.{key}", f"must be in [0, 1], got {v}")
        if "betas" in self.kwargs:
            b = self.kwargs["betas"]
            _check(isinstance(b, (list, tuple)) and len(b) == 2 and all(_finite(x) and 0 <= x < 1 for x in b),
                   "optim.betas", f"must be two numbers in [0, 1), got {b}")
        if "eps" in self.kwargs:
            _check(_finite(self.kwargs["eps"]) and self.kwargs["eps"] > 0, "optim.eps", f"must be > 0, got {self.kwargs['eps']}")


# ----------------------------------------------------------------------------- scheduler
SCHEDULERS = ("none", "step", "exponential", "cosine", "onecycle", "plateau")


@dataclass
class SchedulerConfig:
    name: str = "cosine"
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step / exponential decay factor
    warmup_epochs: float = 0.0  # cosine: linear warmup length
    min_lr: float = 0.0  # cosine floor; plateau's lower bound
    max_lr: Optional[float] = None  # onecycle peak (default: optim.lr)
    pct_start: float = 0.3  # onecycle: fraction of steps spent rising
    div_factor: float = 25.0  # onecycle: start at max_lr / div_factor
    final_div_factor: float = 1e4  # onecycle: end at start / final_div_factor
    cycle_momentum: bool = True  # onecycle: cycle momentum / beta1 inversely (when the optimizer uses it)
    factor: float = 0.1  # plateau
    patience: int = 5  # plateau

    def __post_init__(self) -> None:
        _choice(self.name, "scheduler.name", SCHEDULERS)
        _check(self.step_size >= 1, "scheduler.step_size", f"must be >= 1, got {self.step_size}")
        _check(_finite(self.gamma) and 0 < self.gamma <= 1, "scheduler.gamma", f"must be in (0, 1], got {self.gamma}")
        _check(_finite(self.warmup_epochs) and self.warmup_epochs >= 0, "scheduler.warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        _check(_finite(self.min_lr) and self.min_lr >= 0, "scheduler.min_lr", f"must be >= 0, got {self.min_lr}")
        _check(self.max_lr is None or (_finite(self.max_lr) and self.max_lr > 0), "scheduler.max_lr", f"must be > 0, got {self.max_lr}")
        _check(_finite(self.pct_start) and 0 < self.pct_start < 1, "scheduler.pct_start", f"must be in (0, 1), got {self.pct_start}")
        _check(_finite(self.div_factor) and self.div_factor >= 1, "scheduler.div_factor", f"must be >= 1, got {self.div_factor}")
        _check(_finite(self.final_div_factor) and self.final_div_factor >= 1, "scheduler.final_div_factor",
               f"must be >= 1, got {self.final_div_factor}")
        _check(_finite(self.factor) and 0 < self.factor < 1, "scheduler.factor", f"must be in (0, 1), got {self.factor}")
        _check(self.patience >= 0, "scheduler.patience", f"must be >= 0, got {self.patience}")


# ----------------------------------------------------------------------------- trainer
@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    patience: int = 10
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        _check(self.patience >= 0, "trainer.early_stopping.patience", f"must be >= 0, got {self.patience}")
        _check(_finite(self.min_delta) and self.min_delta >= 0, "trainer.early_stopping.min_delta", f"must be >= 0, got {self.min_delta}")


@dataclass
class TrainerConfig:
    epochs: int = 60
    max_steps: int = -1  # > 0: train exactly this many optimizer steps; epochs is then ignored
    batch_size: int = 128
    eval_batch_size: int = 4096
    device: str = "auto"
    devices: int = 1  # processes (DDP ranks) per job; > 1 starts them like torchrun
    precision: str = "fp32"
    compile: bool = False
    compile_backend: str = "inductor"  # torch.compile backend (torch._dynamo.list_backends())
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs
    num_threads: int = 0  # 0: leave torch's default
    monitor: str = "auto"  # a validation metric (acc, loss, nll, rmse, ...); auto: per task
    mode: str = "auto"  # min | max | auto (from the metric)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    progress: str = "auto"  # auto (bar on a terminal) | bar | epoch | none
    checkpoint: bool = True
    checkpoint_every_n_steps: int = 0
    resume: Optional[str] = None
    nan_policy: str = "stop"  # stop | skip_batch
    # What writes the run's logs: names of mlptrain.loggers.names.LOGGERS; [] = no log files (docs/loggers.md)
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])
    # TensorBoard pictures / histograms: N = every N epochs and after the last; 0 = after the last
    # (histograms: also before the first); -1 = off.  See mlptrain.diagnostics.
    histogram_every_n_epochs: int = 0
    image_every_n_epochs: int = 0

    def __post_init__(self) -> None:
        # Step counts are int64 tensors and checkpoint fields: larger values cannot be counted to.
        _check(self.epochs >= 0, "trainer.epochs", f"must be >= 0, got {self.epochs}")
        _check(self.max_steps == -1 or self.max_steps >= 1, "trainer.max_steps", f"must be -1 (off) or >= 1, got {self.max_steps}")
        for key in ("epochs", "max_steps"):
            _check(getattr(self, key) < 2**63, f"trainer.{key}", f"must be < 2**63, got {getattr(self, key)}")
        _check(self.batch_size >= 1, "trainer.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.eval_batch_size >= 1, "trainer.eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        dev = self.device
        ok = dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())
        _check(ok, "trainer.device", f"unknown device {dev!r}; valid: {DEVICES_HELP}")
        _check(self.devices >= 1, "trainer.devices", f"must be >= 1, got {self.devices}")
        _check(self.batch_size >= self.devices, "trainer.batch_size",
               f"{self.batch_size} is smaller than trainer.devices={self.devices} (the global batch is split "
               "across the processes)")
        _choice(self.precision, "trainer.precision", PRECISIONS)
        _check(bool(self.compile_backend), "trainer.compile_backend", "must name a torch.compile backend, e.g. inductor")
        _choice(self.compile_mode, "trainer.compile_mode", COMPILE_MODES)
        _check(0 <= self.num_threads <= MAX_THREADS, "trainer.num_threads",
               f"must be in [0, {MAX_THREADS}] (0: torch's default), got {self.num_threads}")
        _choice(self.mode, "trainer.mode", ("auto", "min", "max"))
        _check(_finite(self.grad_clip) and self.grad_clip >= 0, "trainer.grad_clip", f"must be >= 0, got {self.grad_clip}")
        _choice(self.progress, "trainer.progress", ("auto", "bar", "epoch", "none"))
        _check(self.checkpoint_every_n_steps >= 0, "trainer.checkpoint_every_n_steps", f"must be >= 0, got {self.checkpoint_every_n_steps}")
        _choice(self.nan_policy, "trainer.nan_policy", ("stop", "skip_batch"))
        from mlptrain.loggers.names import LOGGERS  # torch-free (the registry folds into one at the restructure)

        for i, name in enumerate(self.loggers):
            _choice(name, "trainer.loggers", LOGGERS)
            _check(name not in self.loggers[:i], "trainer.loggers", f"{name!r} is listed twice")
        for key in ("histogram_every_n_epochs", "image_every_n_epochs"):
            v = getattr(self, key)
            _check(v >= -1, f"trainer.{key}", f"must be >= 1 (every N epochs), 0 (after the last) or -1 (off), got {v}")


# ----------------------------------------------------------------------------- run
@dataclass
class RunConfig:
    dataset: Any
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig
    scheduler: SchedulerConfig
    trainer: TrainerConfig
    seed: int
    raw: dict  # the resolved config as plain containers, for checkpoints and logs


def _typed(schema: type, node: Any, key: str):
    """Merge ``node`` onto ``schema`` and build the dataclass (which range-checks itself)."""
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{key}: expected a group of settings, got {node!r}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_omegaconf_message(e, key, schema)) from None


def _omegaconf_message(e: OmegaConfBaseException, group: str, schema: type) -> str:
    full_key = getattr(e, "full_key", None) or ""
    path = f"{group}.{full_key}" if full_key else group
    first = str(e).splitlines()[0]
    if type(e).__name__ == "ConfigKeyError" or "not in" in first:
        bad = str(full_key).split(".")[-1] or first
        valid = ", ".join(f.name for f in dataclasses.fields(schema))
        return f"{path}: unknown key {bad!r}; valid keys: {valid}"
    if type(e).__name__ == "MissingMandatoryValue":
        return f"{path}: is required but missing (set {path}=...)"
    return f"{path}: {first}"


def _resolve(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or "config"
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from None


TOP_LEVEL = ("dataset", "model", "loss", "optim", "scheduler", "trainer", "seed", "hparams_search")


def parse(cfg: DictConfig) -> RunConfig:
    """Validate the composed config and return typed objects, or raise ConfigError."""
    cfg = OmegaConf.create(_resolve(cfg))
    unknown = [k for k in cfg.keys() if k not in TOP_LEVEL]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown top-level key; valid keys: {', '.join(TOP_LEVEL[:-1])}")
    for k in TOP_LEVEL[:-2]:
        if k not in cfg or cfg[k] is None:
            raise ConfigError(f"{k}: missing config group; choose one with {k}=<option>")

    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    _check(0 <= seed < 2**63, "seed", f"must be in [0, 2**63), got {seed}")

    ds_name = cfg.dataset.get("name")
    if ds_name not in DATASET_SCHEMAS:
        raise ConfigError(f"dataset.name: unknown dataset {ds_name!r}; valid choices: {', '.join(DATASET_SCHEMAS)}")
    dataset = _typed(DATASET_SCHEMAS[ds_name], cfg.dataset, "dataset")
    ds_seed = getattr(dataset, "seed", 0)
    _check(0 <= ds_seed < 2**63, "dataset.seed", f"must be in [0, 2**63), got {ds_seed}")
    run = RunConfig(
        dataset=dataset,
        model=_typed(ModelConfig, cfg.model, "model"),
        loss=_typed(LossConfig, cfg.loss, "loss"),
        optim=_parse_optim(cfg.optim),
        scheduler=_typed(SchedulerConfig, cfg.scheduler, "scheduler"),
        trainer=_typed(TrainerConfig, cfg.trainer, "trainer"),
        seed=seed,
        raw=OmegaConf.to_container(cfg),
    )
    known = dataset_task(run.dataset)
    if known:  # a loss that cannot fit fails here, before any data is loaded or downloaded
        problem = loss_misfit(run.loss.name, ds_name, *known)
        if problem:
            raise ConfigError(problem)
    return run


def _parse_optim(node: Any) -> OptimConfig:
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError("optim: expected an optimizer config with _target_ (e.g. optim=adam)")
    d = OmegaConf.to_container(node)
    target = d.pop("_target_")
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"optim._target_: expected the dotted name of a torch.optim class, got {target!r}")
    d.pop("_partial_", None)
    exclude = d.pop("decay_exclude_bias_norm", False)
    if not isinstance(exclude, bool):
        raise ConfigError(f"optim.decay_exclude_bias_norm: expected true or false, got {exclude!r}")
    if "lr" not in d:
        raise ConfigError("optim.lr: is required but missing (set optim.lr=...)")
    lr = d.pop("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise ConfigError(f"optim.lr: expected a number, got {lr!r}")
    for k, v in d.items():
        if k != "betas" and isinstance(v, str):
            raise ConfigError(f"optim.{k}: expected a number or boolean, got {v!r}")
    return OptimConfig(target=target, lr=float(lr), kwargs=d, decay_exclude_bias_norm=exclude)

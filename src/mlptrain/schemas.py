"""The schemas of the model, loss, optim, scheduler and trainer groups, range-checked on construction.

:func:`mlptrain.config.parse` merges each composed group onto its dataclass (OmegaConf catches
unknown keys and wrong types); ``__post_init__`` checks ranges and choices against the registry's
tables.  The dataset schemas are :mod:`mlptrain.dataset_config`.  Torch-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mlptrain.checks import check, choice, finite
from mlptrain.dataset_config import SyntheticConfig, VisionConfig
from mlptrain.registry import (
    ACTIVATIONS,
    INITS,
    LOGGERS,
    LOSS_TASKS,
    NORMS,
    SCHEDULERS,
    datasets,
    loss_param_misuse,
)

DEVICES_HELP = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MAX_THREADS = 4096
SYNTHETIC_CLASSIFICATION = datasets(SyntheticConfig, "classification")
SYNTHETIC_REGRESSION = datasets(SyntheticConfig, "regression")
VISION = datasets(VisionConfig)
# The loss table lives in the torch-free registry; its names are re-exported here for the modules
# that import them from config.
LOSSES = ("auto", *LOSS_TASKS)


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
        choice(self.name, "model.name", ("mlp", "linear"))
        if self.name == "mlp":
            check(
                len(self.hidden) > 0,
                "model.hidden",
                "an mlp needs at least one hidden size (use model=linear for none)",
            )
        check(
            all(h >= 1 for h in self.hidden),
            "model.hidden",
            f"sizes must be positive integers, got {list(self.hidden)}",
        )
        choice(self.activation, "model.activation", ACTIVATIONS)
        check(finite(self.dropout) and 0 <= self.dropout < 1, "model.dropout", f"must be in [0, 1), got {self.dropout}")
        choice(self.norm, "model.norm", NORMS)
        choice(self.init, "model.init", INITS)


# ----------------------------------------------------------------------------- loss
@dataclass
class LossConfig:
    """Every loss's keys in one schema; ``registry.LOSSES[name].params`` says which ones a loss reads."""

    name: str = "auto"  # auto: registry.AUTO_LOSS[task] (cross_entropy or mse), resolved with the task
    label_smoothing: float = 0.0  # cross_entropy
    output: str = "softmax"  # mse on classes: softmax | raw
    huber_delta: float = 1.0
    variance: str = "softplus"  # gaussian_nll / laplace_nll: how the spread is kept positive: softplus | exp
    min_variance: float = 1e-6  # floor on the variance (Laplace: the scale), in standardised target units
    # cross_entropy / nll / bce: null | balanced (n_rows / (n_classes * rows of the class), on the training
    # split) | a list of one weight >= 0 per class, in the order of the class names (docs/losses.md).
    class_weight: Any = None

    def __post_init__(self) -> None:
        choice(self.name, "loss.name", LOSSES)
        check(
            finite(self.label_smoothing) and 0 <= self.label_smoothing < 1,
            "loss.label_smoothing",
            f"must be in [0, 1), got {self.label_smoothing}",
        )
        choice(self.output, "loss.output", ("softmax", "raw"))
        check(
            finite(self.huber_delta) and self.huber_delta > 0,
            "loss.huber_delta",
            f"must be > 0, got {self.huber_delta}",
        )
        choice(self.variance, "loss.variance", ("softplus", "exp"))
        check(
            finite(self.min_variance) and self.min_variance > 0,
            "loss.min_variance",
            f"must be > 0, got {self.min_variance}",
        )
        cw = self.class_weight
        if cw is not None and not isinstance(cw, str):
            cw = self.class_weight = list(cw) if isinstance(cw, (list, tuple)) else cw
        check(
            cw is None
            or cw == "balanced"
            or (isinstance(cw, list) and all(finite(w) and w >= 0 for w in cw) and any(w > 0 for w in cw)),
            "loss.class_weight",
            f"must be balanced or a list of weights >= 0 (one per class, not all 0), got {cw!r}",
        )
        # A key the chosen loss does not read is refused when set (registry.LOSSES[name].params says
        # which keys each loss reads), rather than silently ignored.
        for f in dataclasses.fields(self):  # loss=auto: checked once resolved (losses.build_task)
            if self.name != "auto" and f.name != "name" and getattr(self, f.name) != f.default:
                problem = loss_param_misuse(self.name, f.name)
                check(problem is None, f"loss.{f.name}", problem)


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
        check(finite(self.lr) and self.lr > 0, "optim.lr", f"must be a positive number, got {self.lr}")
        wd = self.kwargs.get("weight_decay", 0.0)
        check(finite(wd) and wd >= 0, "optim.weight_decay", f"must be >= 0, got {wd}")
        if "momentum" in self.kwargs:
            v = self.kwargs["momentum"]
            check(finite(v) and 0 <= v < 1, "optim.momentum", f"must be in [0, 1), got {v}")
        for key in ("alpha", "dampening"):  # RMSprop's smoothing constant, SGD's dampening
            if key in self.kwargs:
                v = self.kwargs[key]
                check(finite(v) and 0 <= v <= 1, f"optim.{key}", f"must be in [0, 1], got {v}")
        if "betas" in self.kwargs:
            b = self.kwargs["betas"]
            check(
                isinstance(b, (list, tuple)) and len(b) == 2 and all(finite(x) and 0 <= x < 1 for x in b),
                "optim.betas",
                f"must be two numbers in [0, 1), got {b}",
            )
        if "eps" in self.kwargs:
            check(
                finite(self.kwargs["eps"]) and self.kwargs["eps"] > 0,
                "optim.eps",
                f"must be > 0, got {self.kwargs['eps']}",
            )


# ----------------------------------------------------------------------------- scheduler


@dataclass
class SchedulerConfig:
    name: str = "cosine"
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step / exponential decay factor
    warmup_epochs: float = 0.0  # cosine: linear warmup length
    min_lr: float = 0.0  # cosine floor; plateau's lower bound
    max_lr: float | None = None  # onecycle peak (default: optim.lr)
    pct_start: float = 0.3  # onecycle: fraction of steps spent rising
    div_factor: float = 25.0  # onecycle: start at max_lr / div_factor
    final_div_factor: float = 1e4  # onecycle: end at start / final_div_factor
    cycle_momentum: bool = True  # onecycle: cycle momentum / beta1 inversely (when the optimizer uses it)
    factor: float = 0.1  # plateau
    patience: int = 5  # plateau

    def __post_init__(self) -> None:
        choice(self.name, "scheduler.name", SCHEDULERS)
        check(self.step_size >= 1, "scheduler.step_size", f"must be >= 1, got {self.step_size}")
        check(finite(self.gamma) and 0 < self.gamma <= 1, "scheduler.gamma", f"must be in (0, 1], got {self.gamma}")
        check(
            finite(self.warmup_epochs) and self.warmup_epochs >= 0,
            "scheduler.warmup_epochs",
            f"must be >= 0, got {self.warmup_epochs}",
        )
        check(finite(self.min_lr) and self.min_lr >= 0, "scheduler.min_lr", f"must be >= 0, got {self.min_lr}")
        check(
            self.max_lr is None or (finite(self.max_lr) and self.max_lr > 0),
            "scheduler.max_lr",
            f"must be > 0, got {self.max_lr}",
        )
        check(
            finite(self.pct_start) and 0 < self.pct_start < 1,
            "scheduler.pct_start",
            f"must be in (0, 1), got {self.pct_start}",
        )
        check(
            finite(self.div_factor) and self.div_factor >= 1,
            "scheduler.div_factor",
            f"must be >= 1, got {self.div_factor}",
        )
        check(
            finite(self.final_div_factor) and self.final_div_factor >= 1,
            "scheduler.final_div_factor",
            f"must be >= 1, got {self.final_div_factor}",
        )
        check(finite(self.factor) and 0 < self.factor < 1, "scheduler.factor", f"must be in (0, 1), got {self.factor}")
        check(self.patience >= 0, "scheduler.patience", f"must be >= 0, got {self.patience}")


# ----------------------------------------------------------------------------- trainer
@dataclass
class EarlyStoppingConfig:
    enabled: bool | str = "auto"  # auto: on for small data (mlptrain.training.sizes)
    patience: int = 10
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        check(
            isinstance(self.enabled, bool) or self.enabled == "auto",
            "trainer.early_stopping.enabled",
            f"must be true, false or auto, got {self.enabled!r}",
        )
        check(self.patience >= 0, "trainer.early_stopping.patience", f"must be >= 0, got {self.patience}")
        check(
            finite(self.min_delta) and self.min_delta >= 0,
            "trainer.early_stopping.min_delta",
            f"must be >= 0, got {self.min_delta}",
        )


@dataclass
class TrainerConfig:
    # auto: sized to the training split (mlptrain.training.sizes: 60 epochs of batches of 128 on large data)
    epochs: int | str = "auto"
    max_steps: int = -1  # > 0: train exactly this many optimizer steps; epochs is then ignored
    batch_size: int | str = "auto"
    eval_batch_size: int = 4096
    device: str = "auto"
    devices: int = 1  # processes (DDP ranks) per job; > 1 starts them like torchrun
    precision: str = "fp32"
    compile: bool = False
    compile_backend: str = "inductor"  # torch.compile backend (torch._dynamo.list_backends())
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs
    num_threads: Any = "auto"  # auto: from the work per step and the free cores (accel.auto_threads); 0: torch's
    monitor: str = "auto"  # a validation metric (acc, loss, nll, rmse, ...); auto: per task
    mode: str = "auto"  # min | max | auto (from the metric)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    progress: str = "auto"  # auto (bar on a terminal) | bar | epoch | none
    checkpoint: bool = True
    checkpoint_every_n_steps: int = 0
    # Epoch-end checkpoints at most this often (the last epoch and a signal always write one); 0: every epoch.
    checkpoint_interval_s: float = 2.0
    resume: str | None = None
    init_from: str | None = None  # a run dir (its last.pt) or checkpoint whose weights start a new run
    overwrite: bool = False  # a new run may replace the results of a finished one in its hydra.run.dir
    nan_policy: str = "stop"  # stop | skip_batch
    retries: int = 0  # sweeps: run a job again this many times after a transient failure (out of memory, lost worker)
    # What writes the run's logs: names of mlptrain.registry.LOGGERS; [] = no log files (docs/loggers.md)
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])
    # TensorBoard pictures / histograms: N = every N epochs and after the last; 0 = after the last
    # (histograms: also before the first); -1 = off.  See mlptrain.diagnostics.
    histogram_every_n_epochs: int = 0
    image_every_n_epochs: int = 0
    # After selecting the best epoch: retrain on train + val for that many epochs, test that (train/refit.py)
    refit: bool = False

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size"):
            v = getattr(self, key)
            check(
                v == "auto" or (isinstance(v, int) and not isinstance(v, bool)),
                f"trainer.{key}",
                f"must be an integer or auto, got {v!r}",
            )
        auto = {k for k in ("epochs", "batch_size") if getattr(self, k) == "auto"}
        # Step counts are int64 tensors and checkpoint fields: larger values cannot be counted to.
        # 0 would test untrained weights and report them as the run's results: refused (eval is mlptrain-eval).
        check(
            "epochs" in auto or self.epochs >= 1 or (self.epochs == 0 and self.max_steps > 0),
            "trainer.epochs",
            f"must be >= 1, got {self.epochs} (to evaluate a trained run: mlptrain-eval <run dir>)",
        )
        check(
            self.max_steps == -1 or self.max_steps >= 1,
            "trainer.max_steps",
            f"must be -1 (off) or >= 1, got {self.max_steps}",
        )
        for key in {"epochs", "max_steps"} - auto:
            check(getattr(self, key) < 2**63, f"trainer.{key}", f"must be < 2**63, got {getattr(self, key)}")
        check(
            "batch_size" in auto or self.batch_size >= 1, "trainer.batch_size", f"must be >= 1, got {self.batch_size}"
        )
        check(self.retries >= 0, "trainer.retries", f"must be >= 0, got {self.retries}")
        check(
            not (self.refit and self.max_steps > 0),
            "trainer.refit",
            "retrains for the selected number of epochs: set trainer.epochs, not trainer.max_steps",
        )
        check(self.eval_batch_size >= 1, "trainer.eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        dev = self.device
        ok = dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())
        check(ok, "trainer.device", f"unknown device {dev!r}; valid: {DEVICES_HELP}")
        check(self.devices >= 1, "trainer.devices", f"must be >= 1, got {self.devices}")
        check(
            "batch_size" in auto or self.batch_size >= self.devices,
            "trainer.batch_size",
            f"{self.batch_size} is smaller than trainer.devices={self.devices} (the global batch is split "
            "across the processes)",
        )
        choice(self.precision, "trainer.precision", PRECISIONS)
        check(bool(self.compile_backend), "trainer.compile_backend", "must name a torch.compile backend, e.g. inductor")
        choice(self.compile_mode, "trainer.compile_mode", COMPILE_MODES)
        n = self.num_threads
        check(
            n == "auto" or (isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_THREADS),
            "trainer.num_threads",
            f"must be auto or in [0, {MAX_THREADS}] (0: torch's default), got {n!r}",
        )
        choice(self.mode, "trainer.mode", ("auto", "min", "max"))
        check(
            finite(self.grad_clip) and self.grad_clip >= 0, "trainer.grad_clip", f"must be >= 0, got {self.grad_clip}"
        )
        choice(self.progress, "trainer.progress", ("auto", "bar", "epoch", "none"))
        check(
            self.checkpoint_every_n_steps >= 0,
            "trainer.checkpoint_every_n_steps",
            f"must be >= 0, got {self.checkpoint_every_n_steps}",
        )
        check(
            finite(self.checkpoint_interval_s) and self.checkpoint_interval_s >= 0,
            "trainer.checkpoint_interval_s",
            f"must be >= 0 seconds, got {self.checkpoint_interval_s}",
        )
        choice(self.nan_policy, "trainer.nan_policy", ("stop", "skip_batch"))
        for i, name in enumerate(self.loggers):
            choice(name, "trainer.loggers", LOGGERS)
            check(name not in self.loggers[:i], "trainer.loggers", f"{name!r} is listed twice")
        for key in ("histogram_every_n_epochs", "image_every_n_epochs"):
            v = getattr(self, key)
            check(v >= -1, f"trainer.{key}", f"must be >= 1 (every N epochs), 0 (after the last) or -1 (off), got {v}")

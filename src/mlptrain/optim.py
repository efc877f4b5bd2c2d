"""Optimizers and learning-rate schedulers.

Optimizers are Hydra ``_target_`` configs with ``_partial_: true``: any torch.optim
class is one YAML file away.  We add two things torch leaves to the caller:
parameter groups that exclude biases and norm weights from weight decay, and the
fast (fused or foreach) implementation where the device supports it.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn
from torch.optim import lr_scheduler

from mlptrain.errors import ConfigError
from mlptrain.fast_optim import without_compiler_guards
from mlptrain.registry import SCHEDULERS, resolve

# Every normalisation layer torch has (batch/instance norm share _NormBase).
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def param_groups(model: nn.Module, weight_decay: float, exclude_bias_norm: bool) -> list[dict]:
    """One group, or two: decayed weight matrices, and biases plus norm parameters without decay.

    Decaying a bias or a norm's scale/shift only fights the layer's own
    normalisation (the usual AdamW recipe leaves them alone).
    """
    if not exclude_bias_norm:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (no_decay if name == "bias" or isinstance(module, NORM_TYPES) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    try:
        cls = _locate(cfg.target)
    except Exception:
        raise ConfigError(f"optim._target_: cannot import {cfg.target!r}; expected a torch.optim class") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"optim._target_: {cfg.target!r} is not a torch.optim.Optimizer")
    cls = without_compiler_guards(cls)  # the same optimizer, minus a ~1.4 s torch._dynamo import
    accepted = inspect.signature(cls).parameters
    for key in cfg.kwargs:
        if key not in accepted:
            valid = ", ".join(k for k in accepted if k != "params")
            raise ConfigError(f"optim.{key}: not an argument of {cls.__name__}; valid keys: {valid}")
        # a flag given as a number (optim.amsgrad=0) would reach torch's fused kernels and fail with a traceback
        if isinstance(accepted[key].default, bool) and not isinstance(cfg.kwargs[key], bool):
            raise ConfigError(f"optim.{key}: expected true or false, got {cfg.kwargs[key]!r}")
    kwargs = dict(cfg.kwargs)
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    groups = param_groups(model, kwargs.get("weight_decay", 0.0), cfg.decay_exclude_bias_norm)
    # Fused kernels exist for Adam/AdamW/SGD/Adagrad on CPU and CUDA; fall back to foreach.
    if "fused" in accepted and "fused" not in kwargs and "foreach" not in kwargs:
        try:
            return cls(groups, lr=cfg.lr, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            pass
    if "foreach" in accepted and "foreach" not in kwargs and "fused" not in kwargs:
        kwargs["foreach"] = True
    try:
        return cls(groups, lr=cfg.lr, **kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"optim: {cls.__name__} rejected its settings: {e}") from None


def _locate(dotted: str):
    """``module.attr`` -> the object (like hydra.utils.get_class, which also logs an ERROR line on failure)."""
    module, _, name = dotted.rpartition(".")
    return resolve(f"{module}:{name}")


class Schedule:
    """A torch LR scheduler plus when to step it: after every optimizer step or every epoch.

    A per-step scheduler also records the learning rate each step used.  The
    scheduler computes it on the host anyway, so this is a list append, not a
    device sync; the trainer drains the list once per epoch into TensorBoard.
    """

    def __init__(self, scheduler, per_step: bool, on_metric: bool = False):
        self.scheduler, self.per_step, self.on_metric = scheduler, per_step, on_metric
        self.step_lrs: list[float] = []

    def state_dict(self):
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state):
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)

    def step_batch(self):
        """Call after each optimizer step."""
        if self.scheduler is not None and self.per_step:
            self.step_lrs.append(self.scheduler.get_last_lr()[0])  # the lr this step used
            self.scheduler.step()

    def drain_step_lrs(self) -> list[float]:
        lrs, self.step_lrs = self.step_lrs, []
        return lrs

    def step_epoch(self, metric: float | None):
        if self.scheduler is None or self.per_step:
            return
        if self.on_metric:
            self.scheduler.step(metric)
        else:
            self.scheduler.step()


def build_scheduler(cfg, optimizer, steps_per_epoch: int, total_steps: int, base_lr: float, mode: str) -> Schedule:
    """Map ``scheduler=`` to torch.optim.lr_scheduler (through :data:`mlptrain.registry.SCHEDULERS`)."""
    if cfg.name not in SCHEDULERS:
        raise ConfigError(f"scheduler.name: unknown {cfg.name!r}; valid choices: {', '.join(SCHEDULERS)}")
    return resolve(SCHEDULERS[cfg.name])(cfg, optimizer, steps_per_epoch, max(total_steps, 1), base_lr, mode)


# One builder per scheduler name, all with build_scheduler's arguments; warmup and cosine run per step.
def none_schedule(cfg, optimizer, steps_per_epoch, total_steps, base_lr, mode) -> Schedule:
    return Schedule(None, per_step=False)


def step_schedule(cfg, optimizer, steps_per_epoch, total_steps, base_lr, mode) -> Schedule:
    return Schedule(lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), per_step=False)


def exponential_schedule(cfg, optimizer, steps_per_epoch, total_steps, base_lr, mode) -> Schedule:
    return Schedule(lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma), per_step=False)


def plateau_schedule(cfg, optimizer, steps_per_epoch, total_steps, base_lr, mode) -> Schedule:
    plateau = lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr
    )
    return Schedule(plateau, per_step=False, on_metric=True)


def onecycle_schedule(cfg, optimizer, steps_per_epoch, total_steps, base_lr, mode) -> Schedule:
    # Cycling momentum would switch momentum *on* for plain SGD/RMSprop (and torch refuses
    # optimizers without any, e.g. Adagrad): cycle it only where the optimizer uses it.
    d = optimizer.defaults
    has_momentum = "betas" in d or d.get("momentum", 0) > 0
    pct = cfg.pct_start
    if math.isclose(pct * total_steps, 1.0):  # a one-step warm-up makes torch divide by zero
        pct = 2.0 / total_steps if total_steps > 2 else 0.25
    return Schedule(
        lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.max_lr or base_lr,
            total_steps=total_steps,
            pct_start=pct,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
            cycle_momentum=cfg.cycle_momentum and has_momentum,
        ),
        per_step=True,
    )


def cosine_schedule(cfg, optimizer, steps_per_epoch, total_steps, base_lr, mode) -> Schedule:
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps - 1)
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps - warmup, eta_min=cfg.min_lr)
    if warmup == 0:
        return Schedule(cosine, per_step=True)
    linear = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return Schedule(lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup]), per_step=True)

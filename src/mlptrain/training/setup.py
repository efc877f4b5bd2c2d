"""The composition root: the one place that turns a validated run config into the parts that train."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mlptrain import checkpoint
from mlptrain.accel import CompiledForward, auto_threads, autocast_for, resolve_device
from mlptrain.batches import DeviceBatches
from mlptrain.config import RunConfig, TrainerConfig
from mlptrain.data import load_dataset
from mlptrain.data.bundle import DataBundle
from mlptrain.errors import CheckpointError
from mlptrain.losses import Task, build_task, monitor_of
from mlptrain.model import Network, build_model
from mlptrain.optim import Schedule, build_optimizer, build_scheduler
from mlptrain.parallel.collectives import Dist
from mlptrain.training import sizes

log = logging.getLogger("mlptrain")


@dataclass
class Parts:
    """Everything a run trains with, built once; the loop mutates only their internal state."""

    run: RunConfig
    cfg: TrainerConfig
    device: torch.device
    dist: Dist
    data: DataBundle
    meta: dict
    task: Task
    monitor: str  # the validation metric that selects checkpoints, stops early and is the objective
    mode: str  # min | max
    model: Network
    forward: Callable  # evaluation: the (compiled) model
    train_forward: Callable  # training steps: DDP-wrapped (and compiled) where there are several ranks
    train_batches: DeviceBatches
    val: tuple[torch.Tensor, torch.Tensor]  # the validation split, on the device
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    autocast: Callable
    scaler: torch.amp.GradScaler | None  # fp16 only
    total_steps: int
    max_epochs: int


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def init_weights(model: Network, target: str) -> None:
    """``trainer.init_from``: start from a checkpoint's weights (a run dir: its last.pt, the weights it ended on)."""
    ckpt = checkpoint.load(target)
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"trainer.init_from: {target} does not fit this model: {first[:200]}") from None
    log.info("weights from %s (epoch %d, step %d); a fresh optimizer and schedule", target, ckpt["epoch"], ckpt["step"])


def build(run: RunConfig, data: DataBundle | None = None) -> Parts:
    """The parts of ``run`` (``data``: an already loaded dataset, else the one its config names)."""
    cfg = run.trainer
    if isinstance(cfg.num_threads, int) and cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)  # a bad device fails on every rank before they connect
    dist = Dist.setup()  # one process, or this rank of a DDP job
    device = dist.place(device)
    seed_everything(run.seed)

    data = data if data is not None else load_dataset(run.dataset)
    meta = data.meta()
    task = build_task(run.loss, meta, data.y_mean, data.y_std, targets=(data.y_train, data.y_val, data.y_test))
    monitor, mode = monitor_of(task, cfg.monitor, cfg.mode, data.y_val)
    model = build_model(run.model, meta, data.x_mean, data.x_std, task.head, task.head_width).to(device)
    if cfg.init_from and not cfg.resume:  # a resume restores its own weights
        init_weights(model, cfg.init_from)
    batch_size = sizes.resolve_batch_size(run, len(data.y_train), dist.world)
    if cfg.num_threads == "auto":  # the work per step is known now
        threads, why = auto_threads(sum(p.numel() for p in model.parameters()), batch_size, device)
        if threads:
            torch.set_num_threads(threads)
            log.info("threads: %d (trainer.num_threads=auto: %s)", threads, why)
    batches = DeviceBatches(
        data.x_train, data.y_train, batch_size, run.seed, device, rank=dist.rank, world=dist.world, w=data.w_train
    )
    run = sizes.resolve(run, batch_size, len(batches))  # trainer.*=auto as numbers, from here on
    cfg = run.trainer
    optimizer = build_optimizer(run.optim, model)
    steps_per_epoch = len(batches)
    # trainer.max_steps > 0 replaces trainer.epochs: train exactly that many steps (the last
    # epoch may be partial), and schedules that span the run are sized to it.
    if cfg.max_steps > 0:
        total_steps, max_epochs = cfg.max_steps, -(-cfg.max_steps // steps_per_epoch)
    else:
        total_steps, max_epochs = cfg.epochs * steps_per_epoch, cfg.epochs
    schedule = build_scheduler(run.scheduler, optimizer, steps_per_epoch, total_steps, run.optim.lr, mode)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None

    def compiled(module):
        return CompiledForward(module, cfg.compile_backend, cfg.compile_mode) if cfg.compile else module

    wrapped = dist.wrap(model)  # DDP for training steps only; the model itself in one process
    forward = compiled(model)
    train_forward = forward if wrapped is model else compiled(wrapped)  # compile DDP, not inside it
    return Parts(
        run,
        cfg,
        device,
        dist,
        data,
        meta,
        task,
        monitor,
        mode,
        model,
        forward,
        train_forward,
        batches,
        (data.x_val.to(device), data.y_val.to(device)),
        optimizer,
        schedule,
        autocast_for(cfg.precision, device),
        scaler,
        total_steps,
        max_epochs,
    )

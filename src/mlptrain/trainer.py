"""The training loop: fit on train, select on val, test once on the best weights.

Metrics stay on the device during an epoch and are read back once per epoch,
so the hot loop does no host-device synchronisation and no per-step logging.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mlptrain import checkpoint
from mlptrain.batches import DeviceBatches, eval_batches
from mlptrain.config import ConfigError, RunConfig
from mlptrain.data import DataBundle, load_dataset
from mlptrain.distributed import Dist, Silent
from mlptrain.losses import Task, build_task, monitor_of
from mlptrain.models import build_model, count_parameters
from mlptrain.optim import build_optimizer, build_scheduler, grad_norm
from mlptrain.progress import Progress

log = logging.getLogger("mlptrain")


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must see (divergence): one line."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device: {name} requested but CUDA is not available here; valid: auto, cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device: {name} does not exist; {torch.cuda.device_count()} CUDA device(s) here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device: mps requested but not available here; valid: auto, cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def write_json(path: Path, data: dict) -> None:
    checkpoint.atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


@dataclass
class State:
    """Everything the loop mutates; saved in checkpoints so resume is exact."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs without improvement (early stopping)
    history: list = field(default_factory=list)
    train_time: float = 0.0


class Trainer:
    def __init__(self, run: RunConfig, out_dir: Path, hparams: dict | None = None, data: DataBundle | None = None):
        self.run, self.cfg, self.out_dir = run, run.trainer, Path(out_dir)
        self.hparams = hparams or {}
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        device = resolve_device(self.cfg.device)  # a bad device fails on every rank before they connect
        self.dist = Dist.setup()  # one process, or this rank of a DDP job
        self.device = self.dist.place(device)
        seed_everything(run.seed)

        self.data = data if data is not None else load_dataset(run.dataset)
        self.meta = self.data.meta()
        self.task: Task = build_task(run.loss, self.meta, self.data.y_mean, self.data.y_std)
        self.monitor, self.mode = monitor_of(self.task, self.cfg.monitor, self.cfg.mode)
        self.model = build_model(run.model, self.meta, self.data.x_mean, self.data.x_std, self.task.head,
                                 self.task.head_width).to(self.device)
        self.train_batches = DeviceBatches(self.data.x_train, self.data.y_train, self.cfg.batch_size,
                                           run.seed, self.device, rank=self.dist.rank, world=self.dist.world)
        self.val = (self.data.x_val.to(self.device), self.data.y_val.to(self.device))
        self.optimizer = build_optimizer(run.optim, self.model, self.device)
        steps_per_epoch = len(self.train_batches)
        self.total_steps = self.cfg.max_steps if self.cfg.max_steps > 0 else self.cfg.epochs * steps_per_epoch
        self.schedule = build_scheduler(run.scheduler, self.optimizer, steps_per_epoch, self.total_steps,
                                        run.optim.lr, self.mode)
        self.autocast, self.scaler = self._precision()
        self.forward = self._compile() if self.cfg.compile else self.model
        self.train_forward = self.dist.wrap(self.forward)  # DDP for training steps only
        self.state = State()
        self.best_weights = None

    # --------------------------------------------------------------------------- set-up
    def _precision(self):
        p, dev = self.cfg.precision, self.device.type
        if p == "fp32":
            return nullcontext, None
        dtype = torch.bfloat16 if p == "bf16" else torch.float16
        if dev == "cuda" and p == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("trainer.precision: bf16 is not supported by this GPU; valid here: fp32, fp16")
        scaler = torch.amp.GradScaler(dev) if p == "fp16" else None
        return (lambda: torch.autocast(dev, dtype=dtype)), scaler

    def _compile(self):
        try:
            return torch.compile(self.model)
        except Exception as e:  # e.g. no C++ compiler: say so, then train uncompiled
            log.warning("trainer.compile: torch.compile unavailable (%s); training without it", str(e).splitlines()[0])
            return self.model

    # --------------------------------------------------------------------------- evaluation
    @torch.inference_mode()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.model.eval()
        xs = self.dist.split(x)  # DDP: this rank's rows; the outputs of all rows are gathered below
        with self.autocast():
            out = torch.cat([self.forward(xb) for xb, _ in eval_batches(xs, xs, self.cfg.eval_batch_size)])
        return self.task.metrics(self.dist.gather(out, len(x)), y)

    def _improved(self, value: float) -> bool:
        best = self.state.best_value
        if best is None:
            return True
        delta = self.cfg.early_stopping.min_delta
        return value < best - delta if self.mode == "min" else value > best + delta

    # --------------------------------------------------------------------------- the loop
    def train_epoch(self, progress: Progress) -> dict[str, float]:
        self.model.train()
        batches = self.train_batches
        n_steps = len(batches)
        if self.cfg.max_steps > 0:
            n_steps = min(n_steps, self.cfg.max_steps - self.state.step)
        losses = torch.zeros(n_steps, device=self.device)  # per-step losses, read once at the end
        correct = torch.zeros((), device=self.device)
        classification = self.task.task == "classification"
        clip = self.cfg.grad_clip
        pre_clip_norm = torch.zeros((), device=self.device)
        for i, (xb, yb) in enumerate(batches.epoch()):
            if i >= n_steps:
                break
            with self.autocast():
                out = self.train_forward(xb)
                loss = self.task.loss(out, yb)
                if batches.share != 1.0:  # DDP: this rank's part of an unevenly split global batch
                    loss = loss * batches.share
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if clip > 0:
                pre_clip_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            if self.cfg.nan_policy == "skip_batch" and not torch.isfinite(self.dist.global_loss(loss)):
                losses[i] = float("nan")
                continue  # an explicit per-step check: the user asked to skip bad batches
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.schedule.step_batch()
            losses[i] = loss.detach()
            if classification:
                correct += (self._predicted_class(out) == yb).sum()
            self.state.step += 1
            progress.step(i + 1, n_steps)
        losses, correct = self.dist.epoch_totals(losses, correct)
        self._check_finite(losses)
        finite = losses[torch.isfinite(losses)]
        stats = {"loss": finite.mean().item() if len(finite) else float("nan")}
        if classification:
            stats["acc"] = correct.item() / max(1, min(n_steps * batches.batch_size, len(batches.x)))
        if clip > 0:
            stats["grad_norm"] = float(pre_clip_norm)
        return stats

    def _predicted_class(self, out):
        return (out[:, 0] > 0).long() if self.task.loss_name == "bce" else out.argmax(1)

    def _check_finite(self, losses: torch.Tensor) -> None:
        if self.cfg.nan_policy == "skip_batch":
            if not torch.isfinite(losses).any():
                raise TrainingError(f"every batch of epoch {self.state.epoch + 1} gave a non-finite loss")
            return
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            i = int(bad[0])
            good = losses[:i]
            last = f"{good[-1].item():.4g}" if len(good) else "none this epoch"
            lr = self.optimizer.param_groups[0]["lr"]
            step = self.state.step - len(losses) + i + 1
            raise TrainingError(
                f"loss became non-finite at epoch {self.state.epoch + 1}, step {step} (lr {lr:.3g}, last finite loss "
                f"{last}); the last good checkpoint is kept. Lower optim.lr, set trainer.grad_clip, "
                f"or set trainer.nan_policy=skip_batch")

    def fit(self) -> dict:
        cfg, state = self.cfg, self.state
        if cfg.resume:
            self._resume(cfg.resume)
        self.dist.seed(self.run.seed, state.epoch)
        tb = self._tensorboard()
        progress = Progress(cfg.progress if self.dist.is_main else "none", cfg.epochs)
        steps_per_epoch = len(self.train_batches)
        log.info("model %s: %s parameters on %s\n%s", self.run.model.name, f"{count_parameters(self.model):,}",
                 self.device, self.model)
        log.info("data %s: %d train / %d val / %d test, task %s, monitor val/%s (%s)", self.meta["name"],
                 *self.meta["sizes"].values(), self.task.kind, self.monitor, self.mode)
        stop_reason = "completed"
        while state.epoch < cfg.epochs and (cfg.max_steps < 0 or state.step < cfg.max_steps):
            progress.start_epoch(state.epoch + 1)
            t0 = time.perf_counter()
            try:
                train = self.train_epoch(progress)
            except TrainingError:
                progress.close()
                self._write_metrics("diverged")
                tb.close()
                raise
            dt = time.perf_counter() - t0
            state.train_time += dt
            val = self.evaluate(*self.val)
            state.epoch += 1
            lr = self.optimizer.param_groups[0]["lr"]
            self.schedule.step_epoch(val[self.monitor])
            improved = self._improved(val[self.monitor])
            if improved:
                state.best_value, state.best_epoch, state.bad_epochs = val[self.monitor], state.epoch, 0
                self.best_weights = copy.deepcopy(self.model.state_dict())
            else:
                state.bad_epochs += 1
            n_seen = min(steps_per_epoch * cfg.batch_size, len(self.data.y_train))
            row = {"epoch": state.epoch, "step": state.step, "lr": lr, "time_s": dt, "samples_per_s": n_seen / dt,
                   **{f"train/{k}": v for k, v in train.items()}, **{f"val/{k}": v for k, v in val.items()}}
            state.history.append(row)
            tb.scalars({k: v for k, v in row.items() if "/" in k}, state.epoch)
            tb.scalars({"lr": lr, "throughput/samples_per_s": row["samples_per_s"]}, state.epoch)
            progress.end_epoch(self._epoch_line(row, improved))
            if cfg.checkpoint:
                self._save("last.pt")
                if improved:
                    self._save("best.pt")
            self._write_metrics("running")
            if cfg.early_stopping.enabled and state.bad_epochs >= cfg.early_stopping.patience:
                stop_reason = "early_stopped"
                log.info("early stopping: val/%s has not improved for %d epochs (best %.4g at epoch %d)",
                         self.monitor, state.bad_epochs, state.best_value, state.best_epoch)
                break
        progress.close()
        test = self._test()
        result = self._write_metrics(stop_reason, test)
        tb.hparams_end({f"hparam/{k}": v for k, v in self._final_scalars(test).items()}, state.epoch)
        tb.close()
        log.info("test: %s (weights of epoch %d)", _fmt(test), state.best_epoch)
        return result

    def _epoch_line(self, row: dict, improved: bool) -> str:
        keys = ["train/loss", "train/acc", "val/loss", f"val/{self.monitor}"]
        parts = [f"{k} {row[k]:.4f}" for k in dict.fromkeys(keys) if k in row]
        star = " *" if improved else ""
        return (f"epoch {row['epoch']:>3}/{self.cfg.epochs}  " + "  ".join(parts)
                + f"  lr {row['lr']:.2e}  {row['time_s']:.2f}s{star}")

    def _test(self) -> dict[str, float]:
        """Test once, on the weights of the best validation epoch."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        return self.evaluate(self.data.x_test.to(self.device), self.data.y_test.to(self.device))

    def _final_scalars(self, test: dict) -> dict[str, float]:
        out = {f"best_val_{self.monitor}": self.state.best_value if self.state.best_value is not None else math.nan}
        out.update({f"test_{k}": v for k, v in test.items()})
        out["train_time_s"] = self.state.train_time
        return out

    def metric_tags(self) -> list[str]:
        names = {"classification": ["loss", "acc", "nll", "ece"], "regression": ["loss", "rmse", "mae", "r2"],
                 "probabilistic": ["loss", "rmse", "mae", "r2", "nll", "coverage95"]}[self.task.kind]
        return ([f"hparam/best_val_{self.monitor}"] + [f"hparam/test_{n}" for n in names] + ["hparam/train_time_s"])

    # --------------------------------------------------------------------------- outputs
    def _tensorboard(self):
        from mlptrain.tb import TensorBoard

        if not self.dist.is_main:  # only rank 0 writes events, checkpoints and metrics
            return Silent()
        resuming = self.state.epoch > 0
        tb = TensorBoard(self.out_dir, purge_step=self.state.epoch + 1 if resuming else None)
        if not resuming:
            tb.text("config", "```\n" + json.dumps(self.run.raw, indent=2) + "\n```")
            tb.hparams_start(self.hparams, self.metric_tags())
        return tb

    def _write_metrics(self, status: str, test: dict | None = None) -> dict:
        s = self.state
        best = next((r for r in s.history if r["epoch"] == s.best_epoch), {})
        result = {
            "status": status,
            "objective": s.best_value,
            "monitor": f"val/{self.monitor}",
            "mode": self.mode,
            "best_epoch": s.best_epoch,
            "best": {k: v for k, v in best.items() if k.startswith("val/")},
            "final": s.history[-1] if s.history else {},
            "test": test or {},
            "epochs": s.epoch,
            "steps": s.step,
            "train_time_s": s.train_time,
            "parameters": count_parameters(self.model),
            "history": s.history,
        }
        if self.dist.is_main:
            write_json(self.out_dir / "metrics.json", result)
        return result

    def _save(self, name: str) -> None:
        if not self.dist.is_main:
            return
        s = self.state
        checkpoint.save(self.out_dir / name, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "epoch": s.epoch,
            "step": s.step,
            "best": {"metric": f"val/{self.monitor}", "mode": self.mode, "value": s.best_value, "epoch": s.best_epoch},
            "early_stopping": {"bad_epochs": s.bad_epochs},
            "history": s.history,
            "train_time_s": s.train_time,
            "config": self.run.raw,
            "data": self.meta,
            "versions": checkpoint.versions(),
            "rng": {"torch": torch.get_rng_state(), "data_order": self.train_batches.generator.get_state(),
                    "python": list(random.getstate()[1]), "python_version": random.getstate()[0]},
        })

    def _resume(self, where: str) -> None:
        ckpt = checkpoint.load(where)
        mismatch = _incompatible(ckpt["config"], self.run.raw)
        if mismatch:
            raise ConfigError(f"trainer.resume: {where} was trained with a different {mismatch}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        s = self.state
        s.epoch, s.step, s.history, s.train_time = ckpt["epoch"], ckpt["step"], ckpt["history"], ckpt["train_time_s"]
        s.best_value, s.best_epoch = ckpt["best"]["value"], ckpt["best"]["epoch"]
        s.bad_epochs = ckpt["early_stopping"]["bad_epochs"]
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        self.train_batches.generator.set_state(rng["data_order"])
        random.setstate((rng["python_version"], tuple(rng["python"]), None))
        best = Path(where) / "best.pt" if Path(where).is_dir() else Path(where).with_name("best.pt")
        if best.is_file():
            self.best_weights = checkpoint.load(best)["model"]
        log.info("resumed from %s at epoch %d, step %d", where, s.epoch, s.step)


def _incompatible(old: dict, new: dict) -> str | None:
    """Name the first setting that makes a checkpoint unusable for this run, if any."""
    for group in ("model", "dataset", "loss"):
        if old.get(group) != new.get(group):
            a, b = old.get(group) or {}, new.get(group) or {}
            diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            return f"{group} ({', '.join(f'{group}.{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in diff[:3])})"
    return None


def _fmt(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())




"""The training loop: fit on train, select on val, test once on the best weights.

Metrics stay on the device during an epoch and are read back once per epoch,
so the hot loop does no host-device synchronisation and no per-step logging.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import socket
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mlptrain import checkpoint, signals
from mlptrain.accel import CompiledForward, autocast_for, model_outputs, resolve_device
from mlptrain.batches import DeviceBatches
from mlptrain.compose import resume_command
from mlptrain.config import RunConfig
from mlptrain.data import load_dataset
from mlptrain.data.bundle import DataBundle
from mlptrain.errors import Abort, CheckpointError, ConfigError, TrainingError, TrainingInterrupted
from mlptrain.files import remove_stale_temps, write_json
from mlptrain.losses import Task, build_task, monitor_of
from mlptrain.model import build_model, count_parameters
from mlptrain.optim import build_optimizer, build_scheduler
from mlptrain.parallel.collectives import Dist
from mlptrain.progress import Progress


log = logging.getLogger("mlptrain")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class State:
    """Everything the loop mutates; saved in checkpoints so resume is exact."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs without an improvement of at least min_delta (early stopping)
    stop_best: float | None = None  # early stopping's reference value (moves only by >= min_delta)
    history: list = field(default_factory=list)
    train_time: float = 0.0


@dataclass
class MidEpoch:
    """Where an epoch stands between two steps: its order, the next batch, and the device-side
    accumulators, so a run resumed from a mid-epoch checkpoint replays the rest exactly."""

    order: torch.Tensor | None  # None: draw a fresh permutation (a new epoch)
    batch: int  # index of the next batch
    n_steps: int  # batches this epoch will take
    start_step: int  # state.step when the epoch began
    losses: torch.Tensor
    correct: torch.Tensor
    norms: torch.Tensor  # pre-clip gradient norms (grad_clip > 0)
    step_lrs: list = field(default_factory=list)  # a per-step schedule's lrs so far this epoch
    elapsed: float = 0.0  # seconds of this epoch already spent before the checkpoint


class Trainer:
    def __init__(self, run: RunConfig, out_dir: Path, hparams: dict | None = None, data: DataBundle | None = None,
                 overrides: list[str] | None = None):
        self.run, self.cfg, self.out_dir = run, run.trainer, Path(out_dir)
        self.hparams = hparams or {}
        self.overrides = list(overrides or [])  # the command line's overrides: a resume starts from them
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        device = resolve_device(self.cfg.device)  # a bad device fails on every rank before they connect
        self.dist = Dist.setup()  # one process, or this rank of a DDP job
        self.device = self.dist.place(device)
        seed_everything(run.seed)

        self.data = data if data is not None else load_dataset(run.dataset)
        self.meta = self.data.meta()
        self.task: Task = build_task(run.loss, self.meta, self.data.y_mean, self.data.y_std,
                                     targets=(self.data.y_train, self.data.y_val, self.data.y_test))
        self.monitor, self.mode = monitor_of(self.task, self.cfg.monitor, self.cfg.mode)
        self.model = build_model(run.model, self.meta, self.data.x_mean, self.data.x_std, self.task.head,
                                 self.task.head_width).to(self.device)
        self.train_batches = DeviceBatches(self.data.x_train, self.data.y_train, self.cfg.batch_size,
                                           run.seed, self.device, rank=self.dist.rank, world=self.dist.world)
        self.val = (self.data.x_val.to(self.device), self.data.y_val.to(self.device))
        self.optimizer = build_optimizer(run.optim, self.model)
        steps_per_epoch = len(self.train_batches)
        # trainer.max_steps > 0 replaces trainer.epochs: train exactly that many steps (the last
        # epoch may be partial), and schedules that span the run are sized to it.
        if self.cfg.max_steps > 0:
            self.total_steps = self.cfg.max_steps
            self.max_epochs = -(-self.cfg.max_steps // steps_per_epoch)
        else:
            self.total_steps = self.cfg.epochs * steps_per_epoch
            self.max_epochs = self.cfg.epochs
        self.schedule = build_scheduler(run.scheduler, self.optimizer, steps_per_epoch, self.total_steps,
                                        run.optim.lr, self.mode)
        self.autocast, self.scaler = self._precision()
        compiled = self._compile if self.cfg.compile else (lambda module: module)
        wrapped = self.dist.wrap(self.model)  # DDP for training steps only; the model itself in one process
        self.forward = compiled(self.model)
        self.train_forward = self.forward if wrapped is self.model else compiled(wrapped)  # compile DDP, not inside it
        self.state = State()
        self.best_weights = None
        self.last_outputs: tuple[torch.Tensor, torch.Tensor] | None = None  # (inputs, outputs) of the last evaluate
        self.test: tuple[torch.Tensor, torch.Tensor] | None = None  # the test split on the device, once tested
        self._mid: MidEpoch | None = None  # set by a resume from a mid-epoch checkpoint
        self._resumed = False
        self._resumed_saved_at: float | None = None  # wall time of the resumed checkpoint (the loggers' cut)
        self._last_saved: str | None = None  # the newest last.pt, for messages
        self._stop = signals.GracefulStop()  # installed by fit(); read once per step
        self._epoch_t0 = 0.0

    # --------------------------------------------------------------------------- set-up
    def _precision(self):
        p, dev = self.cfg.precision, self.device.type
        scaler = torch.amp.GradScaler(dev) if p == "fp16" else None
        return autocast_for(p, self.device), scaler

    def _compile(self, module):
        return CompiledForward(module, self.cfg.compile_backend, self.cfg.compile_mode)

    # --------------------------------------------------------------------------- evaluation
    @torch.inference_mode()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, calibrate: bool = False) -> dict[str, float]:
        """Metrics of one split; ``calibrate`` (validation only) first refits a point regressor's noise spread."""
        self.model.eval()
        xs = self.dist.split(x)  # DDP: this rank's rows; the outputs of all rows are gathered below
        out = self.dist.gather(model_outputs(self.forward, xs, self.cfg.eval_batch_size, self.autocast), len(x)).float()
        self.last_outputs = (x, out)  # the diagnostics' pictures of this split reuse them
        if calibrate:
            self.task.calibrate(out, y)
        return self.task.metrics(out, y)

    def _improved(self, value: float, best: float | None, delta: float = 0.0) -> bool:
        if best is None:
            return True
        return value < best - delta if self.mode == "min" else value > best + delta

    # --------------------------------------------------------------------------- the loop
    def train_epoch(self, progress: Progress) -> dict[str, float]:
        self.model.train()
        batches = self.train_batches
        mid, self._mid = self._mid, None  # a mid-epoch checkpoint being resumed, or a fresh epoch
        if mid is None:
            n_steps = len(batches)
            if self.cfg.max_steps > 0:
                n_steps = min(n_steps, self.cfg.max_steps - self.state.step)
            clip = self.cfg.grad_clip
            # per-step losses and pre-clip norms, read once at the end
            mid = MidEpoch(None, 0, n_steps, self.state.step, torch.zeros(n_steps, device=self.device),
                           torch.zeros((), device=self.device),
                           torch.zeros(n_steps if clip > 0 else 0, device=self.device))
        else:
            self.schedule.step_lrs = mid.step_lrs
        n_steps, losses, correct, norms = mid.n_steps, mid.losses, mid.correct, mid.norms
        classification = self.task.task == "classification"
        clip = self.cfg.grad_clip
        every = self.cfg.checkpoint_every_n_steps if self.cfg.checkpoint else 0
        stop = self._stop
        for i, (xb, yb) in enumerate(batches.epoch(mid.batch, mid.order), mid.batch):
            if i >= n_steps:
                break
            with self.autocast():
                out = self.train_forward(xb)
            loss = self.task.loss(out.float(), yb)  # in fp32 at any precision (.float() is free on fp32)
            if batches.share != 1.0:  # DDP: this rank's part of an unevenly split global batch
                loss = loss * batches.share
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if clip > 0:
                norms[i] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            due = False
            if self.cfg.nan_policy == "skip_batch" and not torch.isfinite(self.dist.global_loss(loss)):
                losses[i] = float("nan")  # an explicit per-step check: the user asked to skip bad batches
                if self.scaler is not None:
                    self.scaler.update()  # close this step's unscale_, or the next one raises
            else:
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.schedule.step_batch()
                losses[i] = loss.detach()
                if classification:
                    correct += (self.task.predicted_class(out) == yb).sum()
                self.state.step += 1
                due = bool(every) and self.state.step % every == 0
            progress.step(i + 1, n_steps)
            # Python-side checks only; the epoch's last step is checkpointed by fit() after validation.
            stopping = self.dist.stop_together(stop.received is not None, i)  # DDP: all ranks after one step
            if (due or stopping) and i + 1 < n_steps:
                mid.order, mid.batch = batches.order, i + 1
                self._save_mid_epoch(mid)
                if stopping:
                    raise self._interrupted()
        losses, correct = self.dist.epoch_totals(losses, correct)
        self._check_finite(losses, mid.start_step)
        self._check_weights(losses)
        finite = losses[torch.isfinite(losses)]
        stats = {"loss": finite.mean().item() if len(finite) else float("nan")}
        # rows this epoch went through (all ranks): fewer than the split when max_steps ends it early
        size, n = self.cfg.batch_size, len(self.data.y_train)
        self._epoch_rows = min(n_steps * size, n)
        if classification:  # over the rows of the batches it trained on: a skipped batch counts no rows
            skipped = (~torch.isfinite(losses)).nonzero().flatten().tolist() if self.cfg.nan_policy == "skip_batch" else []
            trained = self._epoch_rows - sum(min((i + 1) * size, n) - i * size for i in skipped)
            stats["acc"] = correct.item() / max(1, trained)
        if clip > 0:
            stats.update(self._clip_stats(norms, clip))
        return stats

    @staticmethod
    def _clip_stats(norms: torch.Tensor, clip: float) -> dict[str, float]:
        """The epoch's pre-clip global gradient norms: mean, max and the fraction of steps clipped."""
        norms = norms[torch.isfinite(norms)]  # fp16 overflow steps are skipped by the scaler anyway
        if not len(norms):
            return {"grad_norm": math.nan, "grad_norm_max": math.nan, "clip_frac": math.nan}
        mean, peak, frac = torch.stack([norms.mean(), norms.max(), (norms > clip).float().mean()]).tolist()
        return {"grad_norm": mean, "grad_norm_max": peak, "clip_frac": frac}

    def _save_mid_epoch(self, mid: MidEpoch) -> None:
        """last.pt between two steps; never a non-finite state (that is a divergence instead)."""
        if not self.cfg.checkpoint:
            return
        losses, correct = self.dist.epoch_totals(mid.losses, mid.correct)  # DDP: the global batches' values
        done = losses[:mid.batch]
        self._check_finite(done, mid.start_step, epoch_end=False)
        self._check_weights(done)
        self._save("last.pt", mid_epoch={
            "order": mid.order.cpu(), "batch": mid.batch, "n_steps": mid.n_steps, "start_step": mid.start_step,
            "losses": losses.cpu(), "correct": correct.cpu(), "norms": mid.norms.cpu(),
            "step_lrs": list(self.schedule.step_lrs), "elapsed": time.perf_counter() - self._epoch_t0})

    def _check_finite(self, losses: torch.Tensor, start_step: int, epoch_end: bool = True) -> None:
        if self.cfg.nan_policy == "skip_batch":
            if epoch_end and not torch.isfinite(losses).any():
                raise TrainingError(f"every batch of epoch {self.state.epoch + 1} gave a non-finite loss; "
                                    + self._kept())
            return
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            i = int(bad[0])
            good = losses[:i]
            last = f"{good[-1].item():.4g}" if len(good) else "none this epoch"
            lr = self._step_lr(i)
            raise TrainingError(
                f"loss became non-finite at epoch {self.state.epoch + 1}, step {start_step + i + 1} (lr {lr:.3g}, "
                f"last finite loss {last}); {self._kept()}. Lower optim.lr, set trainer.grad_clip, "
                f"or set trainer.nan_policy=skip_batch")

    def _check_weights(self, losses: torch.Tensor) -> None:
        """A finite loss can still be followed by an update to inf/NaN weights: check them before a
        checkpoint is written (one reduction, at most once per epoch or per checkpoint)."""
        tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        if not tensors or bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
            return
        finite = losses[torch.isfinite(losses)]
        last = f"{finite[-1].item():.4g}" if len(finite) else "none this epoch"
        lr = self._step_lr()
        raise TrainingError(
            f"weights became non-finite in epoch {self.state.epoch + 1}, by step {self.state.step} (lr {lr:.3g}, "
            f"last finite loss {last}); {self._kept()}. Lower optim.lr or set trainer.grad_clip")

    def _check_val(self, val: dict, train: dict) -> None:
        """Finite but huge weights can still overflow the forward pass: a model whose validation loss
        is not finite has diverged, and is not checkpointed."""
        if math.isfinite(val["loss"]):
            return
        lr = self._step_lr()
        raise TrainingError(
            f"validation loss became non-finite after epoch {self.state.epoch + 1}, step {self.state.step} "
            f"(lr {lr:.3g}, train loss {train['loss']:.4g}); {self._kept()}. Lower optim.lr or set trainer.grad_clip")

    def _step_lr(self, i: int = -1) -> float:
        """The lr step i of this epoch used (default: the last step taken), for divergence messages: a
        per-step schedule has already moved the optimizer's lr on to the next step's."""
        lrs = self.schedule.step_lrs
        if lrs:
            return lrs[i] if -len(lrs) <= i < len(lrs) else lrs[-1]
        return self.optimizer.param_groups[0]["lr"]

    def _kept(self) -> str:
        if self._last_saved:
            return f"the last good checkpoint is kept: {self._last_saved}"
        return "no checkpoint had been written yet"

    def _interrupted(self) -> TrainingInterrupted:
        name, s = self._stop.name, self.state
        if self._last_saved:
            msg = (f"interrupted by {name} after step {s.step}; saved {self._last_saved}; "
                   f"resume with: {resume_command(self.out_dir)}")
        else:
            msg = f"interrupted by {name} after step {s.step}; no checkpoint written (trainer.checkpoint=false)"
        return TrainingInterrupted(msg, self._stop.exit_code)

    def fit(self) -> dict:
        with self._stop:  # SIGINT/SIGTERM: finish the step, write last.pt, exit 128 + signum
            try:
                return self._fit()
            except Abort as e:  # a second signal: leave now; atomic writes keep the files whole
                last = self.out_dir / "last.pt"
                then = f"; resume from the last checkpoint with: {resume_command(self.out_dir)}" if last.is_file() else ""
                raise Abort(e.signum, f"{e}{then}") from None

    def _fit(self) -> dict:
        cfg, state = self.cfg, self.state
        if cfg.resume:
            self._resume(cfg.resume)
            finished = self._already_finished()
            if finished is not None:
                return finished
        self.dist.seed(self.run.seed, state.epoch)
        loggers = self._loggers()
        diagnostics = self._diagnostics(loggers) if self.dist.is_main else None  # rank 0 draws and writes
        loggers.flush()  # the run's header (config, hparams, epoch-0 pictures) is on disk before any checkpoint
        progress = Progress(cfg.progress if self.dist.is_main else "none", self.max_epochs)
        log.info("model %s: %s parameters on %s\n%s", self.run.model.name, f"{count_parameters(self.model):,}",
                 self.device, self.model)
        log.info("data %s: %d train / %d val / %d test, task %s, monitor val/%s (%s)", self.meta["name"],
                 *self.meta["sizes"].values(), self.task.kind, self.monitor, self.mode)
        stop_reason = "early_stopped" if self._resumed and self._early_stop_due() else "completed"
        while (stop_reason == "completed" and state.epoch < self.max_epochs
               and (cfg.max_steps < 0 or state.step < cfg.max_steps)):
            progress.start_epoch(state.epoch + 1)
            # time already spent in this epoch before a mid-epoch checkpoint counts too
            self._epoch_t0 = time.perf_counter() - (self._mid.elapsed if self._mid is not None else 0.0)
            try:
                # arrived while validating or saving (on any rank): last.pt is already current
                if self.dist.any(self._stop.received is not None):
                    raise self._interrupted()
                train = self.train_epoch(progress)
                dt = time.perf_counter() - self._epoch_t0
                val = self.evaluate(*self.val, calibrate=True)
                self._check_val(val, train)
            except TrainingError as e:
                progress.close()
                self._write_metrics("interrupted" if isinstance(e, TrainingInterrupted) else "diverged")
                loggers.close()
                raise
            state.train_time += dt
            state.epoch += 1
            step_lrs = self.schedule.drain_step_lrs()  # per-step schedules: the lr of every step
            lr = step_lrs[-1] if step_lrs else self.optimizer.param_groups[0]["lr"]  # the lr this epoch ended on
            value = val[self.monitor]
            self.schedule.step_epoch(value)
            improved = self._improved(value, state.best_value)  # any improvement keeps the weights
            if improved:
                state.best_value, state.best_epoch = value, state.epoch
                self.best_weights = copy.deepcopy(self.model.state_dict())
            if self._improved(value, state.stop_best, cfg.early_stopping.min_delta):
                state.stop_best, state.bad_epochs = value, 0
            else:
                state.bad_epochs += 1
            row = {"epoch": state.epoch, "step": state.step, "lr": lr, "time_s": dt,
                   "samples_per_s": self._epoch_rows / dt,
                   **{f"train/{k}": v for k, v in train.items()}, **{f"val/{k}": v for k, v in val.items()}}
            state.history.append(row)
            loggers.epoch(row)  # TensorBoard: train/*, val/*, lr, throughput at the epoch; CSV: one row
            loggers.series("lr/step", step_lrs, state.step - len(step_lrs) + 1)
            progress.end_epoch(self._epoch_line(row, improved))
            if diagnostics:
                diagnostics.epoch_end(state.epoch)
            if cfg.checkpoint:
                loggers.flush()  # the logs up to this checkpoint are on disk: a resume keeps exactly those
                if improved:  # best.pt first: last.pt (which carries the best weights too) is the resume point
                    self._save("best.pt", also="last.pt")  # the same bytes: linked, not serialised twice
                else:
                    self._save("last.pt")
            self._write_metrics("running")
            if self._early_stop_due():
                stop_reason = "early_stopped"
                log.info("early stopping: val/%s has not improved by more than %g for %d epochs "
                         "(best %.4g at epoch %d)", self.monitor, cfg.early_stopping.min_delta, state.bad_epochs,
                         state.best_value, state.best_epoch)
                break
        progress.close()
        if diagnostics:
            diagnostics.epoch_end(state.epoch, last=True)
        test = self._test()
        if diagnostics:
            diagnostics.test_end(state.epoch)
        loggers.hparams_end({f"hparam/{k}": v for k, v in self._final_scalars(test).items()}, state.epoch)
        loggers.close()
        result = self._write_metrics(stop_reason, test)  # last: a "completed" metrics.json means all is written
        log.info("test: %s (weights of epoch %d)", _fmt(test), state.best_epoch)
        return result

    def _early_stop_due(self) -> bool:
        return self.cfg.early_stopping.enabled and self.state.bad_epochs >= self.cfg.early_stopping.patience

    def _already_finished(self) -> dict | None:
        """Resuming a run that had already finished: report its results instead of running again."""
        s, cfg = self.state, self.cfg
        done = s.epoch >= self.max_epochs or (cfg.max_steps > 0 and s.step >= cfg.max_steps) or self._early_stop_due()
        path = self.out_dir / "metrics.json"
        if not done or self._mid is not None or not path.is_file():
            return None
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if metrics.get("status") not in ("completed", "early_stopped") or metrics.get("steps") != s.step:
            return None  # it stopped between its last checkpoint and its results: finish them now
        log.info("nothing to resume: %s finished at epoch %d, step %d (raise trainer.epochs to train longer)",
                 self.out_dir, s.epoch, s.step)
        return metrics

    def _epoch_line(self, row: dict, improved: bool) -> str:
        keys = ["train/loss", "train/acc", "val/loss", f"val/{self.monitor}"]
        parts = [f"{k} {row[k]:.4f}" for k in dict.fromkeys(keys) if k in row]
        star = " *" if improved else ""
        return (f"epoch {row['epoch']:>3}/{self.max_epochs}  " + "  ".join(parts)
                + f"  lr {row['lr']:.2e}  {row['time_s']:.2f}s{star}")

    def _test(self) -> dict[str, float]:
        """Test once, on the weights of the best validation epoch."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        self.test = (self.data.x_test.to(self.device), self.data.y_test.to(self.device))
        return self.evaluate(*self.test)

    def _final_scalars(self, test: dict) -> dict[str, float]:
        out = {f"best_val_{self.monitor}": self.state.best_value if self.state.best_value is not None else math.nan}
        out.update({f"test_{k}": v for k, v in test.items()})
        out["train_time_s"] = self.state.train_time
        return out

    def metric_tags(self) -> list[str]:
        names = self.task.metric_names
        return ([f"hparam/best_val_{self.monitor}"] + [f"hparam/test_{n}" for n in names] + ["hparam/train_time_s"])

    # --------------------------------------------------------------------------- outputs
    def _loggers(self):
        """trainer.loggers as one; resuming in the run's own dir, each continues its log cut back to the
        checkpoint (what a stopped run logged after it is logged again), else starts one with the header."""
        from mlptrain.loggers import NullLogger, ResumePoint, build_loggers

        if not self.dist.is_main:  # only rank 0 writes events, checkpoints and metrics
            return NullLogger()
        s = self.state
        resume = ResumePoint(s.epoch, s.step, self._resumed_saved_at) if self._resumed else None
        return build_loggers(self.cfg.loggers, self.out_dir, resume, config=self.run.raw, hparams=self.hparams,
                             metric_tags=self.metric_tags())

    def _diagnostics(self, loggers):
        """Pictures and histograms at epoch ends (None when off or unlogged); epoch 0 = the initial weights."""
        from mlptrain.diagnostics import Diagnostics

        diagnostics = Diagnostics.for_trainer(self, loggers)
        if diagnostics and self.state.epoch == 0 and not self._resumed:  # a resumed run has them already
            diagnostics.epoch_end(0)
        return diagnostics

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
            # Where and how the job ran (sweeps: which node / worker process, threads per job).
            "runtime": {"host": socket.gethostname(), "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                        "device": str(self.device)},
            "history": s.history,
        }
        if self.dist.is_main:
            write_json(self.out_dir / "metrics.json", result)
        return result

    def _save(self, name: str, mid_epoch: dict | None = None, also: str | None = None) -> None:
        """Write checkpoint ``name``; ``also``: a second name for the same bytes (a hard link)."""
        s = self.state
        if not self.dist.is_main:  # rank 0 writes; the others' messages name its file
            self._note_saved(name, also, mid_epoch)
            return
        # last.pt alone must resume exactly, so it carries the best weights unless they are its own.
        best_model = None if (s.best_epoch == s.epoch and mid_epoch is None) else self.best_weights
        rng = {"torch": torch.get_rng_state(), "data_order": self.train_batches.generator.get_state(),
               "python": list(random.getstate()[1]), "python_version": random.getstate()[0]}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        path = self.out_dir / name
        checkpoint.save(path, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "epoch": s.epoch,
            "step": s.step,
            "best": {"metric": f"val/{self.monitor}", "mode": self.mode, "value": s.best_value, "epoch": s.best_epoch},
            "early_stopping": {"bad_epochs": s.bad_epochs, "best": s.stop_best},
            "history": s.history,
            "train_time_s": s.train_time,
            "config": self.run.raw,
            "overrides": self.overrides,
            "data": self.meta,
            "versions": checkpoint.versions(),
            "rng": rng,
            "best_model": best_model,
            "mid_epoch": mid_epoch,
            "saved_at": time.time(),  # after the events so far were flushed: a resume keeps exactly those
        })
        if also:
            checkpoint.duplicate(path, self.out_dir / also)
        self._note_saved(name, also, mid_epoch)

    def _note_saved(self, name: str, also: str | None, mid_epoch: dict | None) -> None:
        if "last.pt" in (name, also):
            s = self.state
            self._last_saved = f"{self.out_dir / 'last.pt'} ({_position(s.epoch, s.step, mid_epoch is not None)})"

    def _resume(self, where: str) -> None:
        ckpt = checkpoint.load(where)
        mismatch = _incompatible(ckpt.get("config") or {}, self.run.raw) or _data_differs(ckpt.get("data") or {},
                                                                                          self.meta)
        if mismatch:
            raise ConfigError(f"trainer.resume: {where} was trained with a different {mismatch}; resume with "
                              f"the run's own settings (start a new run to change them)")
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.schedule.load_state_dict(ckpt["scheduler"])
            if self.scaler is not None and ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            s = self.state
            s.epoch, s.step, s.history = ckpt["epoch"], ckpt["step"], ckpt["history"]
            s.train_time = ckpt["train_time_s"]
            s.best_value, s.best_epoch = ckpt["best"]["value"], ckpt["best"]["epoch"]
            s.bad_epochs = ckpt["early_stopping"]["bad_epochs"]
            s.stop_best = ckpt["early_stopping"].get("best", s.best_value)
            rng = ckpt["rng"]
            torch.set_rng_state(rng["torch"])
            self.train_batches.generator.set_state(rng["data_order"])
            random.setstate((rng["python_version"], tuple(rng["python"]), None))
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            best = ckpt.get("best_model")
            if best is not None:
                self.best_weights = {k: v.to(self.device) for k, v in best.items()}
            elif s.best_epoch and s.best_epoch == s.epoch:  # the checkpoint's own weights are the best
                self.best_weights = copy.deepcopy(self.model.state_dict())
            mid = ckpt.get("mid_epoch")
            if mid:
                d = self.device
                losses, correct = self.dist.resume_totals(mid["losses"].to(d), mid["correct"].to(d))
                self._mid = MidEpoch(mid["order"], mid["batch"], mid["n_steps"], mid["start_step"],
                                     losses, correct, mid["norms"].to(d), list(mid["step_lrs"]), mid["elapsed"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"trainer.resume: {where} does not fit this run: {first[:200]}") from None
        self._resumed = True
        self._resumed_saved_at = ckpt.get("saved_at")
        if self.dist.is_main:  # a SIGKILL during a write leaves one behind; only rank 0 writes here
            remove_stale_temps(self.out_dir)
        where_file = Path(where) / "last.pt" if Path(where).is_dir() else Path(where)
        self._last_saved = f"{where_file} ({_position(s.epoch, s.step, bool(mid))})"
        log.info("resumed from %s at epoch %d, step %d%s", where, s.epoch, s.step, ", mid-epoch" if mid else "")


# What a resume must not change: the saved weights, optimizer and schedule state, the order of the
# batches and the meaning of "best" all depend on them.
RESUME_FIXED = ("model", "dataset", "loss", "optim", "scheduler", "seed", "trainer.batch_size", "trainer.monitor",
                "trainer.mode")


def _incompatible(old: dict, new: dict) -> str | None:
    """Name the first setting that makes a checkpoint unusable for this run, if any."""
    for key in RESUME_FIXED:
        group, _, sub = key.partition(".")
        a, b = old.get(group), new.get(group)
        if sub:
            a, b = (a or {}).get(sub), (b or {}).get(sub)
        if a == b:
            continue
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a or {}, b or {}
            diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            return f"{key} ({', '.join(f'{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in diff[:3])})"
        return f"{key} ({key}: {a!r} -> {b!r})"
    return None


def _data_differs(old: dict, new: dict) -> str | None:
    """The data itself (a changed file, not a changed setting) must match as well."""
    for k in ("task", "in_features", "n_outputs", "class_names", "sizes"):
        if old.get(k) != new.get(k):
            return f"data ({k}: {old.get(k)!r} -> {new.get(k)!r})"
    return None


def _position(epoch: int, step: int, mid_epoch: bool) -> str:
    return f"epoch {epoch + 1}, step {step}, mid-epoch" if mid_epoch else f"end of epoch {epoch}, step {step}"


def _fmt(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())




"""The training loop: fit on train, select on val, test once on the best weights.

Metrics stay on the device during an epoch and are read back once per epoch,
so the hot loop does no host-device synchronisation and no per-step logging.
What it trains with is built by :mod:`~mlptrain.training.setup`; its state and checkpoints are
:mod:`~mlptrain.training.state`, its divergence checks :mod:`~mlptrain.training.guards`, and what it
reports goes through :mod:`~mlptrain.training.outputs`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mlptrain import signals
from mlptrain.accel import model_outputs
from mlptrain.compose import resume_command
from mlptrain.config import RunConfig
from mlptrain.data.bundle import DataBundle
from mlptrain.errors import Abort, TrainingError, TrainingInterrupted
from mlptrain.progress import Progress
from mlptrain.training.folds import write_val_predictions
from mlptrain.training.guards import Guards, clip_stats
from mlptrain.training.outputs import RunOutputs
from mlptrain.training.refit import refit
from mlptrain.training.setup import build
from mlptrain.training.state import Checkpoints, MidEpoch, State, already_finished, early_stop_due

log = logging.getLogger("mlptrain")
# Set by the Optuna sweeper around a trial run in this process: called after each epoch with the epoch and
# its val/<monitor>; True stops the run there, recorded as "pruned" (like early stopping).
epoch_hook: Callable[[int, float], bool] | None = None


class Trainer:
    def __init__(
        self,
        run: RunConfig,
        out_dir: Path,
        hparams: dict | None = None,
        data: DataBundle | None = None,
        overrides: list[str] | None = None,
    ):
        self.run, self.cfg, self.out_dir = run, run.trainer, Path(out_dir)
        self.parts = p = build(run, data)
        self.run, self.cfg = p.run, p.cfg  # with the trainer's auto sizes resolved for this data
        self.state = State()
        # the command line's overrides are saved with each checkpoint: a resume starts from them
        self.checkpoints = Checkpoints(p, self.out_dir, list(overrides or []))
        self.guards = Guards(p, self.state, self.checkpoints.kept)
        self.outputs = RunOutputs(p, self.state, self.out_dir, hparams or {})
        self.best_weights: dict | None = None
        self._mid: MidEpoch | None = None  # set by a resume from a mid-epoch checkpoint
        self._stop = signals.GracefulStop()  # installed by fit(); read once per step
        self._epoch_t0 = 0.0
        self._epoch_rows = 0  # rows the last epoch trained on (all ranks), for its throughput
        # Epoch-end checkpoints are throttled (trainer.checkpoint_interval_s): when the last was written,
        # whether the current state is unwritten, and an improved epoch's checkpoint held for best.pt.
        self._written_at = time.monotonic()
        self._unwritten = False
        self._best_snapshot: dict | None = None
        self.refit_epochs: int | None = None  # a refit (mlptrain.training.refit): stop here, keep the last weights

    def __getattr__(self, name: str):
        """The parts (model, optimizer, schedule, task, data, monitor, mode, ...) as the trainer's own
        attributes: diagnostics and tests read them."""
        parts = self.__dict__.get("parts")
        if parts is None or not hasattr(parts, name):
            raise AttributeError(name)
        return getattr(parts, name)

    # --------------------------------------------------------------------------- evaluation
    @torch.inference_mode()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, calibrate: bool = False) -> dict[str, float]:
        """Metrics of one split; ``calibrate`` (validation only) first refits a point regressor's noise spread."""
        return self.task.metrics(self.outputs_of(x, calibrate_on=y if calibrate else None), y)

    @torch.inference_mode()
    def outputs_of(self, x: torch.Tensor, calibrate_on: torch.Tensor | None = None) -> torch.Tensor:
        """The model's outputs on a whole split (every rank's rows, gathered); with ``calibrate_on`` (the
        split's targets), a point regressor's noise spread is first refitted on them (validation only)."""
        p = self.parts
        p.model.eval()
        xs = p.dist.split(x)  # DDP: this rank's rows; the outputs of all rows are gathered below
        out = p.dist.gather(model_outputs(p.forward, xs, self.cfg.eval_batch_size, p.autocast), len(x)).float()
        if calibrate_on is not None:
            p.task.calibrate(out, calibrate_on)
        return out

    def _improved(self, value: float, best: float | None, delta: float = 0.0) -> bool:
        if best is None:
            return True
        return value < best - delta if self.mode == "min" else value > best + delta

    # --------------------------------------------------------------------------- one epoch
    def train_epoch(self, progress: Progress) -> dict[str, float]:
        p, cfg, state = self.parts, self.cfg, self.state
        p.model.train()
        batches = p.train_batches
        mid, self._mid = self._mid, None  # a mid-epoch checkpoint being resumed, or a fresh epoch
        if mid is None:
            n_steps = len(batches)
            if cfg.max_steps > 0:
                n_steps = min(n_steps, cfg.max_steps - state.step)
            # per-step losses and pre-clip norms, read once at the end
            zeros = lambda n: torch.zeros(n, device=p.device)  # noqa: E731
            mid = MidEpoch(
                None, 0, n_steps, state.step, zeros(n_steps), zeros(()), zeros(n_steps if cfg.grad_clip > 0 else 0)
            )
        else:
            p.schedule.step_lrs = mid.step_lrs
        n_steps, losses, correct = mid.n_steps, mid.losses, mid.correct
        classification = p.task.task == "classification"
        every = cfg.checkpoint_every_n_steps if cfg.checkpoint else 0
        for i, (xb, yb) in enumerate(batches.epoch(mid.batch, mid.order), mid.batch):
            if i >= n_steps:
                break
            with p.autocast():
                out = p.train_forward(xb)
            loss = p.task.loss(out.float(), yb, batches.weights())  # fp32 at any precision (.float(): free on fp32)
            if batches.share != 1.0:  # DDP: this rank's part of an unevenly split global batch
                loss = loss * batches.share
            due = False
            if self._step(loss, mid.norms, i):
                losses[i] = loss.detach()
                if classification:
                    correct += (p.task.predicted_class(out) == yb).sum()
                state.step += 1
                due = bool(every) and state.step % every == 0
            else:
                losses[i] = float("nan")  # a skipped batch (trainer.nan_policy=skip_batch)
            progress.step(i + 1, n_steps)
            # Python-side checks only; the epoch's last step is checkpointed by fit() after validation.
            stopping = p.dist.stop_together(self._stop.received is not None, i)  # DDP: all ranks after one step
            if (due or stopping) and i + 1 < n_steps:
                mid.order, mid.batch = batches.order, i + 1
                self._save_mid_epoch(mid)
                if stopping:
                    raise self._interrupted()
        losses, correct = p.dist.epoch_totals(losses, correct)
        self.guards.check_finite(losses, mid.start_step)
        self.guards.check_weights(losses)
        finite = losses[torch.isfinite(losses)]
        stats = {"loss": finite.mean().item() if len(finite) else float("nan")}
        # rows this epoch went through (all ranks): fewer than the split when max_steps ends it early
        size, n = cfg.batch_size, len(p.data.y_train)
        self._epoch_rows = min(n_steps * size, n)
        if classification:  # over the rows of the batches it trained on: a skipped batch counts no rows
            skipped = (~torch.isfinite(losses)).nonzero().flatten().tolist() if cfg.nan_policy == "skip_batch" else []
            trained = self._epoch_rows - sum(min((i + 1) * size, n) - i * size for i in skipped)
            stats["acc"] = correct.item() / max(1, trained)
        if cfg.grad_clip > 0:
            stats.update(clip_stats(mid.norms, cfg.grad_clip))
        return stats

    def _step(self, loss: torch.Tensor, norms: torch.Tensor, i: int) -> bool:
        """Backward and the optimizer step (scaled for fp16, clipped); False when the batch is skipped."""
        p, clip = self.parts, self.cfg.grad_clip
        p.optimizer.zero_grad(set_to_none=True)
        if p.scaler is not None:
            p.scaler.scale(loss).backward()
            p.scaler.unscale_(p.optimizer)
        else:
            loss.backward()
        if clip > 0:
            norms[i] = torch.nn.utils.clip_grad_norm_(p.model.parameters(), clip)
        # an explicit per-step check (a device sync): only where the user asked to skip bad batches
        if self.cfg.nan_policy == "skip_batch" and not torch.isfinite(p.dist.global_loss(loss)):
            if p.scaler is not None:
                p.scaler.update()  # close this step's unscale_, or the next one raises
            return False
        if p.scaler is not None:
            p.scaler.step(p.optimizer)
            p.scaler.update()
        else:
            p.optimizer.step()
        p.schedule.step_batch()
        return True

    def _epoch_end_checkpoint(self, improved: bool, last: bool) -> None:
        """At an epoch's end: checkpoints and the running metrics.json, at most every
        ``trainer.checkpoint_interval_s`` seconds, and always after the last epoch or when a signal asks
        to stop. A short run (a small table: hundreds of epochs of milliseconds) so writes a few instead of
        one per epoch; resume stays exact, from whichever checkpoint was written last. An improved epoch
        that is not written now is held in memory and written as best.pt with the next write."""
        if improved:
            self._best_snapshot = None
        due = last or self._stop.received is not None
        if due or time.monotonic() - self._written_at >= self.cfg.checkpoint_interval_s:
            self._write_epoch_end(improved)
        else:
            self._unwritten = True
            if improved and self.cfg.checkpoint:
                self._best_snapshot = self.checkpoints.snapshot(self.state, self.best_weights)

    def _write_epoch_end(self, improved: bool) -> None:
        state, out = self.state, self.outputs
        if self.cfg.checkpoint and (improved or self._unwritten or self._best_snapshot is not None):
            out.before_checkpoint()
            if improved:  # best.pt first: last.pt (which carries the best weights too) is the resume point
                self.checkpoints.save("best.pt", state, self.best_weights, also="last.pt")  # linked, not copied
            else:
                self._write_best_snapshot()
                self.checkpoints.save("last.pt", state, self.best_weights)
        if improved or self._unwritten:
            out.write_metrics("running")
        self._unwritten, self._written_at = False, time.monotonic()

    def _write_best_snapshot(self) -> None:
        if self._best_snapshot is not None:
            self.checkpoints.save("best.pt", self.state, None, payload=self._best_snapshot)
            self._best_snapshot = None

    def _save_mid_epoch(self, mid: MidEpoch) -> None:
        """last.pt between two steps; never a non-finite state (that is a divergence instead)."""
        if not self.cfg.checkpoint:
            return
        self._write_best_snapshot()
        losses, correct = self.dist.epoch_totals(mid.losses, mid.correct)  # DDP: the global batches' values
        done = losses[: mid.batch]
        self.guards.check_finite(done, mid.start_step, epoch_end=False)
        self.guards.check_weights(done)
        self.checkpoints.save(
            "last.pt",
            self.state,
            self.best_weights,
            mid_epoch={
                "order": mid.order.cpu(),
                "batch": mid.batch,
                "n_steps": mid.n_steps,
                "start_step": mid.start_step,
                "losses": losses.cpu(),
                "correct": correct.cpu(),
                "norms": mid.norms.cpu(),
                "step_lrs": list(self.schedule.step_lrs),
                "elapsed": time.perf_counter() - self._epoch_t0,
            },
        )

    def _interrupted(self) -> TrainingInterrupted:
        name, s, saved = self._stop.name, self.state, self.checkpoints.last_saved
        if saved:
            msg = (
                f"interrupted by {name} after step {s.step}; saved {saved}; resume with: {resume_command(self.out_dir)}"
            )
        else:
            msg = f"interrupted by {name} after step {s.step}; no checkpoint written (trainer.checkpoint=false)"
        return TrainingInterrupted(msg, self._stop.exit_code)

    # --------------------------------------------------------------------------- the run
    def fit(self) -> dict:
        with self._stop:  # SIGINT/SIGTERM: finish the step, write last.pt, exit 128 + signum
            try:
                return self._fit()
            except Abort as e:  # a second signal, or one where no step is left to finish: leave now
                self.outputs.abandon()  # atomic writes keep the files whole; the logs are closed
                last = self.out_dir / "last.pt"
                resume = f"; resume from the last checkpoint with: {resume_command(self.out_dir)}"
                then = resume if last.is_file() and self.cfg.checkpoint else ""
                raise Abort(e.signum, f"{e}{then}") from None
            except BaseException:
                self.outputs.abandon()  # a write failure, a crash: the other logs are still closed
                raise

    def _fit(self) -> dict:
        cfg, state, p, out = self.cfg, self.state, self.parts, self.outputs
        resumed, saved_at = bool(cfg.resume), None
        self._stop.at_once = True  # start-up: nothing to save yet, a signal stops it at once
        if resumed:
            self.best_weights, self._mid, saved_at = self.checkpoints.resume(cfg.resume, state)
            finished = already_finished(p, state, self.out_dir) if self._mid is None else None
            if finished is not None:
                return finished
        p.dist.seed(self.run.seed, state.epoch)
        out.start(resumed, saved_at)
        stop_reason = "early_stopped" if resumed and early_stop_due(p, state) else "completed"
        if resumed and self._mid is None and state.history and epoch_hook is not None:  # pruned, then killed
            stop_reason = "pruned" if epoch_hook(state.epoch, state.history[-1][f"val/{p.monitor}"]) else stop_reason
        val_out = None
        self._stop.at_once = False  # training: the first signal is honoured after the current step
        while (
            stop_reason == "completed"
            and state.epoch < p.max_epochs
            and (cfg.max_steps < 0 or state.step < cfg.max_steps)
            and (self.refit_epochs is None or state.epoch < self.refit_epochs)
        ):
            out.progress.start_epoch(state.epoch + 1)
            # time already spent in this epoch before a mid-epoch checkpoint counts too
            self._epoch_t0 = time.perf_counter() - (self._mid.elapsed if self._mid is not None else 0.0)
            try:
                # arrived while validating or saving (on any rank): last.pt is made current first
                if p.dist.any(self._stop.received is not None):
                    self._write_epoch_end(improved=False)
                    raise self._interrupted()
                train = self.train_epoch(out.progress)
                dt = time.perf_counter() - self._epoch_t0
                signals.pause("validation")
                out.before_validation()
                val_out = (p.val[0], self.outputs_of(p.val[0], calibrate_on=p.val[1]))
                val = p.task.metrics(val_out[1], p.val[1], "val")
                self.guards.check_val(val, train)
            except TrainingError as e:
                self._write_best_snapshot()  # a held best.pt is written; last.pt stays the last good one
                out.fail("interrupted" if isinstance(e, TrainingInterrupted) else "diverged")
                raise
            state.train_time += dt
            state.epoch += 1
            step_lrs = p.schedule.drain_step_lrs()  # per-step schedules: the lr of every step
            lr = step_lrs[-1] if step_lrs else p.optimizer.param_groups[0]["lr"]  # the lr this epoch ended on
            value = val[p.monitor]
            p.schedule.step_epoch(value)
            # any improvement keeps the weights; a refit keeps its last ones (it has no validation split)
            improved = self.refit_epochs is not None or self._improved(value, state.best_value)
            if improved:
                state.best_value, state.best_epoch = value, state.epoch
                self.best_weights = copy.deepcopy(p.model.state_dict())
            if self._improved(value, state.stop_best, cfg.early_stopping.min_delta):
                state.stop_best, state.bad_epochs = value, 0
            else:
                state.bad_epochs += 1
            row = {
                "epoch": state.epoch,
                "step": state.step,
                "lr": lr,
                "time_s": dt,
                "samples_per_s": self._epoch_rows / dt,
                **{f"train/{k}": v for k, v in train.items()},
                **{f"val/{k}": v for k, v in val.items()},
            }
            state.history.append(row)
            out.epoch(row, improved, step_lrs, val_out)
            pruned = epoch_hook is not None and epoch_hook(state.epoch, value)
            last = state.epoch >= p.max_epochs or 0 < cfg.max_steps <= state.step or early_stop_due(p, state) or pruned
            last = last or (self.refit_epochs is not None and state.epoch >= self.refit_epochs)
            self._epoch_end_checkpoint(improved, last)
            if pruned:
                stop_reason = "pruned"
                log.info("pruned by the sweeper after epoch %d (val/%s %.4g)", state.epoch, p.monitor, value)
            elif early_stop_due(p, state):
                stop_reason = "early_stopped"
                log.info(
                    "early stopping: val/%s has not improved by more than %g for %d epochs (best %.4g at epoch %d)",
                    p.monitor,
                    cfg.early_stopping.min_delta,
                    state.bad_epochs,
                    state.best_value,
                    state.best_epoch,
                )
        if self._unwritten:
            self._write_epoch_end(improved=False)
        if self._stop.received is not None:  # arrived during the last epoch's validation or checkpoint
            out.fail("interrupted")
            raise self._interrupted()
        self._stop.at_once = True  # the final pictures and the test: last.pt is current, stop at once
        out.end_training(val_out)
        # Test once, on the weights of the best validation epoch.
        if self.best_weights is not None:
            p.model.load_state_dict(self.best_weights)
        x_test, y_test = p.data.x_test.to(p.device), p.data.y_test.to(p.device)
        signals.pause("test")
        test_out = self.outputs_of(x_test)
        write_val_predictions(self.out_dir, p, self.outputs_of)  # a CV fold's out-of-fold rows
        test = p.task.metrics(test_out, y_test, "test")
        if cfg.refit:  # retrain on train + val for the selected epochs: its model and test are the run's
            try:
                test, out.extra["refit"] = refit(self, test, resumed)
            except TrainingInterrupted:
                out.fail("interrupted")
                raise
        return out.end(stop_reason, test, (x_test, test_out))

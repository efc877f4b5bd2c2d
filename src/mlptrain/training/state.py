"""What the loop mutates, and its checkpoints: save, resume, and what a resume may not change.

The checkpoint's keys are described once, by :meth:`State.state_dict` / :meth:`State.load_state_dict`
(the loop's counters) and :class:`Checkpoints` (the parts' own state dicts, the RNGs, the run's
description), so saving and restoring cannot drift apart.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mlptrain import checkpoint, signals
from mlptrain.errors import CheckpointError, ConfigError
from mlptrain.files import remove_stale_temps
from mlptrain.training.setup import Parts

log = logging.getLogger("mlptrain")

DATA_PATHS = ("dataset.data_dir", "dataset.path", "dataset.test_path")

# What a resume must not change: the saved weights, optimizer and schedule state, the order of the
# batches and the meaning of "best" all depend on them.
RESUME_FIXED = (
    "model",
    "dataset",
    "loss",
    "optim",
    "scheduler",
    "seed",
    "trainer.batch_size",
)  # and the monitor and its mode as resolved (trainer.monitor=auto and =nll are the same)


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

    def state_dict(self, monitor: str, mode: str) -> dict:
        """The checkpoint's keys for these counters (the format predates this class: keep the names)."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best": {"metric": f"val/{monitor}", "mode": mode, "value": self.best_value, "epoch": self.best_epoch},
            "early_stopping": {"bad_epochs": self.bad_epochs, "best": self.stop_best},
            "history": self.history,
            "train_time_s": self.train_time,
        }

    def load_state_dict(self, ckpt: dict) -> None:
        self.epoch, self.step, self.history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        self.train_time = ckpt["train_time_s"]
        self.best_value, self.best_epoch = ckpt["best"]["value"], ckpt["best"]["epoch"]
        self.bad_epochs = ckpt["early_stopping"]["bad_epochs"]
        self.stop_best = ckpt["early_stopping"].get("best", self.best_value)


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


class Checkpoints:
    """last.pt / best.pt of one run dir: written by rank 0, named in every rank's messages."""

    def __init__(self, parts: Parts, out_dir: Path, overrides: list[str]):
        self.p, self.out_dir, self.overrides = parts, Path(out_dir), overrides
        self.last_saved: str | None = None  # the newest last.pt and its position, for messages

    def kept(self) -> str:
        if self.last_saved:
            return f"the last good checkpoint is kept: {self.last_saved}"
        return "no checkpoint had been written yet"

    def snapshot(self, state: State, best_weights: dict | None) -> dict | None:
        """What ``save`` would write now, copied, to be written later (``save(..., payload=)``); rank 0 only."""
        if not self.p.dist.is_main:
            return None
        body = self._payload(state, best_weights, None)
        # the live state is copied; the run's description (config, data, versions) does not change
        live = ("model", "optimizer", "scheduler", "scaler", "rng", "best_model", "best", "early_stopping")
        return {**body, **copy.deepcopy({k: body[k] for k in live}), "history": list(body["history"])}

    def save(
        self,
        name: str,
        state: State,
        best_weights: dict | None,
        mid_epoch: dict | None = None,
        also: str | None = None,
        payload: dict | None = None,
    ) -> None:
        """Write checkpoint ``name``; ``also``: a second name for the same bytes (a hard link); ``payload``:
        a :meth:`snapshot` taken earlier, written instead of the current state."""
        if self.p.dist.is_main:  # rank 0 writes; the others' messages name its file
            path = self.out_dir / name
            signals.pause("checkpoint")  # tests: a signal while the checkpoint is written
            body = payload if payload is not None else self._payload(state, best_weights, mid_epoch)
            if "last.pt" in (name, also):  # the last.pt it replaces stays as last.prev.pt (a hard link)
                checkpoint.keep_previous(self.out_dir / "last.pt")
            # saved_at: after the logs so far were flushed: a resume keeps exactly those
            checkpoint.save(path, {**body, "saved_at": time.time()})
            if also:
                checkpoint.duplicate(path, self.out_dir / also)
        if payload is None and "last.pt" in (name, also):
            self.last_saved = f"{self.out_dir / 'last.pt'} ({position(state.epoch, state.step, mid_epoch is not None)})"

    def _payload(self, state: State, best_weights: dict | None, mid_epoch: dict | None) -> dict:
        p = self.p
        # last.pt alone must resume exactly, so it carries the best weights unless they are its own.
        best_model = None if (state.best_epoch == state.epoch and mid_epoch is None) else best_weights
        rng = {
            "torch": torch.get_rng_state(),
            "data_order": p.train_batches.generator.get_state(),
            "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0],
        }
        if p.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(p.device)
        return {
            "model": p.model.state_dict(),
            "optimizer": p.optimizer.state_dict(),
            "scheduler": p.schedule.state_dict(),
            "scaler": p.scaler.state_dict() if p.scaler is not None else {},
            **state.state_dict(p.monitor, p.mode),
            "config": p.run.raw,
            "overrides": self.overrides,
            "data": p.meta,
            "versions": checkpoint.versions(),
            "rng": rng,
            "best_model": best_model,
            "mid_epoch": mid_epoch,
        }

    def resume(self, where: str, state: State) -> tuple[dict | None, MidEpoch | None, float | None]:
        """Restore the parts and ``state`` from a checkpoint; returns (best weights, the mid-epoch position
        if it was saved between two steps, the wall time it was saved at)."""
        p = self.p
        ckpt, where_file = checkpoint.load_resumable(where)  # a corrupt last.pt: the newest intact one
        check_finite_weights(ckpt, where_file)
        mismatch = (
            incompatible(ckpt.get("config") or {}, p.run.raw)
            or data_differs(ckpt.get("data") or {}, p.meta)
            or monitor_differs(ckpt.get("best") or {}, p.monitor, p.mode)
        )
        if mismatch:
            raise ConfigError(
                f"trainer.resume: {where} was trained with a different {mismatch}; resume with "
                f"the run's own settings (start a new run to change them)"
            )
        changed = length_change(ckpt.get("config") or {}, p.run.raw)  # the CLI says it first, with a command
        if changed:
            raise ConfigError(
                f"trainer.resume: scheduler={p.run.scheduler.name} plans the lr over the run's whole length "
                f"({changed[0]}), so {changed[1]} cannot extend it; start a new run from its weights with "
                f"trainer.init_from={where}"
            )
        best_weights, mid = None, None
        try:
            p.model.load_state_dict(ckpt["model"])
            p.optimizer.load_state_dict(ckpt["optimizer"])
            p.schedule.load_state_dict(ckpt["scheduler"])
            if p.scaler is not None and ckpt.get("scaler"):
                p.scaler.load_state_dict(ckpt["scaler"])
            state.load_state_dict(ckpt)
            rng = ckpt["rng"]
            torch.set_rng_state(rng["torch"])
            p.train_batches.generator.set_state(rng["data_order"])
            random.setstate((rng["python_version"], tuple(rng["python"]), None))
            if "cuda" in rng and p.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], p.device)
            best = ckpt.get("best_model")
            if best is not None:
                best_weights = {k: v.to(p.device) for k, v in best.items()}
            elif state.best_epoch and state.best_epoch == state.epoch:  # the checkpoint's own weights are the best
                best_weights = copy.deepcopy(p.model.state_dict())
            saved = ckpt.get("mid_epoch")
            if saved:
                d = p.device
                losses, correct = p.dist.resume_totals(saved["losses"].to(d), saved["correct"].to(d))
                mid = MidEpoch(
                    saved["order"],
                    saved["batch"],
                    saved["n_steps"],
                    saved["start_step"],
                    losses,
                    correct,
                    saved["norms"].to(d),
                    list(saved["step_lrs"]),
                    saved["elapsed"],
                )
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"trainer.resume: {where} does not fit this run: {first[:200]}") from None
        if p.dist.is_main:  # a SIGKILL during a write leaves one behind; only rank 0 writes here
            remove_stale_temps(self.out_dir)
        self.last_saved = f"{where_file} ({position(state.epoch, state.step, mid is not None)})"
        asked = Path(where) / "last.pt" if Path(where).is_dir() else Path(where)
        shown = where if where_file == asked else where_file  # the fallback, when last.pt was corrupt
        # numbered as the interrupt message numbers the same checkpoint (position())
        log.info("resumed from %s at %s", shown, position(state.epoch, state.step, mid is not None))
        return best_weights, mid, ckpt.get("saved_at")


def check_finite_weights(ckpt: dict, path: Path) -> None:
    """Weights that are not finite were never saved by a run (a divergence is not checkpointed): the
    file was damaged (one written before checksums), and a resume would blame the learning rate."""
    for key in ("model", "best_model"):
        for name, t in (ckpt.get(key) or {}).items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all()):
                raise CheckpointError(f"{path} is corrupt: {key} weight {name} holds non-finite values")


def early_stop_due(parts: Parts, state: State) -> bool:
    es = parts.cfg.early_stopping
    return es.enabled and state.bad_epochs >= es.patience


def already_finished(parts: Parts, state: State, out_dir: Path) -> dict | None:
    """Resuming a run (at an epoch's end) that had already finished: its results, instead of running again."""
    cfg = parts.cfg
    done = (
        state.epoch >= parts.max_epochs
        or (cfg.max_steps > 0 and state.step >= cfg.max_steps)
        or early_stop_due(parts, state)
    )
    path = Path(out_dir) / "metrics.json"
    if not done or not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if metrics.get("status") not in ("completed", "early_stopped") or metrics.get("steps") != state.step:
        return None  # it stopped between its last checkpoint and its results: finish them now
    longer = "raise trainer.epochs to train longer"
    if parts.run.scheduler.name in WHOLE_RUN_SCHEDULES:  # its length is fixed: a new run from its weights
        longer = f"to train on from its weights in a new run: trainer.init_from={out_dir}"
    log.info("nothing to resume: %s finished at epoch %d, step %d (%s)", out_dir, state.epoch, state.step, longer)
    return metrics


# Keys added to a group since older checkpoints were written: absent there, they had this value.
ADDED_KEYS = {"dataset": {"stratify": False, "folds": 0, "fold": None, "id": None}}


def incompatible(old: dict, new: dict) -> str | None:
    """Name the first setting that makes a checkpoint unusable for this run, if any."""
    for key in RESUME_FIXED:
        group, _, sub = key.partition(".")
        a, b = old.get(group), new.get(group)
        if isinstance(a, dict) and isinstance(b, dict):
            a = {**{k: v for k, v in ADDED_KEYS.get(group, {}).items() if k in b}, **a}
        if sub:
            a, b = (a or {}).get(sub), (b or {}).get(sub)
        if a == b:
            continue
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a or {}, b or {}
            # where the data lies is no setting (a resume pins it); a changed file is data_differs' to find
            diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and f"{key}.{k}" not in DATA_PATHS]
            if not diff:
                continue
            return f"{key} ({', '.join(f'{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in diff[:3])})"
        return f"{key} ({key}: {a!r} -> {b!r})"
    return None


# Schedules planned over the whole run's length: a resume that changes the length would restart their lr
# (cosine climbs back up) or step past their end (onecycle).  Per-epoch ones (step, exponential, plateau,
# none) do not depend on the length: a resume extends them as they are.
WHOLE_RUN_SCHEDULES = ("cosine", "onecycle")


def run_length(trainer: dict) -> str:
    steps = trainer.get("max_steps", -1)
    return f"trainer.max_steps={steps}" if steps and steps > 0 else f"trainer.epochs={trainer.get('epochs')}"


def length_change(old: dict, new: dict) -> tuple[str, str] | None:
    """(the run's length, the new one) when a resume would change the length of a whole-run schedule."""
    before, now = run_length(old.get("trainer") or {}), run_length(new.get("trainer") or {})
    if (new.get("scheduler") or {}).get("name") in WHOLE_RUN_SCHEDULES and before != now:
        return before, now
    return None


def monitor_differs(best: dict, monitor: str, mode: str) -> str | None:
    """The metric that chose the best epoch, and its direction, must be the same after a resume."""
    old = (best.get("metric"), best.get("mode"))
    if old[0] is not None and old != (f"val/{monitor}", mode):
        return f"trainer.monitor (trainer.monitor: {old[0]} ({old[1]}) -> val/{monitor} ({mode}))"
    return None


def data_differs(old: dict, new: dict) -> str | None:
    """The data itself (a changed file, not a changed setting) must match as well."""
    for k in ("task", "in_features", "n_outputs", "class_names", "sizes"):
        if old.get(k) != new.get(k):
            return f"data ({k}: {old.get(k)!r} -> {new.get(k)!r})"
    return None


def position(epoch: int, step: int, mid_epoch: bool) -> str:
    return f"epoch {epoch + 1}, step {step}, mid-epoch" if mid_epoch else f"end of epoch {epoch}, step {step}"

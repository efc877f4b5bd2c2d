"""What a run leaves for people to read: loggers, diagnostics, the console and ``metrics.json``.

The loop reports state (a finished epoch, a checkpoint about to be written, the test) to one
:class:`RunOutputs`; only rank 0 writes anything.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path

import torch

from mlptrain import signals
from mlptrain.diagnostics import Diagnostics
from mlptrain.files import write_json
from mlptrain.loggers import NullLogger, ResumePoint, build_loggers
from mlptrain.model import count_parameters
from mlptrain.progress import Progress
from mlptrain.training.setup import Parts
from mlptrain.training.state import State

log = logging.getLogger("mlptrain")


class RunOutputs:
    def __init__(self, parts: Parts, state: State, out_dir: Path, hparams: dict):
        self.p, self.state, self.out_dir, self.hparams = parts, state, Path(out_dir), hparams
        self.loggers = NullLogger()
        self.diagnostics: Diagnostics | None = None
        self.progress: Progress | None = None
        self.extra: dict = {}  # more of metrics.json (a refit's record)

    def start(self, resumed: bool, saved_at: float | None) -> None:
        """Open the loggers (a run resumed in its own dir continues its logs, cut back to the checkpoint:
        what a stopped run logged after it is logged again), draw epoch 0, and say what trains."""
        p, s = self.p, self.state
        if p.dist.is_main:  # only rank 0 writes events, checkpoints and metrics; rank 0 draws
            resume = ResumePoint(s.epoch, s.step, saved_at) if resumed else None
            self.loggers = build_loggers(
                p.cfg.loggers,
                self.out_dir,
                resume,
                config=self.resolved_config(),
                hparams=self.hparams,
                metric_tags=self.metric_tags(),
            )
            self.diagnostics = Diagnostics.for_trainer(p, self.loggers)  # None when off or unlogged
            if self.diagnostics and s.epoch == 0 and not resumed:  # a resumed run has them already
                self.diagnostics.epoch_end(0)  # the initial weights
        self.loggers.flush()  # the run's header (config, hparams, epoch-0 pictures) is on disk before any checkpoint
        self.progress = Progress(p.cfg.progress if p.dist.is_main else "none", p.max_epochs)
        log.info(
            "model %s: %s parameters on %s\n%s", p.run.model.name, f"{count_parameters(p.model):,}", p.device, p.model
        )
        log.info(
            "data %s: %d train / %d val / %d test, task %s, monitor val/%s (%s)",
            p.meta["name"],
            *p.meta["sizes"].values(),
            p.task.kind,
            p.monitor,
            p.mode,
        )

    def resolved_config(self) -> dict:
        """The run's config with its ``auto`` values as they were resolved (loss, batch size, epochs,
        early stopping, device, monitor, mode, threads)."""
        p = self.p
        raw = {**p.run.raw, "trainer": dict(p.run.raw.get("trainer", {}))}
        raw["loss"] = {**raw.get("loss", {}), "name": p.task.loss_name}
        es = p.cfg.early_stopping
        stopping = {**raw["trainer"].get("early_stopping", {}), "enabled": es.enabled, "patience": es.patience}
        raw["trainer"].update(batch_size=p.cfg.batch_size, epochs=p.cfg.epochs, early_stopping=stopping)
        raw["trainer"].update(device=str(p.device), monitor=p.monitor, mode=p.mode)
        if not raw["trainer"].get("num_threads"):
            raw["trainer"]["num_threads"] = torch.get_num_threads()
        return raw

    def epoch(self, row: dict, improved: bool, step_lrs: list[float], val_outputs) -> None:
        """A finished epoch: its row to the loggers and the console, then its pictures.
        ``val_outputs``: (inputs, outputs) of the validation split, on these weights."""
        s = self.state
        self.loggers.epoch(row)  # TensorBoard: train/*, val/*, lr, throughput at the epoch; CSV: one row
        self.loggers.series("lr/step", step_lrs, s.step - len(step_lrs) + 1)
        self.progress.end_epoch(self._epoch_line(row, improved))
        if self.diagnostics:
            self.diagnostics.epoch_end(s.epoch, evaluated=val_outputs)

    def before_validation(self) -> None:
        if self.diagnostics:
            self.diagnostics.before_validation()  # dead ReLUs are counted on the validation pass

    def before_checkpoint(self) -> None:
        self.loggers.flush()  # the logs up to this checkpoint are on disk: a resume keeps exactly those

    def fail(self, status: str) -> None:
        """Training stopped (diverged, interrupted): the record says so, the logs are closed."""
        self.progress.close()
        self.write_metrics(status)
        self.loggers.close()

    def abandon(self) -> None:
        """The run stops on an exception: close what is open, quietly (the exception is what to report)."""
        if self.progress is not None:
            self.progress.close()
        try:
            self.loggers.close()
        except Exception:  # noqa: BLE001 - a logger that failed already reported why
            pass

    def end_training(self, val_outputs) -> None:
        self.progress.close()
        signals.pause("pictures")
        if self.diagnostics:
            self.diagnostics.epoch_end(self.state.epoch, last=True, evaluated=val_outputs)

    def end(self, status: str, test: dict, test_outputs) -> dict:
        """After the test: its pictures, the final HParams, and metrics.json written last."""
        if self.diagnostics:
            self.diagnostics.test_end(self.state.epoch, test_outputs, self.state.train_time)
        self.loggers.hparams_end({f"hparam/{k}": v for k, v in self.final_scalars(test).items()}, self.state.epoch)
        self.loggers.close()
        result = self.write_metrics(status, test)  # last: a "completed" metrics.json means all is written
        # as on the epoch line: the nll is the loss's number under cross-entropy or a likelihood loss, once
        shown = {k: v for k, v in test.items() if not (k == "nll" and v == test.get("loss"))}
        log.info(
            "test: %s (weights of epoch %d)", "  ".join(f"{k} {v:.4f}" for k, v in shown.items()), self.state.best_epoch
        )
        return result

    def write_metrics(self, status: str, test: dict | None = None) -> dict:
        s, p = self.state, self.p
        best = next((r for r in s.history if r["epoch"] == s.best_epoch), {})
        result = {
            "status": status,
            "objective": s.best_value,
            "monitor": f"val/{p.monitor}",
            "mode": p.mode,
            "best_epoch": s.best_epoch,
            "best": {k: v for k, v in best.items() if k.startswith("val/")},
            "final": s.history[-1] if s.history else {},
            "test": test or {},
            "epochs": s.epoch,
            "steps": s.step,
            "train_time_s": s.train_time,
            "parameters": count_parameters(p.model),
            # Where and how the job ran (sweeps: which node / worker process, threads per job).
            "runtime": {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "torch_threads": torch.get_num_threads(),
                "device": str(p.device),
            },
            "history": s.history,
            **self.extra,
        }
        if p.dist.is_main:
            write_json(self.out_dir / "metrics.json", result)
        return result

    def final_scalars(self, test: dict) -> dict[str, float]:
        s = self.state
        out = {f"best_val_{self.p.monitor}": s.best_value if s.best_value is not None else math.nan}
        out.update({f"test_{k}": v for k, v in test.items()})
        out["train_time_s"] = s.train_time
        return out

    def metric_tags(self) -> list[str]:
        names = self.p.task.metric_names
        return [f"hparam/best_val_{self.p.monitor}"] + [f"hparam/test_{n}" for n in names] + ["hparam/train_time_s"]

    def _epoch_line(self, row: dict, improved: bool) -> str:
        keys = ["train/loss", "train/acc", "val/loss", "val/acc", f"val/{self.p.monitor}"]
        # the monitored nll is the same number as val/loss under cross-entropy or a likelihood loss: once
        same = f"val/{self.p.monitor}" != "val/loss" and row.get(f"val/{self.p.monitor}") == row.get("val/loss")
        keys = keys[:-1] if same else keys
        parts = [f"{k} {row[k]:.4f}" for k in dict.fromkeys(keys) if k in row]
        star = " *" if improved else ""
        return (
            f"epoch {row['epoch']:>3}/{self.p.max_epochs}  "
            + "  ".join(parts)
            + f"  lr {row['lr']:.2e}  {row['time_s']:.2f}s{star}"
        )

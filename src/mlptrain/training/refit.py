"""``trainer.refit=true``: after selecting the best epoch on the validation split, train a fresh model on
train + validation for that many epochs and test it (scikit-learn's ``refit``, for one setting).

The refit is a run of its own in ``<run dir>/refit`` (its checkpoints, TensorBoard events and
metrics.json: TensorBoard shows it as the run ``.../refit``), with the selection's seed (so the same
initial weights), batch size and schedule length: it plans the lr over the selection's ``max_epochs``
and stops after the best epoch, so every epoch it trains has the lr the selection's had.  Its inputs
are standardised with the training split's statistics, as the selection's were.  Then its weights
become the run's ``best.pt`` (what mlptrain-predict, -eval and export use) and its test metrics the
run's ``test``; ``metrics.json`` keeps the selection's best epoch and metrics, and the selection
model's test metrics under ``refit.selection_test``.

A run killed during the refit resumes it from ``refit/last.pt`` (or redoes it, when none was written
yet) on ``mlptrain trainer.resume=<run dir>``: the selection's state, and so the number of epochs, come
from the run's own last.pt.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil

import torch

from mlptrain.compose import resume_command
from mlptrain.errors import TrainingInterrupted
from mlptrain.files import write_bytes

log = logging.getLogger("mlptrain")

DIR = "refit"


def refit_data(data):
    """The bundle with the validation rows added to the training split (the validation split stays, so
    the loop has its per-epoch rows: on rows it now trains on)."""
    return dataclasses.replace(
        data,
        x_train=torch.cat([data.x_train, data.x_val]),
        y_train=torch.cat([data.y_train, data.y_val]),
        w_train=None if data.w_train is None else torch.cat([data.w_train, data.w_val]),
        val_rows=None,
    )


def refit_run(trainer, resume: str | None):
    """The selection's run as numbers (epochs, batch size), without early stopping or a second refit."""
    p = trainer.parts
    es = dataclasses.replace(p.cfg.early_stopping, enabled=False)
    cfg = dataclasses.replace(p.cfg, epochs=p.max_epochs, refit=False, early_stopping=es, resume=resume, init_from=None)
    raw = copy.deepcopy(p.run.raw)
    raw["trainer"] = {
        **raw.get("trainer", {}),
        "epochs": p.max_epochs,
        "batch_size": p.cfg.batch_size,
        "refit": False,
        "early_stopping": dataclasses.asdict(es),
        "resume": resume,
        "init_from": None,
    }
    return dataclasses.replace(p.run, trainer=cfg, raw=raw)


def refit(trainer, selection_test: dict, resumed: bool) -> tuple[dict, dict]:
    """Train and test the refit; returns (its test metrics, the ``refit`` record for metrics.json)."""
    from mlptrain.training.loop import Trainer

    p, out_dir = trainer.parts, trainer.out_dir
    epochs = trainer.state.best_epoch
    where = out_dir / DIR
    if not resumed and where.exists():  # a new run (trainer.overwrite=true): not an earlier run's refit
        shutil.rmtree(where)
    where.mkdir(parents=True, exist_ok=True)
    last = where / "last.pt"
    resume = str(last) if last.is_file() else None
    data = refit_data(p.data)
    log.info(
        "refit: a fresh model on train + val (%d rows) for the selected %d of %d epochs%s",
        len(data.y_train),
        epochs,
        p.max_epochs,
        f", resumed from {last}" if resume else "",
    )
    sub = Trainer(refit_run(trainer, resume), where, trainer.outputs.hparams, data, trainer.checkpoints.overrides)
    sub.refit_epochs = epochs
    try:
        result = sub.fit()
    except TrainingInterrupted as e:  # resumed from the run, which then resumes the refit
        raise TrainingInterrupted(
            f"interrupted during the refit; resume the run with: {resume_command(out_dir)}", e.exit_code
        ) from None
    best = where / "best.pt"
    if best.is_file() and p.dist.is_main:  # the refit's weights are the run's model from now on
        write_bytes(out_dir / "best.pt", best.read_bytes(), "checkpoint")
    record = {
        "epochs": result.get("epochs"),
        "steps": result.get("steps"),
        "train_rows": len(data.y_train),
        "dir": DIR,
        "selection_test": selection_test,
    }
    return result.get("test") or {}, record

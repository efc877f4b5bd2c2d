"""``auto`` batch size, epochs and early stopping: the rule that sizes the optimisation to the data.

A fixed batch of 128 and 60 epochs suit MNIST (51 000 training rows: 400 steps an epoch), but give a
table of 150 rows one step an epoch and 60 steps in all.  With ``auto`` (the defaults):

* ``trainer.batch_size``: an eighth of the training split, rounded down to a power of two, kept
  within [32, 128]: every split of 256 rows or more takes at least 8 steps an epoch, and 1024 rows
  or more (MNIST included) get 128;
* ``trainer.epochs``: 60, raised so the run takes at least ``MIN_STEPS`` optimizer steps, but to at most
  ``MAX_EPOCHS`` (a 100-row split: 4 steps an epoch, 125 epochs);
* ``trainer.early_stopping.enabled``: on exactly when the epochs were raised (small data, where many
  epochs are cheap and the best one is usually early), with a patience of at least ``MIN_PATIENCE_STEPS``
  steps' worth of epochs, so a noisy small validation split does not stop it at the first bump.

The best checkpoint is chosen on the monitor in any case (``registry.DEFAULT_MONITOR``); early stopping
only saves the time of the epochs after it.  The rule depends on the training split's size alone, so
it is the same on every resume of a run.
"""

from __future__ import annotations

import dataclasses
import math

from mlptrain.config import RunConfig

BASE_EPOCHS = 60
MIN_STEPS = 500
MAX_EPOCHS = 200
MIN_PATIENCE_STEPS = 100


def auto_batch_size(n_train: int) -> int:
    return min(128, max(32, 2 ** max(0, math.floor(math.log2(max(1, n_train // 8))))))


def auto_epochs(steps_per_epoch: int) -> int:
    return min(MAX_EPOCHS, max(BASE_EPOCHS, math.ceil(MIN_STEPS / max(1, steps_per_epoch))))


def resolve_batch_size(run: RunConfig, n_train: int, world: int) -> int:
    size = run.trainer.batch_size
    return max(auto_batch_size(n_train), world) if size == "auto" else size


def resolve(run: RunConfig, batch_size: int, steps_per_epoch: int) -> RunConfig:
    """``run`` with the trainer's ``auto`` sizes replaced by numbers (``steps_per_epoch`` at ``batch_size``)."""
    cfg = run.trainer
    epochs = auto_epochs(steps_per_epoch) if cfg.epochs == "auto" else cfg.epochs
    es = cfg.early_stopping
    if es.enabled == "auto":
        extended = cfg.epochs == "auto" and epochs > BASE_EPOCHS
        patience = (
            max(es.patience, math.ceil(MIN_PATIENCE_STEPS / max(1, steps_per_epoch))) if extended else es.patience
        )
        es = dataclasses.replace(es, enabled=extended, patience=patience)
    trainer = dataclasses.replace(cfg, batch_size=batch_size, epochs=epochs, early_stopping=es)
    return dataclasses.replace(run, trainer=trainer)

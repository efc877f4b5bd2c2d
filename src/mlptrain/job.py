"""One job: train a validated run in this process and return its metrics.

The CLI calls :func:`run_job` for a single-process job, and every DDP worker of
``trainer.devices=N`` (:mod:`mlptrain.launch`) calls it for its rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlptrain import signals
from mlptrain.config import RunConfig
from mlptrain.errors import out_of_memory
from mlptrain.registry import check_direction
from mlptrain.training import Trainer


@dataclass
class JobContext:
    """What the command line adds to a run: its TensorBoard HParams, its overrides (a resume starts
    from them) and an optimising sweeper's direction (minimize/maximize, or None)."""

    hparams: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    direction: str | None = None


def run_job(run: RunConfig, out_dir: Path, ctx: JobContext) -> dict:
    try:
        trainer = Trainer(run, out_dir, hparams=ctx.hparams, overrides=ctx.overrides)
        # Checked here, where the data has told the objective's mode (a CSV's task is known only now).
        check_direction(ctx.direction, trainer.mode, f"val/{trainer.monitor}")
        result = trainer.fit()
    except (MemoryError, RuntimeError) as e:
        raise out_of_memory(e) or e  # noqa: B904 - e itself, or the one-line OOM error with e as its context
    signals.pause("between-jobs")  # tests: a signal after a job's results are written, before the next job
    return result

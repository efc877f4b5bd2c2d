"""Hydra's Optuna sweeper, ending a study like mlptrain's other sweeps when its trials fail.

Each failed trial has already been recorded and logged by ``mlptrain.cli.train`` (it raised
``TrialFailed``).  Optuna's sweeper then ends with an exception Hydra prints as a traceback,
skipping ``on_multirun_end``: ``study.best_trial`` finds no completed trial, or the trials that
exceed ``hydra.sweeper.max_failure_rate`` are re-raised.  Here the study just ends, so the sweep
summary is written and ``mlptrain`` lists the failures in one line and exits 1.

Imported only by :func:`hydra_plugins.mlptrain_sweeper.register` (the leading underscore keeps
Hydra's plugin scan from importing it where the optuna extra is not installed).
"""

from __future__ import annotations

import logging

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger("mlptrain")


class MlptrainOptunaSweeper(OptunaSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        from mlptrain.continuation import ContinuingLauncher

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        impl = self.sweeper  # Hydra's OptunaSweeper delegates to its OptunaSweeperImpl
        # skips finished trials, retries transient failures
        impl.launcher = ContinuingLauncher.around(impl.launcher, config)

    def sweep(self, arguments):
        from mlptrain.errors import TrialFailed

        try:
            return super().sweep(arguments)
        except TrialFailed:  # more failures than max_failure_rate allows: Optuna re-raised one
            log.error("study stopped: more failed trials than hydra.sweeper.max_failure_rate allows")
        except ValueError as e:
            if "No trials are completed" not in str(e):  # optuna's words for "every trial failed"
                raise
            log.error("study ended without a completed trial")

"""mlptrain's Optuna sweeper (``hydra/sweeper=optuna``, ``hparams_search=optuna``) on Optuna's ask/tell API.

Settings, their check and the search space: :mod:`mlptrain.study_config` (checked before Hydra starts).
Here the study runs:

* every trial is one job of the sweep, launched through :class:`mlptrain.continuation.ContinuingLauncher`
  (finished jobs are not run again, transient failures retried) under its own job number, kept in the
  trial (user attribute ``mlptrain_job``): its folder, and the sampler's seed for it (``seed + job``), so a
  study asks the same trials whether it ran in one go or was continued;
* pruning (``hydra.sweeper.pruner``): a trial run in this process reports its ``val/<monitor>`` after
  every epoch through :data:`mlptrain.training.loop.epoch_hook` and stops where the pruner says so; the job
  records status ``pruned``, the study ``TrialState.PRUNED``;
* a study kept in ``hydra.sweeper.storage`` (sqlite) continues: complete, pruned and failed trials count
  towards ``n_trials`` and are not run again; a trial the last process left RUNNING (killed) is run again
  as that same trial, in its own folder, resuming from its ``last.pt``.  One process per study at a time.
  A study holding another search (params, fixed overrides, direction, sweep folder) is refused.

Imported only by :func:`hydra_plugins.mlptrain_sweeper.register` (the leading underscore keeps Hydra's
plugin scan from importing it); Optuna itself is imported when a study starts.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper

log = logging.getLogger("mlptrain")
JOB = "mlptrain_job"  # trial user attribute: its job number
ABANDONED = "mlptrain_abandoned"  # a trial asked but never given a job (killed in between): not counted
SEARCH = "mlptrain_search"  # study user attribute: what the study searches (a continuation must match)
RESULTS = "optimization_results.yaml"


class MlptrainOptunaSweeper(Sweeper):
    def __init__(self, **conf: Any):
        self.conf = conf

    def setup(self, *, hydra_context, task_function, config) -> None:
        import dataclasses

        from hydra.core.plugins import Plugins

        from mlptrain.continuation import ContinuingLauncher
        from mlptrain.study_config import BASIC_LAUNCHER

        from . import SweepConfigs

        self.config = config
        self.in_process = config.hydra.launcher.get("_target_") == BASIC_LAUNCHER
        if self.in_process:  # jobs in this process share the composition cache (see SweepConfigs)
            hydra_context = dataclasses.replace(hydra_context, config_loader=SweepConfigs(hydra_context.config_loader))
        launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.launcher = ContinuingLauncher.around(launcher, config)  # skips finished jobs, retries transient ones
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # ------------------------------------------------------------------------- the study
    def sweep(self, arguments: list[str]) -> None:
        import warnings

        import optuna

        from mlptrain.errors import EXIT_BAD_INPUT, ConfigError, printable

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial lines repeat mlptrain's
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        try:
            study, self.params, self.fixed = self._study(list(arguments))
        except ConfigError as e:
            print(f"mlptrain: error: {printable(str(e))}", file=sys.stderr)
            record = self.sweep_dir / "multirun.yaml"  # a fresh folder holds only the record of this command
            if record.is_file() and [p.name for p in self.sweep_dir.iterdir()] == [record.name]:
                record.unlink()
                self.sweep_dir.rmdir()
            sys.exit(EXIT_BAD_INPUT)
        self._run(study)
        self._results(study)

    def _study(self, arguments: list[str]):
        import optuna

        from mlptrain import study_config as sc
        from mlptrain.compose import hydra_value
        from mlptrain.continuation import difference, identity
        from mlptrain.errors import ConfigError

        params, fixed = sc.search_space(self.conf, arguments)
        name, options = sc.pruner_options(self.conf.get("pruner"))
        kinds = {
            "none": optuna.pruners.NopPruner,
            "median": optuna.pruners.MedianPruner,
            "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
            "hyperband": optuna.pruners.HyperbandPruner,
        }
        try:
            pruner = kinds[name](**options)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"hydra.sweeper.pruner: {name}: {str(e).splitlines()[0]}") from None
        self.pruning = name != "none"
        storage = self.conf.get("storage")
        study = optuna.create_study(
            study_name=self.conf.get("study_name"),
            storage=storage,
            pruner=pruner,
            direction=self.conf.get("direction"),
            load_if_exists=True,
        )
        search = [
            *(f"{p.key}={p.text}" for p in params),
            *identity(fixed, []),
            f"hydra.sweeper.direction={self.conf.get('direction')}",
            f"hydra.sweep.dir={self.sweep_dir.resolve()}",
        ]
        before = study.user_attrs.get(SEARCH)
        if before is None:
            study.set_user_attr(SEARCH, search)
        elif before[:-1] == search[:-1] and before != search:  # the same search, in another folder
            ran_in = before[-1].split("=", 1)[1]
            raise ConfigError(
                f"hydra.sweep.dir: the study {study.study_name!r} in {storage} runs in {ran_in}; continue it "
                f"there (hydra.sweep.dir={hydra_value(ran_in)}), or give this search another hydra.sweeper.study_name"
            )
        elif before != search:
            raise ConfigError(
                f"hydra.sweeper.study_name: the study {study.study_name!r} in {storage} holds another search "
                f"({difference(before, search)}); continue it with the same command, or give this search "
                "another hydra.sweeper.study_name"
            )
        return study, params, fixed

    def _distributions(self) -> dict:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out = {}
        for p in self.params:
            if p.kind == "choice":
                out[p.key] = CategoricalDistribution(list(p.choices))
            elif p.kind == "int":
                out[p.key] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
            else:
                out[p.key] = FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)
        return out

    def _sampler(self, job: int):
        """A sampler seeded for this job: the trial a job gets depends on the study so far, not on how
        many processes the study took."""
        import optuna

        from mlptrain.study_config import sampler_options

        name, options = sampler_options(self.conf.get("sampler"))
        seed = options.pop("seed", None)
        if seed is not None and name != "qmc":  # a QMC sequence (its scrambling) is the study's, not a job's
            seed = int(seed) + job
        samplers = optuna.samplers
        make = {
            "random": samplers.RandomSampler,
            "tpe": samplers.TPESampler,
            "gp": samplers.GPSampler,
            "cmaes": samplers.CmaEsSampler,
            "qmc": samplers.QMCSampler,
            "nsgaii": samplers.NSGAIISampler,
        }[name]
        if name == "qmc":  # asked for one trial at a time by design, from a fresh sampler per job
            options.setdefault("warn_asynchronous_seeding", False)
        return make(seed=seed, **options)

    def _run(self, study) -> None:
        from optuna.trial import Trial, TrialState

        trials = study.get_trials(deepcopy=False)
        jobs = [t.user_attrs[JOB] for t in trials if JOB in t.user_attrs]
        next_job = max(jobs, default=-1) + 1
        queue = []  # trials the last process left running (it was killed): run again, as themselves
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            trial = Trial(study, t._trial_id)
            if JOB in t.user_attrs:
                queue.append((t.user_attrs[JOB], trial))
                log.info("trial %d (job %d) was stopped before: running it again", t.number, t.user_attrs[JOB])
            else:  # asked, but killed before it had a job: it never ran
                trial.set_user_attr(ABANDONED, True)
                study.tell(trial, state=TrialState.FAIL)
        queue.sort(key=lambda jt: jt[0])
        counted = [t for t in trials if t.state.is_finished() and not t.user_attrs.get(ABANDONED)]
        self.done, self.failed = len(counted), sum(t.state == TrialState.FAIL for t in counted)
        n_trials, n_jobs = int(self.conf.get("n_trials")), int(self.conf.get("n_jobs") or 1)
        to_ask = max(0, n_trials - self.done - len(queue))
        distributions = self._distributions()
        while queue or to_ask:
            batch, queue = queue[:n_jobs], queue[n_jobs:]
            while len(batch) < n_jobs and to_ask:
                study.sampler = self._sampler(next_job)
                trial = study.ask(distributions)
                trial.set_user_attr(JOB, next_job)
                batch.append((next_job, trial))
                next_job, to_ask = next_job + 1, to_ask - 1
            for run in _consecutive(batch, single=self.in_process):
                self._launch(study, run)
                if self._too_many_failures():
                    log.error("study stopped: more failed trials than hydra.sweeper.max_failure_rate allows")
                    return

    def _too_many_failures(self) -> bool:
        rate = float(self.conf.get("max_failure_rate") or 0.0)
        return self.done > 0 and self.failed / self.done > rate

    def _launch(self, study, run: list) -> None:
        """Launch a run of trials with consecutive job numbers; tell the study how each ended."""
        from mlptrain import study_config as sc

        overrides = [[*self.fixed, *(sc.override(p, trial.params[p.key]) for p in self.params)] for _, trial in run]
        if not (self.pruning and self.in_process):
            returns = self.launcher.launch(overrides, initial_job_idx=run[0][0])
        else:
            from mlptrain.training import loop  # torch: the job in this process imports it anyway

            loop.epoch_hook = _reporter(study, run[0][1])
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=run[0][0])
            finally:
                loop.epoch_hook = None
        for (_, trial), ret in zip(run, returns):
            self._tell(study, trial, ret)

    def _tell(self, study, trial, ret) -> None:
        import json

        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        from mlptrain.continuation import _job_dir

        try:
            metrics = json.loads((Path(_job_dir(ret)) / "metrics.json").read_text())
        except (OSError, TypeError, ValueError):
            metrics = {}
        _report_history(study, trial, metrics)  # a job run elsewhere, or skipped: its epochs, for the pruner
        value = ret._return_value if ret.status == JobStatus.COMPLETED else None
        self.done += 1
        if metrics.get("status") == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            study.tell(trial, float(value))
        else:
            self.failed += 1
            study.tell(trial, state=TrialState.FAIL)

    def _results(self, study) -> None:
        import yaml
        from optuna.trial import TrialState

        from mlptrain.files import write_text

        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            log.error("study ended without a completed trial")
            return
        best = study.best_trial
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "best_params": dict(best.params),
            "best_value": float(best.value),
            "best_job": best.user_attrs.get(JOB),
        }
        write_text(self.sweep_dir / RESULTS, yaml.safe_dump(results, sort_keys=False), "study results")
        states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
        counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail") if states.count(s))
        log.info("study %s: %s; best: job %s, %.4g", study.study_name, counts, results["best_job"], best.value)


def _consecutive(batch: list, single: bool) -> list[list]:
    """The batch as runs of consecutive job numbers (a launcher numbers the jobs of one call in order);
    ``single``: one trial per call (this process runs them one after the other anyway)."""
    runs: list[list] = []
    for job, trial in batch:
        if runs and not single and runs[-1][-1][0] == job - 1:
            runs[-1].append((job, trial))
        else:
            runs.append([(job, trial)])
    return runs


def _reporter(study, trial):
    """The per-epoch hook of a trial run in this process: report, and stop where the pruner says so.
    An epoch reported before (by the process that was killed) is not reported again."""
    reported = set(study._storage.get_trial(trial._trial_id).intermediate_values)

    def hook(epoch: int, value: float) -> bool:
        if epoch not in reported and math.isfinite(value):
            trial.report(float(value), epoch)
            reported.add(epoch)
        return trial.should_prune()

    return hook


def _report_history(study, trial, metrics: dict) -> None:
    """The epochs of a job's ``metrics.json`` the trial has not reported (the job ran in another process,
    or had finished before this study was continued)."""
    monitor = metrics.get("monitor")
    if not monitor:
        return
    reported = set(study._storage.get_trial(trial._trial_id).intermediate_values)
    for row in metrics.get("history") or []:
        value = row.get(monitor)
        if row.get("epoch") not in reported and isinstance(value, (int, float)) and math.isfinite(value):
            trial.report(float(value), int(row["epoch"]))

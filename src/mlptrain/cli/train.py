"""The ``mlptrain`` command: compose with Hydra, validate, train one job, return the objective.

Only Hydra and the torch-free shell (config, compose, registry, errors) are imported at module
level, so ``mlptrain --help`` and a bad override answer quickly; torch comes in with the first
real run (:func:`run`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mlptrain import continuation, naming, rundir, signals, sweep
from mlptrain.cli.help import app_help
from mlptrain.cli.resume import check_resume, plan
from mlptrain.compose import (
    CONFIG_PACKAGE,
    guard_hydra_writes,
    listify,
    precompose,
    register_resolvers,
    reuse_compositions,
    scan_plugins,
)
from mlptrain.config import parse
from mlptrain.continuation import resume_in_own_dir, sweep_resume_argv
from mlptrain.errors import (
    BAD_INPUT,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    CheckpointError,
    ConfigError,
    TrainingError,
    TrialFailed,
    exit_code,
    printable,
    to_record,
)
from mlptrain.files import check_writable
from mlptrain.jobdirs import register_resolver as register_job_dirname
from mlptrain.jobdirs import with_fixed_keys
from mlptrain.parallel.env import env_rank, hydra_overrides, launched, quiet_logging, shutdown
from mlptrain.quick_exit import console
from mlptrain.registry import sweep_direction
from mlptrain.study_config import sweeper_argv

log = logging.getLogger("mlptrain")
# How the last job of this process ended (its run dir, and its metrics or its error as plain data:
# submitit pickles this module's globals with the job, and an exception object would not unpickle):
# what mlptrain.train (the Python API) returns or raises.
last_job: dict = {}
register_resolvers()  # before Hydra resolves the run dir of the first job
register_job_dirname()  # hydra.sweep.subdir, in this process and in joblib/submitit workers


def hparams_of(raw: dict, choices: dict, overrides: list[str]) -> dict:
    """HParams for TensorBoard: the same keys for every job (group choices and the main knobs),
    plus every key overridden on the command line (identical across the jobs of one sweep), but for
    the execution-only ones (threads, device, progress...: :mod:`mlptrain.naming`)."""
    flat = flatten(raw)
    keys = [
        "seed",
        "optim.lr",
        "optim.weight_decay",
        "trainer.batch_size",
        "trainer.epochs",
        "model.hidden",
        "model.activation",
        "model.dropout",
        "model.norm",
    ]
    out = {g: str(choices.get(g)) for g in ("dataset", "model", "loss", "optim", "scheduler")}
    for o in overrides:
        k = naming.override_key(o)
        if k in flat and k not in keys and not naming.is_execution_key(k):
            keys.append(k)
    for k in keys:
        v = flat.get(k, "")
        out[k] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config as ``{"group.key": value}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run(
    cfg: DictConfig,
    out_dir: Path,
    choices: dict | None = None,
    overrides: list[str] | None = None,
    direction: str | None = None,
) -> dict:
    """Validate and train one job; returns the metrics dict (also written to ``out_dir/metrics.json``).
    ``direction`` (minimize/maximize): the sweeper's, checked against the objective's mode."""
    run_cfg = parse(cfg)
    check_writable(out_dir)
    t = run_cfg.trainer
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    # One owner per run dir, a final status on every exit (rank 0 only: the ranks share its dir).
    owner = rundir.own(out_dir, resume=t.resume, overwrite=t.overwrite, cleanup=not multirun)
    with owner if env_rank() == 0 else contextlib.nullcontext():
        # torch-free until here: torch is imported after validation, with the code that trains
        from mlptrain.job import JobContext, run_job

        if _in_command:
            freeze_imports()

        ctx = JobContext(hparams_of(run_cfg.raw, choices or {}, overrides or []), list(overrides or []), direction)

        if t.devices > 1 or launched():  # torch's elastic launcher (~0.05 s to import) only where it may start ranks
            from mlptrain import launch

            if launch.should_launch(t.devices):  # trainer.devices=N: start N ranks, like torchrun
                return launch.launch(run_cfg, out_dir, ctx)  # each rank runs run_job, which checks the direction
        return run_job(run_cfg, out_dir, ctx)


_in_command = False  # set by main(): the process is the ``mlptrain`` command (not a Python caller's)


def freeze_imports() -> None:
    """Keep what the imports made out of the garbage collector's full passes (once per process; the
    ``mlptrain`` command does it at its first job, a Python caller's process is left as it is).

    torch, Hydra and the rest leave over a million long-lived objects (modules, functions, registries);
    each full collection walks them all (~100 ms here, several per sweep) to free nothing.  ``gc.freeze``
    moves them to the permanent generation, so later collections look only at what the runs create."""
    import gc

    if not gc.get_freeze_count():
        gc.freeze()


def shown_path(path: Path) -> str:
    """``path`` as a user would type it here: relative below the working dir, else absolute; shell-quoted."""
    path = Path(path).resolve()
    rel = os.path.relpath(path)
    return shlex.quote(rel if not rel.startswith("..") else str(path))


def launcher_threads(launcher, cpus: int | None = None) -> int:
    """Torch threads per job for parallel launchers, so N jobs share the cores instead of each
    taking all of them: joblib -> cores // n_jobs, submitit -> cpus_per_task; 0 = leave torch's default."""
    cpus = cpus or os.cpu_count() or 1
    if launcher is None:
        return 0
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, int) and n_jobs != 1:
        n = n_jobs if n_jobs > 0 else max(1, cpus + 1 + n_jobs)  # joblib: -1 = every core
        return max(1, cpus // n)
    return 0


@hydra.main(version_base="1.3", config_path="pkg://" + CONFIG_PACKAGE, config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    quiet_logging()  # under torchrun, ranks > 0 log warnings to the console only
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    direction = None
    if multirun:
        threads = launcher_threads(hc.launcher)
        if threads and cfg.trainer.num_threads in (0, "auto"):
            cfg.trainer.num_threads = threads
        direction = sweep_direction(hc.sweeper)
        resume_in_own_dir(cfg, out_dir)  # a continued sweep: this job resumes from its own last.pt
    announce = not multirun and env_rank() == 0  # a sweep's dir is in Hydra's own lines and its summary
    if announce:
        log.info("run dir: %s", shown_path(out_dir))
    try:
        try:
            result = run(cfg, out_dir, dict(hc.runtime.choices), list(hc.overrides.task), direction)
        except BAD_INPUT as e:
            code, msg = EXIT_BAD_INPUT, str(e)
            last_job.update(run_dir=out_dir, error=to_record(e))
        except TrainingError as e:
            code, msg = exit_code(e, EXIT_FAILED), str(e)
            last_job.update(run_dir=out_dir, error=to_record(e))
        except OSError as e:  # a write outside mlptrain's guarded ones (a full disk at start-up): one line
            code, msg = EXIT_BAD_INPUT, f"cannot write {e.filename or out_dir}: {e.strerror or e}"
            last_job.update(run_dir=out_dir, error=to_record(CheckpointError(msg)))
        else:
            last_job.update(run_dir=out_dir, metrics=result)
            if announce:
                log.info("results in %s; view them with: tensorboard --logdir %s", *[shown_path(out_dir)] * 2)
            objective = result["objective"]
            return float("nan") if objective is None else float(objective)
    except KeyboardInterrupt as e:  # before training started, or a second Ctrl-C (signals.Abort)
        code, msg = exit_code(e, 130), str(e) or "interrupted"
    if code > 128:  # interrupted: stop here, a sweep included
        print(f"mlptrain: {printable(msg)}", file=sys.stderr)
        sys.exit(code)
    if multirun:  # keep the sweep going; the summary lists the failure and main() exits non-zero
        sweep.failed_jobs.append(f"{hc.job.num}: {msg}")
        log.error("job %s failed: %s", hc.job.num, msg)
        if direction is not None:
            # An optimising sweeper (Optuna) cannot take nan; a raised error marks the trial failed
            # and, with hydra.sweeper.max_failure_rate, lets the study go on.
            raise TrialFailed(msg)
        return float("nan")
    print(f"mlptrain: error: {printable(msg)}", file=sys.stderr)
    sys.exit(code)


def register_plugins() -> None:
    """mlptrain's sweeper and launcher, once Hydra has scanned its plugins: the scan re-executes the
    hydra_plugins modules, and a class registered from an import made before it would not be the one
    Hydra instantiates. Done before the first composition, the ConfigStore no longer changes between
    precompose and Hydra's own compositions, which :func:`reuse_compositions` can then serve."""
    scan_plugins()
    from hydra_plugins.mlptrain_slurm import register as register_slurm
    from hydra_plugins.mlptrain_sweeper import register as register_sweeper

    register_sweeper()  # the basic sweeper, minus the per-job composition precompose has made redundant
    register_slurm()  # hydra/launcher=slurm


def main() -> None:
    """Console entry point."""
    if "--version" in sys.argv[1:]:
        from mlptrain.cli.version import version_text

        print(version_text())
        return
    global _in_command
    _in_command = True
    reuse_compositions()  # precompose's composition serves Hydra's two of the same overrides
    guard_hydra_writes()  # a full disk while Hydra writes .hydra/: one line, not its traceback
    logging.raiseExceptions = False  # a log file on a full disk: no traceback per line (the error is reported)
    try:
        if {"--help", "-h"} & set(sys.argv[1:]):
            if app_help(sys.argv[1:]):  # Hydra's own --help takes over a second
                return
        sys.argv[1:] = listify(sys.argv[1:])  # model.hidden=64 means [64]
        sys.argv[1:] = sweeper_argv(sys.argv[1:])  # hydra.sweeper.params.<key>=interval(...): a search's text
        if any(".resume=" in a for a in sys.argv[1:]):
            sys.argv[1:] = sweep_resume_argv(sys.argv[1:]) or sys.argv[1:]  # a sweep folder: continue it
        resuming = None
        if any(".resume=" in a or ".init_from=" in a for a in sys.argv[1:]):
            try:  # continue in the resumed run's dir, with its own overrides first
                sys.argv[1:], resuming = plan(sys.argv[1:])
            except CheckpointError as e:
                raise ConfigError(str(e)) from None
        register_plugins()  # before precompose, so that its composition is the one Hydra's reuse
        cfg = precompose(sys.argv[1:])
        if resuming is not None and cfg is not None:
            check_resume(resuming, cfg)  # before Hydra rewrites the run dir's .hydra/
        if cfg is not None and env_rank() == 0:  # an explicit hydra.run.dir refused before Hydra writes there
            rundir.refuse_before_hydra(sys.argv[1:], cfg.trainer.resume, cfg.trainer.overwrite)
        sys.argv[1:] = with_fixed_keys(sys.argv[1:])  # a sweep's job folders are named by what varies
    except ConfigError as e:
        print(f"mlptrain: error: {printable(str(e))}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    sys.argv += hydra_overrides()  # torchrun: ranks > 0 keep no .hydra/ of their own
    try:
        # Between and around the jobs no step is left to finish: a stop signal stops the command (a
        # sweep included) at once, with 128 + its number; the trainer handles its own during training.
        with signals.GracefulStop(at_once=True):
            _hydra_main()
    except (SystemExit, KeyboardInterrupt) as e:
        code = e.code if isinstance(e, SystemExit) else exit_code(e, 130)
        if isinstance(code, int) and code > 128 and continuation.current:  # an interrupted sweep
            print(f"mlptrain: sweep interrupted; continue it with: {continuation.current[0]}", file=sys.stderr)
        if isinstance(e, SystemExit):
            raise
        print(f"mlptrain: {printable(str(e) or 'interrupted')}", file=sys.stderr)
        sys.exit(code)
    finally:
        shutdown()
    failed = sweep.failed_jobs  # this sweep's failed jobs, in this process or others (joblib, submitit)
    if failed:
        print(f"mlptrain: error: {len(failed)} job(s) failed: " + "; ".join(failed), file=sys.stderr)
        sys.exit(EXIT_FAILED)


command = console(main)  # the console script and ``python -m mlptrain`` (mlptrain.quick_exit)

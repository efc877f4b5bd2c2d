"""The ``mlptrain`` command: compose with Hydra, validate, train one job, return the objective.

Only Hydra and the torch-free shell (config, compose, registry, errors) are imported at module
level, so ``mlptrain --help`` and a bad override answer quickly; torch comes in with the first
real run (:func:`run`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mlptrain import continuation, sweep
from mlptrain.cli.help import app_help
from mlptrain.cli.resume import resume_argv
from mlptrain.compose import CONFIG_PACKAGE, precompose, register_resolvers
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
)
from mlptrain.files import check_writable, record_failure
from mlptrain.jobdirs import register_resolver as register_job_dirname
from mlptrain.jobdirs import with_fixed_keys
from mlptrain.parallel.env import env_rank, hydra_overrides, quiet_logging, shutdown
from mlptrain.registry import sweep_direction

log = logging.getLogger("mlptrain")
register_resolvers()  # before Hydra resolves the run dir of the first job
register_job_dirname()  # hydra.sweep.subdir, in this process and in joblib/submitit workers


def hparams_of(raw: dict, choices: dict, overrides: list[str]) -> dict:
    """HParams for TensorBoard: the same keys for every job (group choices and the main knobs),
    plus every key overridden on the command line (identical across the jobs of one sweep)."""
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
        k = o.split("=", 1)[0].lstrip("+~")
        if k in flat and k not in keys:
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
    # torch-free until here: torch is imported after validation, with the code that trains
    from mlptrain import launch
    from mlptrain.job import JobContext, run_job

    ctx = JobContext(hparams_of(run_cfg.raw, choices or {}, overrides or []), list(overrides or []), direction)

    if launch.should_launch(run_cfg.trainer.devices):  # trainer.devices=N: start N ranks, like torchrun
        return launch.launch(run_cfg, out_dir, ctx)  # each rank runs run_job, which checks the direction
    return run_job(run_cfg, out_dir, ctx)


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
        if threads and cfg.trainer.num_threads == 0:
            cfg.trainer.num_threads = threads
        direction = sweep_direction(hc.sweeper)
        resume_in_own_dir(cfg, out_dir)  # a continued sweep: this job resumes from its own last.pt
    try:
        try:
            result = run(cfg, out_dir, dict(hc.runtime.choices), list(hc.overrides.task), direction)
        except BAD_INPUT as e:
            code, msg = EXIT_BAD_INPUT, str(e)
        except TrainingError as e:
            code, msg = exit_code(e, EXIT_FAILED), str(e)
        else:
            objective = result["objective"]
            return float("nan") if objective is None else float(objective)
    except KeyboardInterrupt as e:  # before training started, or a second Ctrl-C (signals.Abort)
        code, msg = exit_code(e, 130), str(e) or "interrupted"
    if env_rank() == 0:
        record_failure(out_dir, msg)
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


def main() -> None:
    """Console entry point."""
    try:
        if {"--help", "-h"} & set(sys.argv[1:]):
            if app_help(sys.argv[1:]):  # Hydra's own --help takes over a second
                return
        if any(".resume=" in a for a in sys.argv[1:]):
            sys.argv[1:] = sweep_resume_argv(sys.argv[1:]) or sys.argv[1:]  # a sweep folder: continue it
            try:  # continue in the resumed run's dir, with its own overrides first
                sys.argv[1:] = resume_argv(sys.argv[1:])
            except CheckpointError as e:
                raise ConfigError(str(e)) from None
        precompose(sys.argv[1:])
        sys.argv[1:] = with_fixed_keys(sys.argv[1:])  # a sweep's job folders are named by what varies
    except ConfigError as e:
        print(f"mlptrain: error: {printable(str(e))}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    # Imported after precompose: Hydra's first plugin scan re-executes the hydra_plugins modules, and a
    # class registered from an import made before it would not be the one Hydra instantiates.
    from hydra_plugins.mlptrain_slurm import register as register_slurm
    from hydra_plugins.mlptrain_sweeper import register as register_sweeper

    register_sweeper()  # the basic sweeper, minus the per-job composition precompose has made redundant
    register_slurm()  # hydra/launcher=slurm
    sys.argv += hydra_overrides()  # torchrun: ranks > 0 keep no .hydra/ of their own
    try:
        _hydra_main()
    except (SystemExit, KeyboardInterrupt) as e:
        code = e.code if isinstance(e, SystemExit) else 130
        if isinstance(code, int) and code > 128 and continuation.current:  # an interrupted sweep
            print(f"mlptrain: sweep interrupted; continue it with: {continuation.current[0]}", file=sys.stderr)
        raise
    finally:
        shutdown()
    failed = sweep.failed_jobs  # this sweep's failed jobs, in this process or others (joblib, submitit)
    if failed:
        print(f"mlptrain: error: {len(failed)} job(s) failed: " + "; ".join(failed), file=sys.stderr)
        sys.exit(EXIT_FAILED)

"""``mlptrain trainer.devices=N``: one Hydra job trains on N local processes (DDP ranks).

Hydra runs once and the job starts N workers with torch's elastic launcher (the engine behind
torchrun) on 127.0.0.1; each worker runs :func:`mlptrain.job.run_job`, as a single-process job
does.  It works under any Hydra launcher, so a SLURM job with N GPUs is one Hydra job that runs N
ranks.  How the ranks split the data is :mod:`mlptrain.parallel.collectives`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from mlptrain.config import RunConfig, parse
from mlptrain.errors import USER_ERRORS, ConfigError, from_record, to_record
from mlptrain.job import JobContext, run_job
from mlptrain.parallel.env import env_int, env_rank, launched, shutdown, usable_cores

log = logging.getLogger("mlptrain")


def should_launch(devices: int) -> bool:
    """Whether this job must start ``devices`` workers itself (it is not already one of torchrun's ranks)."""
    if not launched():
        return devices > 1
    local = env_int("LOCAL_WORLD_SIZE", env_int("WORLD_SIZE", 1))
    if devices not in (1, local):
        raise ConfigError(
            f"trainer.devices: {devices} but torchrun started {local} processes on this node; "
            "leave trainer.devices at 1 under torchrun, or set it to --nproc_per_node"
        )
    return False


def launch(run: RunConfig, out_dir: Path, ctx: JobContext) -> dict:
    """Train ``run`` on ``trainer.devices`` local processes; returns rank 0's metrics.

    A user error in a worker (bad config, divergence, a stop signal) comes back as the same exception,
    one line and exit code included; the worker also exits non-zero so the launcher stops the others.
    SIGINT/SIGTERM reach the workers once, from the launcher (which also stops the ones that would not).
    """
    n = run.trainer.devices
    _check_room(n, run.trainer.device)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=n,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        local_addr="127.0.0.1",
        max_restarts=0,
        start_method=_start_method(run.trainer.device),
    )
    # torch logs a failed worker's traceback itself; a user error is reported here in one line instead,
    # and any other failure still surfaces in full as the ChildFailedError raised below.
    noisy = [logging.getLogger(name) for name in ("torch.distributed.elastic", "torch.multiprocessing")]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.CRITICAL)
    # The agent installs its own signal handlers and leaves them: restore ours (the next job of a
    # sweep, or the trainer in this process, expects Ctrl-C to be a KeyboardInterrupt again).
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    env = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
    try:
        with tempfile.TemporaryDirectory(prefix="mlptrain-ddp-") as errors:
            try:
                args = (run.raw, str(out_dir), ctx, _log_spec(), errors)
                results = elastic_launch(config, _worker)(*args)
            except (ChildFailedError, SignalException):
                _raise_worker_error(Path(errors))
                raise
    finally:
        for logger, level in zip(noisy, levels):
            logger.setLevel(level)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if env is None:
            os.environ.pop("TORCHELASTIC_SIGNALS_TO_HANDLE", None)
    return results[0]


def _check_room(n: int, device: str) -> None:
    """Refuse, before starting anything, more ranks than this machine has GPUs (CUDA) or cores (CPU)."""
    if device.startswith("cuda:"):
        raise ConfigError(
            f"trainer.device: {device} would put every rank on one GPU; with trainer.devices use "
            "auto or cuda (rank r takes cuda:r)"
        )
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    room = torch.cuda.device_count() if cuda else usable_cores()
    if n > room and (cuda or device != "cuda"):
        what = f"{room} CUDA device(s)" if cuda else f"{room} CPU core(s)"
        raise ConfigError(f"trainer.devices: {n} processes but this machine has {what}; use at most {room}")


def _start_method(device: str) -> str:
    """fork where it is safe (Linux, CPU): the workers inherit the imported modules and start in a
    fraction of the time; spawn when CUDA may be used (a forked child cannot initialise CUDA)."""
    if sys.platform != "linux" or device.startswith("cuda"):
        return "spawn"
    if device == "cpu":
        return "fork"
    return "spawn" if torch.cuda.is_available() else "fork"


def _log_spec() -> tuple[int, list]:
    """The parent's (Hydra-configured) root handlers, so rank 0 logs to the same console and file."""
    root = logging.getLogger()
    spec = []
    for h in root.handlers:
        fmt = (h.formatter._fmt, h.formatter.datefmt) if h.formatter else (None, None)
        if isinstance(h, logging.FileHandler):
            spec.append(("file", h.baseFilename, *fmt))
        elif isinstance(h, logging.StreamHandler):
            spec.append(("stream", "stdout" if h.stream is sys.stdout else "stderr", *fmt))
    return root.level, spec


def _apply_log_spec(spec: tuple[int, list], main: bool) -> None:
    level, handlers = spec
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for kind, target, fmt, datefmt in handlers:
        if kind == "file" and not main:
            continue
        h = logging.FileHandler(target) if kind == "file" else logging.StreamHandler(getattr(sys, target))
        h.setFormatter(logging.Formatter(fmt, datefmt))
        root.addHandler(h)
    root.setLevel(level if main else logging.WARNING)


def _worker(raw: dict, out_dir: str, ctx: JobContext, log_spec, errors: str) -> dict:
    """One rank of ``mlptrain trainer.devices=N`` (the environment comes from the elastic agent)."""
    # submitit's USR2 (time limit) is for the launching process: it requeues the job and the launcher
    # then stops the ranks with SIGTERM, which they answer with a checkpoint.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    rank = env_rank()
    _apply_log_spec(log_spec, main=rank == 0)
    try:
        run = parse(OmegaConf.create(raw))
        # The job's threads (trainer.num_threads, else its cores) are shared by its ranks, not each
        # rank's: the Trainer then sets this per-rank count.
        given = run.trainer.num_threads if isinstance(run.trainer.num_threads, int) else 0  # auto: the cores
        run.trainer.num_threads = max(1, (given or usable_cores()) // run.trainer.devices)
        try:
            return run_job(run, Path(out_dir), ctx)
        except USER_ERRORS as e:
            Path(errors, f"rank{rank}.json").write_text(json.dumps(to_record(e)))
            raise
    finally:
        shutdown()


def _raise_worker_error(errors: Path) -> None:
    """Re-raise the first rank's user error in the launching process, if a worker recorded one."""
    for f in sorted(errors.glob("rank*.json"), key=lambda p: int(p.stem[4:])):
        raise from_record(json.loads(f.read_text())) from None

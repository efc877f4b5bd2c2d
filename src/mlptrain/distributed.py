"""Data-parallel training over processes: DistributedDataParallel plus the few collectives the trainer needs.

Two ways in, one code path in the trainer:

* ``torchrun --nproc_per_node=N -m mlptrain ...``: every rank runs the CLI, Hydra included.  Rank 0
  reserves the run dir and hands it to the others (:func:`from_rank0`, used by the run-dir resolver);
  the other ranks write nothing of their own (no ``.hydra/``, no log file, no events, no checkpoints).
* ``mlptrain trainer.devices=N``: Hydra runs once and the job starts N workers with torch's elastic
  launcher (the engine behind torchrun) on 127.0.0.1.  It works under any Hydra launcher, so a SLURM
  job with N GPUs is one Hydra job that runs N ranks.

Data: every rank draws the same seeded permutation each epoch and takes its slice of each *global*
batch (``DeviceBatches(rank=, world=)``), so the batches and their order are single-process training's.
A global batch that does not split evenly gives some ranks one row more; each rank then weights its
mean loss by its share (``DeviceBatches.share``) so the averaged gradient is exactly the gradient of
the global batch's mean loss.  Validation and test rows are split the same way and the outputs
gathered, so every rank computes the same metrics on the full set (ECE, R^2 and coverage are not sums,
so an all-reduce of per-rank metrics would not be exact).

gloo on CPU, nccl on CUDA (one GPU per rank: ``cuda:LOCAL_RANK``).  BatchNorm becomes SyncBatchNorm on
CUDA (global-batch statistics); on CPU, where torch has no SyncBatchNorm, statistics are per rank.

No torch at module level: the CLI imports this module.
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

from mlptrain.config import ConfigError

log = logging.getLogger("mlptrain")


# ----------------------------------------------------------------------------- the environment
def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def launched() -> bool:
    """True inside a process started by torchrun (or our elastic launch) as one of several ranks."""
    return _env_int("WORLD_SIZE", 1) > 1


def env_rank() -> int:
    return _env_int("RANK", 0) if launched() else 0


def init() -> None:
    """Join the process group that torchrun described in the environment (idempotent).

    Both backends are registered when CUDA exists: CPU tensors (the run-dir hand-over, CPU training)
    go through gloo, CUDA tensors through nccl.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def shutdown() -> None:
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def from_rank0(make):
    """``make()`` on rank 0, and its (picklable) result on every rank; a plain call in one process."""
    if not launched():
        return make()
    import torch.distributed as dist

    init()
    box = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def hydra_overrides() -> list[str]:
    """Extra Hydra overrides for this process: ranks other than 0 save no ``.hydra/`` of their own."""
    return ["hydra.output_subdir=null"] if env_rank() > 0 else []


def quiet_logging() -> None:
    """Ranks other than 0: warnings and errors on the console only (rank 0 owns the log file)."""
    if env_rank() == 0:
        return
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
            h.close()
    root.setLevel(logging.WARNING)


# ----------------------------------------------------------------------------- the trainer's view
STOP_EVERY = 16  # steps between the ranks' checks for a stop request (SIGTERM/SIGINT)


class Dist:
    """This process's place in the job.  With one process every method is the identity or a no-op."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @classmethod
    def setup(cls) -> "Dist":
        if not launched():
            return cls()
        import torch.distributed as dist

        init()
        return cls(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def place(self, device):
        """The device of this rank: ``cuda`` / ``auto`` become ``cuda:LOCAL_RANK``."""
        import torch

        if self.world == 1 or device.type == "cpu":
            return device
        if device.type != "cuda":
            raise ConfigError(f"trainer.device: {device.type} cannot train with several processes; "
                              "valid then: auto, cpu, cuda")
        if device.index is not None:
            raise ConfigError(f"trainer.device: {device} would put every rank on one GPU; with several "
                              "processes use auto or cuda (rank r takes cuda:LOCAL_RANK)")
        if self.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"trainer.devices: {_env_int('LOCAL_WORLD_SIZE', self.world)} processes on this "
                              f"node but only {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def wrap(self, module):
        """DistributedDataParallel around the training forward (evaluation keeps the bare module)."""
        if self.world == 1:
            return module
        import torch
        from torch.nn.parallel import DistributedDataParallel

        cuda = next(module.parameters()).is_cuda
        if cuda:  # global-batch BatchNorm statistics; same parameters, so the optimizer is unaffected
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DistributedDataParallel(module, device_ids=[self.local_rank] if cuda else None)

    def seed(self, seed: int, epoch: int) -> None:
        """Give ranks other than 0 their own dropout stream (a resume restores rank 0's on every rank)."""
        if self.rank > 0:
            import torch

            torch.manual_seed((seed * 1_000_003 + self.rank * 10_007 + epoch) % 2**63)

    def epoch_totals(self, losses, correct):
        """Once per epoch: per-step global-batch losses (ranks' weighted losses summed / world) and the
        total count of correct predictions."""
        if self.world == 1:
            return losses, correct
        import torch
        import torch.distributed as dist

        both = torch.cat([losses, correct.reshape(1).to(losses.dtype)])
        dist.all_reduce(both)
        return both[:-1] / self.world, both[-1]

    def resume_totals(self, losses, correct):
        """Accumulators, from a mid-epoch checkpoint's ``epoch_totals``, that ``epoch_totals`` will turn
        back into the same values: each rank keeps the mean losses, only rank 0 the count."""
        if self.rank > 0:
            correct = correct.new_zeros(())
        return losses, correct

    def stop_together(self, requested: bool, i: int) -> bool:
        """Whether to stop after step ``i``: at once in one process; with several, the ranks decide
        together every STOP_EVERY steps (a one-number all-reduce on the CPU, no device sync), so all stop
        after the same step and rank 0's checkpoint is everyone's state."""
        if self.world == 1:
            return requested
        return (i + 1) % STOP_EVERY == 0 and self.any(requested)

    def global_loss(self, loss):
        """The global batch's loss on every rank (for per-step decisions that every rank must share)."""
        if self.world == 1:
            return loss
        import torch.distributed as dist

        total = loss.detach().clone()
        dist.all_reduce(total)
        return total / self.world

    def split(self, x):
        """This rank's contiguous rows of an evaluation split."""
        return x if self.world == 1 else x.tensor_split(self.world)[self.rank]

    def gather(self, out, n: int):
        """Every rank's ``split`` outputs, concatenated in rank order: the outputs on all ``n`` rows."""
        if self.world == 1:
            return out
        import torch
        import torch.distributed as dist

        sizes = [n // self.world + (r < n % self.world) for r in range(self.world)]
        padded = out.new_zeros((sizes[0], *out.shape[1:]), dtype=torch.float32)
        padded[:len(out)] = out
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(out.dtype)

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (e.g. a stop request seen by one rank)."""
        if self.world == 1:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


# ----------------------------------------------------------------------------- mlptrain trainer.devices=N
def should_launch(devices: int) -> bool:
    """Whether this job must start ``devices`` workers itself (it is not already one of torchrun's ranks)."""
    if not launched():
        return devices > 1
    local = _env_int("LOCAL_WORLD_SIZE", _env_int("WORLD_SIZE", 1))
    if devices not in (1, local):
        raise ConfigError(f"trainer.devices: {devices} but torchrun started {local} processes on this node; "
                          "leave trainer.devices at 1 under torchrun, or set it to --nproc_per_node")
    return False


def launch(run, out_dir: Path, hparams: dict, overrides: list[str] | None = None) -> dict:
    """Train ``run`` on ``trainer.devices`` local processes; returns rank 0's metrics.

    A user error in a worker (bad config, divergence, a stop signal) comes back as the same exception,
    one line and exit code included; the worker also exits non-zero so the launcher stops the others.
    SIGINT/SIGTERM reach the workers once, from the launcher (which also stops the ones that would not).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    n = run.trainer.devices
    _check_room(n, run.trainer.device)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
                          max_restarts=0, start_method=_start_method(run.trainer.device))
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
                args = (run.raw, str(out_dir), hparams, list(overrides or []), _log_spec(), errors)
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


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_room(n: int, device: str) -> None:
    """Refuse, before starting anything, more ranks than this machine has GPUs (CUDA) or cores (CPU)."""
    import torch

    if device.startswith("cuda:"):
        raise ConfigError(f"trainer.device: {device} would put every rank on one GPU; with trainer.devices use "
                          "auto or cuda (rank r takes cuda:r)")
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    room = torch.cuda.device_count() if cuda else _usable_cores()
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
    import torch

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


def _worker(raw: dict, out_dir: str, hparams: dict, overrides: list[str], log_spec, errors: str) -> dict:
    """One rank of ``mlptrain trainer.devices=N`` (the environment comes from the elastic agent)."""
    from omegaconf import OmegaConf

    from mlptrain.config import parse

    # submitit's USR2 (time limit) is for the launching process: it requeues the job and the launcher
    # then stops the ranks with SIGTERM, which they answer with a checkpoint.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    rank = env_rank()
    _apply_log_spec(log_spec, main=rank == 0)
    try:
        run = parse(OmegaConf.create(raw))
        # The job's threads (trainer.num_threads, else its cores) are shared by its ranks, not each
        # rank's: the Trainer then sets this per-rank count.
        run.trainer.num_threads = max(1, (run.trainer.num_threads or _usable_cores()) // run.trainer.devices)
        from mlptrain.trainer import Trainer, out_of_memory

        try:
            try:
                return Trainer(run, Path(out_dir), hparams=hparams, overrides=overrides).fit()
            except (MemoryError, RuntimeError) as e:
                raise out_of_memory(e) or e
        except _user_errors() as e:
            record = {"type": type(e).__name__, "message": str(e), "exit_code": getattr(e, "exit_code", None)}
            Path(errors, f"rank{rank}.json").write_text(json.dumps(record))
            raise
    finally:
        shutdown()


def _user_errors() -> tuple:
    from mlptrain.checkpoint import CheckpointError
    from mlptrain.data import DataError
    from mlptrain.signals import Abort
    from mlptrain.trainer import TrainingError, TrainingInterrupted

    return ConfigError, DataError, CheckpointError, TrainingError, TrainingInterrupted, Abort


def _raise_worker_error(errors: Path) -> None:
    """Re-raise the first rank's user error in the launching process, if a worker recorded one."""
    from mlptrain.signals import Abort
    from mlptrain.trainer import TrainingInterrupted

    for f in sorted(errors.glob("rank*.json"), key=lambda p: int(p.stem[4:])):
        e = json.loads(f.read_text())
        if e["type"] == "TrainingInterrupted":
            raise TrainingInterrupted(e["message"], e["exit_code"]) from None
        if e["type"] == "Abort":
            raise Abort(e["exit_code"] - 128, e["message"]) from None
        raise {c.__name__: c for c in _user_errors()}[e["type"]](e["message"]) from None

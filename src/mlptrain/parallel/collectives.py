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

The launcher for ``trainer.devices=N`` is :mod:`mlptrain.launch`; the environment is :mod:`mlptrain.parallel.env`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from mlptrain.errors import ConfigError
from mlptrain.parallel.env import env_int, init, launched

STOP_EVERY = 16  # steps between the ranks' checks for a stop request (SIGTERM/SIGINT)


class Dist:
    """This process's place in the job.  With one process every method is the identity or a no-op."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.rank, self.world, self.local_rank = rank, world, local_rank

    @classmethod
    def setup(cls) -> Dist:
        if not launched():
            return cls()
        init()
        return cls(dist.get_rank(), dist.get_world_size(), env_int("LOCAL_RANK", 0))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def place(self, device):
        """The device of this rank: ``cuda`` / ``auto`` become ``cuda:LOCAL_RANK``."""
        if self.world == 1 or device.type == "cpu":
            return device
        if device.type != "cuda":
            raise ConfigError(
                f"trainer.device: {device.type} cannot train with several processes; valid then: auto, cpu, cuda"
            )
        if device.index is not None:
            raise ConfigError(
                f"trainer.device: {device} would put every rank on one GPU; with several "
                "processes use auto or cuda (rank r takes cuda:LOCAL_RANK)"
            )
        if self.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"trainer.devices: {env_int('LOCAL_WORLD_SIZE', self.world)} processes on this "
                f"node but only {torch.cuda.device_count()} CUDA device(s)"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def wrap(self, module):
        """DistributedDataParallel around the training forward (evaluation keeps the bare module)."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel  # only with several processes

        cuda = next(module.parameters()).is_cuda
        if cuda:  # global-batch BatchNorm statistics; same parameters, so the optimizer is unaffected
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DistributedDataParallel(module, device_ids=[self.local_rank] if cuda else None)

    def seed(self, seed: int, epoch: int) -> None:
        """Give ranks other than 0 their own dropout stream (a resume restores rank 0's on every rank)."""
        if self.rank > 0:
            torch.manual_seed((seed * 1_000_003 + self.rank * 10_007 + epoch) % 2**63)

    def epoch_totals(self, losses, correct):
        """Once per epoch: per-step global-batch losses (ranks' weighted losses summed / world) and the
        total count of correct predictions."""
        if self.world == 1:
            return losses, correct
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
        sizes = [n // self.world + (r < n % self.world) for r in range(self.world)]
        padded = out.new_zeros((sizes[0], *out.shape[1:]), dtype=torch.float32)
        padded[: len(out)] = out
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(out.dtype)

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (e.g. a stop request seen by one rank)."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

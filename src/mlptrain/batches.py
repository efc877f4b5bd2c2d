"""Device-resident shuffled batches: the whole split lives on the training device.

One ``randperm`` per epoch from a seeded generator, then batches are tensor
slices gathered by index: no per-sample Python, no DataLoader, no host copies.
"""

from __future__ import annotations

import torch

from mlptrain.errors import ConfigError


class DeviceBatches:
    """Iterate ``(x, y)`` minibatches of a split held on ``device``, in a fresh seeded order each epoch.

    The generator lives on the CPU so the order is the same on every device; its
    state goes into checkpoints, so a resumed run continues the same sequence.
    ``start`` skips the first batches of an epoch (resuming mid-epoch).

    Data parallel (``world`` > 1): ``batch_size`` is the global batch; every rank draws the same
    permutation and yields its ``rank``-th slice of each global batch (sizes differ by at most one).
    ``share`` is then this slice's size times ``world`` over the global batch's size: the weight of
    this rank's mean loss that makes DDP's gradient average the global batch's gradient.  A last
    global batch with fewer rows than ranks is dropped (some rank would get none).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
        w: torch.Tensor | None = None,
    ):
        if batch_size < world:
            raise ConfigError(
                f"trainer.batch_size: {batch_size} is smaller than the {world} processes it is "
                f"split across; use at least {world}"
            )
        self.x, self.y = x.to(device), y.to(device)
        self.w = w.to(device) if w is not None else None  # per-row loss weights (dataset.weight)
        self.idx: torch.Tensor | None = None  # the rows of the batch last yielded
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world, self.share = rank, world, 1.0

    def __len__(self) -> int:
        n = len(self.x)
        tail = n % self.batch_size
        if 0 < tail < self.world:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def epoch(self, start: int = 0, order: torch.Tensor | None = None):
        """Yield the epoch's batches; ``order`` replays a saved permutation (resume)."""
        if order is None:
            order = torch.randperm(len(self.x), generator=self.generator)
        self.order = order
        perm = order.to(self.x.device, non_blocking=True)
        for i in range(start, len(self)):
            idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
            if self.world > 1:
                mine = idx.tensor_split(self.world)[self.rank]
                self.share = len(mine) * self.world / len(idx)
                idx = mine
            self.idx = idx
            yield self.x[idx], self.y[idx]

    def weights(self) -> torch.Tensor | None:
        """The loss weights of the rows of the batch last yielded (None: unweighted)."""
        return self.w[self.idx] if self.w is not None else None

"""Device-resident shuffled batches: the whole split lives on the training device.

One ``randperm`` per epoch from a seeded generator, then batches are tensor
slices gathered by index: no per-sample Python, no DataLoader, no host copies.
"""

from __future__ import annotations

import torch


class DeviceBatches:
    """Iterate ``(x, y)`` minibatches of a split held on ``device``, in a fresh seeded order each epoch.

    The generator lives on the CPU so the order is the same on every device; its
    state goes into checkpoints, so a resumed run continues the same sequence.
    ``start`` skips the first batches of an epoch (resuming mid-epoch).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, device: torch.device,
                 drop_last: bool = False):
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size = batch_size
        self.device = device
        self.drop_last = drop_last and len(x) > batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, start: int = 0, order: torch.Tensor | None = None):
        """Yield the epoch's batches; ``order`` replays a saved permutation (resume)."""
        if order is None:
            order = torch.randperm(len(self.x), generator=self.generator)
        self.order = order
        perm = order.to(self.device, non_blocking=True)
        for i in range(start, len(self)):
            idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def eval_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int):
    """Contiguous, unshuffled slices for evaluation."""
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]

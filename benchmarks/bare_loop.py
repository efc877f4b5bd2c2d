"""Reference (a): a minimal hand-written PyTorch loop over MNIST preloaded as tensors.

The whole training set is normalised once and kept as one tensor; each epoch
takes a fresh permutation and slices minibatches from it.  No DataLoader, no
logging, no checkpoints: the fastest thing a user writes by hand.

    python benchmarks/bare_loop.py --data-dir /path/with/MNIST
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision import datasets

from _reference import EpochTimer, mlp, parse_args


def preload(data_dir: str, train: bool, device):
    ds = datasets.MNIST(data_dir, train=train, download=False)
    x = ds.data.float().div_(255).sub_(0.1307).div_(0.3081).to(device)  # in place: one float copy
    return x, ds.targets.to(device)


def train_steps(model, optimizer, x, y, order, batch_size: int) -> None:
    """One pass over ``order``: the loop the benchmark calls "bare"."""
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    x, y = preload(args.data_dir, True, device)
    x_test, y_test = preload(args.data_dir, False, device)
    model = mlp(args.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    timer = EpochTimer(device)
    for _ in range(args.epochs):
        model.train()
        timer.start()
        train_steps(model, optimizer, x, y, torch.randperm(len(x), device=device), args.batch_size)
        timer.stop(len(x))
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    timer.report(acc)


if __name__ == "__main__":
    main()

"""Reference (b): the usual torchvision + DataLoader loop, as in pytorch/examples' mnist.

Images are decoded per sample by ``ToTensor`` and ``Normalize`` and collated by
a ``DataLoader`` (``num_workers=0``); the loss is printed every 10 batches.

    python benchmarks/dataloader_loop.py --data-dir /path/with/MNIST
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from _reference import EpochTimer, mlp, parse_args

LOG_INTERVAL = 10


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(args.data_dir, train=True, download=False, transform=transform)
    test_set = datasets.MNIST(args.data_dir, train=False, download=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=0, pin_memory=cuda)
    test_loader = DataLoader(test_set, batch_size=1000, num_workers=0, pin_memory=cuda)
    model = mlp(args.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    timer = EpochTimer(device)
    for epoch in range(1, args.epochs + 1):
        model.train()
        timer.start()
        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device, non_blocking=cuda), target.to(device, non_blocking=cuda)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
            if batch_idx % LOG_INTERVAL == 0:
                print(f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_set)}]\tLoss: {loss.item():.6f}")
        timer.stop(len(train_set))
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            correct += (model(data).argmax(1) == target).sum().item()
    timer.report(correct / len(test_set))


if __name__ == "__main__":
    main()

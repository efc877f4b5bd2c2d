"""What the reference scripts share: the task, its arguments and how they report; and the median
timer the other benchmarks use (:func:`median_s`).

The task is the one the benchmark times for every contender: an MLP
784-512-512-10 with ReLU, cross-entropy, Adam (lr 1e-3), batch 128, fp32,
MNIST's 60 000 training images, then one evaluation on the 10 000 test images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", required=True, help="folder holding MNIST/raw/ (torchvision's layout)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", default="512,512", help="hidden sizes, comma-separated")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def mlp(hidden: str):
    from torch import nn

    sizes = [784, *map(int, hidden.split(",")), 10]
    layers: list = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def sync(device) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer:
    """Per-epoch training times and sample counts, printed as one JSON line at the end."""

    def __init__(self, device):
        self.device, self.times, self.samples = device, [], []

    def start(self) -> None:
        sync(self.device)
        self.t0 = time.perf_counter()

    def stop(self, samples: int) -> None:
        sync(self.device)
        self.times.append(time.perf_counter() - self.t0)
        self.samples.append(samples)

    def report(self, test_acc: float) -> None:
        print(
            "RESULT " + json.dumps({"epoch_times": self.times, "epoch_samples": self.samples, "test_acc": test_acc}),
            flush=True,
        )


def median_s(fn, repeats: int, warmup: bool = False) -> float:
    """The median wall time of ``repeats`` calls of ``fn`` (after one untimed call with ``warmup``:
    first-call imports, the allocator)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)

"""Embedded toy sets, generated from a seed: 2-D classification and small regression problems.

Each set is a function ``(cfg, generator) -> (x, y)`` named in :data:`mlptrain.registry.DATASETS`.
"""

from __future__ import annotations

import math

import torch

from mlptrain.data.bundle import DataBundle, split_indices, standardisation
from mlptrain.registry import DATASETS, resolve


def spirals(cfg, g):
    n, k, noise = cfg.n_samples, cfg.n_classes, cfg.noise
    # CS231n-style arms: radius grows along the arm, angle winds with it.
    y = torch.arange(n) % k
    t = torch.rand(n, generator=g)
    theta = y * (2 * math.pi / k) + t * 4.0 + noise * torch.randn(n, generator=g)
    x = torch.stack([t * torch.sin(theta), t * torch.cos(theta)], 1)
    return x, y


def moons(cfg, g):
    n, noise = cfg.n_samples, cfg.noise
    y = torch.arange(n) % 2
    a = torch.rand(n, generator=g) * math.pi
    x = torch.where(
        (y == 0)[:, None],
        torch.stack([torch.cos(a), torch.sin(a)], 1),
        torch.stack([1 - torch.cos(a), 0.5 - torch.sin(a)], 1),
    )
    return x + noise * torch.randn(n, 2, generator=g), y


def circles(cfg, g):
    n, noise = cfg.n_samples, cfg.noise
    y = torch.arange(n) % 2
    a = torch.rand(n, generator=g) * 2 * math.pi
    r = torch.where(y == 0, 1.0, 0.5)
    x = torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)
    return x + noise * 0.5 * torch.randn(n, 2, generator=g), y


def xor(cfg, g):
    n, noise = cfg.n_samples, cfg.noise
    x = torch.rand(n, 2, generator=g) * 2 - 1
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()
    return x + noise * 0.5 * torch.randn(n, 2, generator=g), y


def blobs(cfg, g):
    n, k, noise = cfg.n_samples, cfg.n_classes, cfg.noise
    centres = torch.rand(k, 2, generator=g) * 10 - 5
    y = torch.arange(n) % k
    return centres[y] + (noise * 5) * torch.randn(n, 2, generator=g), y


def sine(cfg, g):
    n, noise = cfg.n_samples, cfg.noise
    x = torch.rand(n, 1, generator=g) * 6 - 3
    return x, torch.sin(x[:, 0]) + noise * torch.randn(n, generator=g)


def friedman1(cfg, g):
    n, d, noise = cfg.n_samples, cfg.n_features, cfg.noise
    x = torch.rand(n, d, generator=g)
    y = 10 * torch.sin(math.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
    return x, y + noise * torch.randn(n, generator=g)


def heteroscedastic(cfg, g):
    n, noise = cfg.n_samples, cfg.noise
    # Noise standard deviation grows linearly with x: noise at x=-3 up to 4*noise at x=3.
    x = torch.rand(n, 1, generator=g) * 6 - 3
    sigma = noise * (1 + (x[:, 0] + 3) / 2)
    return x, torch.sin(x[:, 0]) + sigma * torch.randn(n, generator=g)


COUNT_FEATURES = 3


def count_rate(x: torch.Tensor) -> torch.Tensor:
    """The Poisson rate of ``counts`` at inputs x in [-1, 1]^3: log rate = 1 + sin(pi x0) + x1 x2, so the
    rate runs from e^-1 = 0.37 to e^3 = 20 (many zeros and ones at one end, a spread of 4.5 at the other)."""
    return torch.exp(1 + torch.sin(math.pi * x[:, 0]) + x[:, 1] * x[:, 2])


def counts(cfg, g):
    n = cfg.n_samples
    # Counts whose log rate is nonlinear in the inputs; the Poisson draw is the only noise (dataset.noise
    # is not used), so the variance equals the mean everywhere.
    x = torch.rand(n, COUNT_FEATURES, generator=g) * 2 - 1
    return x, torch.poisson(count_rate(x), generator=g)


def generate(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of the synthetic set ``cfg.name``, from its own seed."""
    spec = DATASETS[cfg.name]
    x, y = resolve(spec.make)(cfg, torch.Generator().manual_seed(cfg.seed))
    return x.float(), y


def n_classes(cfg) -> int:
    """Classes of a classification set: its config's n_classes, or the fixed count (moons, circles and xor
    are binary)."""
    classes = DATASETS[cfg.name].classes
    return getattr(cfg, classes) if isinstance(classes, str) else classes


def load_synthetic(cfg) -> DataBundle:
    x, y = generate(cfg)
    tr, va, te = split_indices(len(x), cfg.val_fraction, cfg.test_fraction, cfg.seed + 1)
    mean, std = standardisation(x[tr])
    classification = not y.is_floating_point()
    return DataBundle(
        name=cfg.name,
        task="classification" if classification else "regression",
        x_train=x[tr],
        y_train=y[tr],
        x_val=x[va],
        y_val=y[va],
        x_test=x[te],
        y_test=y[te],
        x_mean=mean,
        x_std=std,
        class_names=[str(c) for c in range(n_classes(cfg))] if classification else None,
        input_shape=(x.shape[1],),
    )

"""Embedded toy sets, generated from a seed: 2-D classification and small regression problems."""

from __future__ import annotations

import math

import torch

from mlptrain.data.bundle import DataBundle, split_indices, standardisation


def _spirals(n, k, noise, g):
    # CS231n-style arms: radius grows along the arm, angle winds with it.
    y = torch.arange(n) % k
    t = torch.rand(n, generator=g)
    theta = y * (2 * math.pi / k) + t * 4.0 + noise * torch.randn(n, generator=g)
    x = torch.stack([t * torch.sin(theta), t * torch.cos(theta)], 1)
    return x, y


def _moons(n, noise, g):
    y = torch.arange(n) % 2
    a = torch.rand(n, generator=g) * math.pi
    x = torch.where(
        (y == 0)[:, None],
        torch.stack([torch.cos(a), torch.sin(a)], 1),
        torch.stack([1 - torch.cos(a), 0.5 - torch.sin(a)], 1),
    )
    return x + noise * torch.randn(n, 2, generator=g), y


def _circles(n, noise, g):
    y = torch.arange(n) % 2
    a = torch.rand(n, generator=g) * 2 * math.pi
    r = torch.where(y == 0, 1.0, 0.5)
    x = torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)
    return x + noise * 0.5 * torch.randn(n, 2, generator=g), y


def _xor(n, noise, g):
    x = torch.rand(n, 2, generator=g) * 2 - 1
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()
    return x + noise * 0.5 * torch.randn(n, 2, generator=g), y


def _blobs(n, k, noise, g):
    centres = torch.rand(k, 2, generator=g) * 10 - 5
    y = torch.arange(n) % k
    return centres[y] + (noise * 5) * torch.randn(n, 2, generator=g), y


def _sine(n, noise, g):
    x = torch.rand(n, 1, generator=g) * 6 - 3
    return x, torch.sin(x[:, 0]) + noise * torch.randn(n, generator=g)


def _friedman1(n, d, noise, g):
    x = torch.rand(n, d, generator=g)
    y = (10 * torch.sin(math.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2
         + 10 * x[:, 3] + 5 * x[:, 4])
    return x, y + noise * torch.randn(n, generator=g)


def _heteroscedastic(n, noise, g):
    # Noise standard deviation grows linearly with x: noise at x=-3 up to 4*noise at x=3.
    x = torch.rand(n, 1, generator=g) * 6 - 3
    sigma = noise * (1 + (x[:, 0] + 3) / 2)
    return x, torch.sin(x[:, 0]) + sigma * torch.randn(n, generator=g)


COUNT_FEATURES = 3


def count_rate(x: torch.Tensor) -> torch.Tensor:
    """The Poisson rate of ``counts`` at inputs x in [-1, 1]^3: log rate = 1 + sin(pi x0) + x1 x2, so the
    rate runs from e^-1 = 0.37 to e^3 = 20 (many zeros and ones at one end, a spread of 4.5 at the other)."""
    return torch.exp(1 + torch.sin(math.pi * x[:, 0]) + x[:, 1] * x[:, 2])


def _counts(n, g):
    # Counts whose log rate is nonlinear in the inputs; the Poisson draw is the only noise (dataset.noise
    # is not used), so the variance equals the mean everywhere.
    x = torch.rand(n, COUNT_FEATURES, generator=g) * 2 - 1
    return x, torch.poisson(count_rate(x), generator=g)


def generate(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(cfg.seed)
    n, noise = cfg.n_samples, cfg.noise
    make = {
        "spirals": lambda: _spirals(n, cfg.n_classes, noise, g),
        "moons": lambda: _moons(n, noise, g),
        "circles": lambda: _circles(n, noise, g),
        "xor": lambda: _xor(n, noise, g),
        "blobs": lambda: _blobs(n, cfg.n_classes, noise, g),
        "sine": lambda: _sine(n, noise, g),
        "friedman1": lambda: _friedman1(n, cfg.n_features, noise, g),
        "heteroscedastic": lambda: _heteroscedastic(n, noise, g),
        "counts": lambda: _counts(n, g),
    }[cfg.name]
    x, y = make()
    return x.float(), y


def n_classes(cfg) -> int:
    return cfg.classes


def load_synthetic(cfg) -> DataBundle:
    x, y = generate(cfg)
    tr, va, te = split_indices(len(x), cfg.val_fraction, cfg.test_fraction, cfg.seed + 1)
    mean, std = standardisation(x[tr])
    classification = not y.is_floating_point()
    return DataBundle(
        name=cfg.name,
        task="classification" if classification else "regression",
        x_train=x[tr], y_train=y[tr], x_val=x[va], y_val=y[va], x_test=x[te], y_test=y[te],
        x_mean=mean, x_std=std,
        class_names=[str(c) for c in range(n_classes(cfg))] if classification else None,
        input_shape=(x.shape[1],),
    )

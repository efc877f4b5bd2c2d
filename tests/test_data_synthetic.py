"""The embedded regression and probabilistic toy sets: shapes, formulas, seeding, the noise structure."""

from __future__ import annotations

import math

import pytest
import torch

from mlptrain.config import SyntheticConfig
from mlptrain.data import load_dataset
from mlptrain.data.synthetic import generate


def test_sine_is_sin_plus_noise_and_seeded():
    cfg = SyntheticConfig(name="sine", n_samples=4000, noise=0.2)
    x, y = generate(cfg)
    assert x.shape == (4000, 1) and y.dtype == torch.float32
    assert (x.min() >= -3) and (x.max() <= 3)
    residual = y - torch.sin(x[:, 0])
    assert residual.std().item() == pytest.approx(0.2, rel=0.1) and abs(residual.mean().item()) < 0.02
    assert torch.equal(generate(cfg)[1], y)
    assert not torch.equal(generate(SyntheticConfig(name="sine", n_samples=4000, noise=0.2, seed=1))[1], y)


def test_friedman1_follows_its_formula_and_extra_features_are_noise():
    x, y = generate(SyntheticConfig(name="friedman1", n_samples=500, noise=0.0, n_features=12))
    assert x.shape == (500, 12)
    f = 10 * torch.sin(math.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
    assert torch.allclose(y, f, atol=1e-5)


def test_heteroscedastic_noise_grows_with_x():
    x, y = generate(SyntheticConfig(name="heteroscedastic", n_samples=20000, noise=0.2))
    residual = y - torch.sin(x[:, 0])
    left, right = residual[x[:, 0] < -2].std().item(), residual[x[:, 0] > 2].std().item()
    # std = noise * (1 + (x + 3) / 2); its root mean square is 0.252 over [-3, -2] and 0.751 over [2, 3]
    assert left == pytest.approx(0.252, rel=0.08) and right == pytest.approx(0.751, rel=0.08)


@pytest.mark.parametrize("name, d", [("sine", 1), ("friedman1", 10), ("heteroscedastic", 1)])
def test_regression_bundles_carry_task_and_training_statistics(name, d):
    data = load_dataset(SyntheticConfig(name=name, n_samples=600))
    assert data.task == "regression" and data.class_names is None and data.n_outputs == 1 and data.in_features == d
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (420, 90, 90)
    assert torch.allclose(data.x_mean, data.x_train.mean(0), atol=1e-5)
    assert torch.allclose(data.y_mean, data.y_train.mean(0)) and torch.allclose(data.y_std, data.y_train.std(0))


def test_counts_are_poisson_draws_of_a_nonlinear_rate_and_seeded():
    from mlptrain.data.synthetic import count_rate

    cfg = SyntheticConfig(name="counts", n_samples=20000)
    x, y = generate(cfg)
    assert x.shape == (20000, 3) and (x.abs() <= 1).all() and y.dtype == torch.float32
    assert (y >= 0).all() and torch.equal(y, y.round())  # counts: whole numbers >= 0
    rate = count_rate(x)
    torch.testing.assert_close(rate, torch.exp(1 + torch.sin(math.pi * x[:, 0]) + x[:, 1] * x[:, 2]))
    pearson = (y - rate) / rate.sqrt()  # mean 0 and variance 1 exactly when y ~ Poisson(rate)
    assert abs(pearson.mean().item()) < 0.03 and pearson.var().item() == pytest.approx(1.0, abs=0.05)
    low, high = rate < 1, rate > 10
    assert (y[low] == 0).float().mean() > 0.4 and y[high].var().item() > 10  # small and large counts both occur
    assert torch.equal(generate(cfg)[1], y)
    assert not torch.equal(generate(SyntheticConfig(name="counts", n_samples=20000, seed=1))[1], y)
    data = load_dataset(SyntheticConfig(name="counts", n_samples=600))
    assert data.task == "regression" and data.n_outputs == 1 and data.in_features == 3

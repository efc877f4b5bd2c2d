"""Losses as likelihoods: the identities behind them, the heads they need, and the metrics they report."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, mlptrain

from mlptrain.config import (LOSSES, SYNTHETIC_CLASSIFICATION, SYNTHETIC_REGRESSION, ConfigError, LossConfig, ModelConfig,
                             SyntheticConfig, parse)
from mlptrain.data.synthetic import load_synthetic
from mlptrain.losses import METRICS, Task, build_task, elementwise_nll, expected_calibration_error, monitor_of
from mlptrain.model import build_model

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def task_for(loss: str, n_outputs: int = 3, task: str = "classification") -> Task:
    meta = {"name": "test", "task": task, "n_outputs": n_outputs}
    return build_task(LossConfig(name=loss), meta, torch.zeros(n_outputs), torch.ones(n_outputs))


def value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    value = fn(x)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


# ----------------------------------------------------------------------------- identities
def test_nll_of_log_softmax_equals_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(64, 5, generator=g) * 3, torch.randint(0, 5, (64,), generator=g)
    ours_nll = value_and_grad(lambda z: task_for("nll", 5).loss(z, y), logits)
    ours_ce = value_and_grad(lambda z: task_for("cross_entropy", 5).loss(z, y), logits)
    reference = value_and_grad(lambda z: F.cross_entropy(z, y), logits)
    for ours in (ours_nll, ours_ce):
        torch.testing.assert_close(ours[0], reference[0])
        torch.testing.assert_close(ours[1], reference[1])
    # and the gradient is the familiar (softmax - onehot) / n
    torch.testing.assert_close(reference[1], (F.softmax(logits, 1) - F.one_hot(y, 5)) / 64)


def test_gaussian_nll_with_unit_variance_is_half_mse_plus_constant_in_value_and_gradient():
    g = torch.Generator().manual_seed(1)
    mean, y = torch.randn(50, 1, generator=g), torch.randn(50, generator=g)
    task = task_for("gaussian_nll", 1, "regression")
    ones = torch.ones(50, 1)
    nll = value_and_grad(lambda m: task.loss(torch.cat([m, ones], 1), y), mean)
    half_mse = value_and_grad(lambda m: F.mse_loss(m, y[:, None]) / 2 + HALF_LOG_2PI, mean)
    torch_ref = value_and_grad(lambda m: F.gaussian_nll_loss(m, y[:, None], ones, full=True), mean)
    for ref in (half_mse, torch_ref):
        torch.testing.assert_close(nll[0], ref[0])
        torch.testing.assert_close(nll[1], ref[1])


def test_laplace_nll_with_unit_scale_is_l1_plus_log_two():
    g = torch.Generator().manual_seed(2)
    mean, y = torch.randn(50, 1, generator=g), torch.randn(50, generator=g)
    task = task_for("laplace_nll", 1, "regression")
    nll = value_and_grad(lambda m: task.loss(torch.cat([m, torch.ones(50, 1)], 1), y), mean)
    l1 = value_and_grad(lambda m: F.l1_loss(m, y[:, None]) + math.log(2), mean)
    torch.testing.assert_close(nll[0], l1[0])
    torch.testing.assert_close(nll[1], l1[1])


def test_bce_on_one_logit_equals_two_class_cross_entropy():
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(40, 1, generator=g) * 4, torch.randint(0, 2, (40,), generator=g)
    bce = value_and_grad(lambda t: task_for("bce", 2).loss(t, y), z)
    # Bernoulli(sigmoid(z)) is the categorical softmax([0, z]).
    ce = value_and_grad(lambda t: F.cross_entropy(torch.cat([torch.zeros_like(t), t], 1), y), z)
    torch.testing.assert_close(bce[0], ce[0])
    torch.testing.assert_close(bce[1], ce[1])
    torch.testing.assert_close(bce[0], F.binary_cross_entropy_with_logits(z[:, 0], y.float()))


def test_mse_on_classes_is_the_brier_score_and_its_softmax_gradient_vanishes_when_confidently_wrong():
    y = torch.tensor([0])
    wrong = torch.tensor([[-8.0, 8.0, 0.0]])  # all mass on class 1, the truth is class 0
    _, g_mse = value_and_grad(lambda z: task_for("mse", 3).loss(z, y), wrong)
    _, g_ce = value_and_grad(lambda z: task_for("cross_entropy", 3).loss(z, y), wrong)
    assert g_ce.abs().max() > 0.9  # CE: softmax - onehot, about -1 on the true class
    assert g_mse.abs().max() < 1e-3  # MSE through softmax: multiplied by p(1-p), about 0
    p = F.softmax(wrong, 1)
    torch.testing.assert_close(task_for("mse", 3).loss(wrong, y), ((p - F.one_hot(y, 3)) ** 2).sum())


# ----------------------------------------------------------------------------- metrics
def test_reported_nll_is_the_loss_for_probabilistic_heads_per_example_over_outputs():
    g = torch.Generator().manual_seed(4)
    y = torch.randn(30, 2, generator=g)
    for loss in ("gaussian_nll", "laplace_nll"):
        task = task_for(loss, 2, "regression")
        out = torch.cat([torch.randn(30, 2, generator=g), torch.rand(30, 2, generator=g) + 0.1], 1)
        m = task.metrics(out, y)
        assert m["nll"] == pytest.approx(m["loss"], rel=1e-6)
        per_element = elementwise_nll(task.family, out[:, :2], y, out[:, 2:])
        assert m["nll"] == pytest.approx(per_element.sum().item() / 30, rel=1e-6)
    ref = F.gaussian_nll_loss(out[:, :2], y, out[:, 2:] ** 2, full=True, reduction="sum") / 30
    m = task_for("gaussian_nll", 2, "regression").metrics(torch.cat([out[:, :2], out[:, 2:] ** 2], 1), y)
    assert m["nll"] == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("loss, sample", [
    ("gaussian_nll", lambda g, n: torch.randn(n, generator=g) * 2.0),  # variance 4
    ("laplace_nll", lambda g, n: torch.distributions.Laplace(0.0, 2.0).sample((n,))),  # scale 2
])
def test_central_95_interval_covers_95_percent_of_draws_from_the_predicted_distribution(loss, sample):
    torch.manual_seed(5)
    n = 40_000
    y = sample(torch.Generator().manual_seed(5), n)
    spread = 4.0 if loss == "gaussian_nll" else 2.0
    out = torch.stack([torch.zeros(n), torch.full((n,), spread)], 1)
    m = task_for(loss, 1, "regression").metrics(out, y)
    assert m["coverage95"] == pytest.approx(0.95, abs=0.005)
    entropy = 0.5 * math.log(2 * math.pi * math.e * 4.0) if loss == "gaussian_nll" else 1 + math.log(4.0)
    assert m["nll"] == pytest.approx(entropy, abs=0.02)  # E[-log p] under the true model = its entropy


def test_point_regressor_gets_a_constant_spread_fitted_on_validation_residuals():
    task = task_for("mse", 1, "regression")
    g = torch.Generator().manual_seed(6)
    y, pred = torch.randn(200, generator=g), torch.randn(200, 1, generator=g)
    task.calibrate(pred, y)
    sigma2 = (pred[:, 0] - y).pow(2).mean()
    torch.testing.assert_close(task.head.spread, sigma2.reshape(1))
    m = task.metrics(pred, y)
    # the MLE constant variance makes the NLL a function of the RMSE alone
    assert m["nll"] == pytest.approx(0.5 * math.log(2 * math.pi * m["rmse"] ** 2) + 0.5, rel=1e-5)
    l1 = task_for("l1", 1, "regression")
    l1.calibrate(pred, y)
    torch.testing.assert_close(l1.head.spread, (pred[:, 0] - y).abs().mean().reshape(1))
    assert l1.metrics(pred, y)["nll"] == pytest.approx(1 + math.log(2 * l1.head.spread.item()), rel=1e-5)


def test_expected_calibration_error_against_a_direct_loop():
    p = torch.tensor([[0.8, 0.2]] * 10)
    assert expected_calibration_error(p, torch.tensor([0] * 8 + [1] * 2)).item() == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(p, torch.ones(10, dtype=torch.long)).item() == pytest.approx(0.8)
    g = torch.Generator().manual_seed(7)
    p = F.softmax(torch.randn(500, 4, generator=g) * 2, 1)
    y = torch.randint(0, 4, (500,), generator=g)
    conf, pred = p.max(1)
    expected = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        inside = (conf >= lo) & ((conf < hi) if b < 14 else (conf <= hi))
        if inside.any():
            gap = (pred[inside] == y[inside]).float().mean() - conf[inside].mean()
            expected += inside.float().mean().item() * abs(gap.item())
    assert expected_calibration_error(p, y).item() == pytest.approx(expected, rel=1e-5)


def test_expected_calibration_error_of_a_diverged_model_is_nan_not_a_crash():
    p = torch.tensor([[0.8, 0.2], [math.nan, math.nan], [0.3, 0.7]])
    assert math.isnan(expected_calibration_error(p, torch.tensor([0, 1, 1])).item())


@pytest.mark.parametrize("loss, logits, exact", [
    ("cross_entropy", [[0.0, 40.0, 0.0]], 40 + math.log(1 + 2 * math.exp(-40))),  # p(0) underflows to ~1e-18
    ("bce", [[60.0]], 60.0),  # 1 - sigmoid(60) is 0 in float32
])
def test_nll_of_a_confident_mistake_is_not_capped(loss, logits, exact):
    """The nll metric comes from the logits: log(probabilities) would cap it at -log(1e-12) = 27.6."""
    task = task_for(loss, 3 if loss == "cross_entropy" else 2)
    m = task.metrics(torch.tensor(logits), torch.tensor([0]))
    assert m["nll"] == pytest.approx(exact, rel=1e-5)


def test_raw_mse_probabilities_are_a_distribution_and_accuracy_follows_the_raw_argmax():
    task = build_task(LossConfig(name="mse", output="raw"), {"name": "t", "task": "classification", "n_outputs": 3},
                      torch.zeros(()), torch.ones(()))
    out = torch.tensor([[-1.0, -0.5, -2.0], [0.2, 0.9, -0.1]])
    p = task.probabilities(out)
    torch.testing.assert_close(p.sum(1), torch.ones(2))
    torch.testing.assert_close(p[0], torch.full((3,), 1 / 3))
    assert task.metrics(out, torch.tensor([1, 1]))["acc"] == 1.0


# ----------------------------------------------------------------------------- heads and misfits
def _data(name):
    return load_synthetic(SyntheticConfig(name=name, n_samples=60))


PAIRS = [(d, loss) for d in SYNTHETIC_CLASSIFICATION + SYNTHETIC_REGRESSION for loss in LOSSES]
FITS = {
    "classification": {"cross_entropy", "nll", "mse"},
    "binary": {"cross_entropy", "nll", "mse", "bce"},
    "regression": {"mse", "l1", "huber", "gaussian_nll", "laplace_nll"},
}


def _kind(name):
    if name in SYNTHETIC_REGRESSION:
        return "regression"
    return "classification" if name in ("spirals", "blobs") else "binary"


@pytest.mark.parametrize("dataset, loss", [p for p in PAIRS if p[1] in FITS[_kind(p[0])]])
def test_head_width_follows_dataset_and_loss(dataset, loss):
    data = _data(dataset)
    meta = data.meta()
    task = build_task(LossConfig(name=loss), meta, data.y_mean, data.y_std)
    k = meta["n_outputs"]
    expected = {"bce": 1, "gaussian_nll": 2 * k, "laplace_nll": 2 * k}.get(loss, k)
    assert task.head_width == expected
    model = build_model(ModelConfig(hidden=[4]), meta, data.x_mean, data.x_std, task.head, task.head_width)
    out = model(data.x_val)
    assert out.shape == (len(data.y_val), expected)
    if loss in ("gaussian_nll", "laplace_nll"):
        assert (out[:, k:] > 0).all()  # the spread column is positive by construction
    task.loss(model(data.x_train), data.y_train).backward()
    assert set(task.metrics(out.detach(), data.y_val)) == set(METRICS[task.kind])


@pytest.mark.parametrize("dataset, loss", [p for p in PAIRS if p[1] not in FITS[_kind(p[0])]])
def test_every_misfit_pair_fails_in_one_line_naming_the_losses_that_fit(dataset, loss, make_cfg):
    fits = sorted(FITS[_kind(dataset)])
    for stage in ("config", "data"):
        with pytest.raises(ConfigError) as e:
            if stage == "config":  # torch-free, before any data is loaded
                parse(make_cfg(f"dataset={dataset}", f"loss={loss}"))
            else:  # again with the loaded data's true shape
                data = _data(dataset)
                build_task(LossConfig(name=loss), data.meta(), data.y_mean, data.y_std)
        msg = str(e.value)
        assert "\n" not in msg
        assert msg.startswith(f"loss={loss} does not fit dataset={dataset} (")
        assert sorted(msg.split("losses that fit: ")[1].split(", ")) == fits


def test_misfit_on_the_command_line_exits_2_with_one_line_and_no_run(tmp_path):
    r = mlptrain(*TINY, "dataset=spirals", "loss=gaussian_nll", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("mlptrain: error: loss=gaussian_nll does not fit dataset=spirals "
                                "(classification, 3 classes); losses that fit: cross_entropy, nll, mse")
    assert not (tmp_path / "outputs").exists()  # rejected before Hydra made a run dir


@pytest.mark.parametrize("overrides, needle", [
    (["loss=nll", "+loss.label_smoothing=0.1"], "loss.label_smoothing: only applies to loss=cross_entropy"),
    (["trainer.monitor=coverage95", "dataset=sine", "loss=gaussian_nll"],
     "trainer.monitor: 'coverage95' is not a metric this task can select on; valid choices: auto, loss, rmse"),
])
def test_loss_option_errors(overrides, needle, make_cfg):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        cfg = parse(make_cfg(*overrides))
        data = _data(cfg.dataset.name)
        monitor_of(build_task(cfg.loss, data.meta(), data.y_mean, data.y_std), cfg.trainer.monitor, "auto")


@pytest.mark.parametrize("loss, monitor, mode", [
    ("cross_entropy", "acc", "max"), ("mse", "rmse", "min"), ("gaussian_nll", "nll", "min"),
])
def test_default_monitor_is_comparable_across_the_losses_of_a_task(loss, monitor, mode):
    task = task_for(loss, 3 if loss == "cross_entropy" else 1, "classification" if loss == "cross_entropy" else "regression")
    assert monitor_of(task, "auto", "auto") == (monitor, mode)


# ----------------------------------------------------------------------------- the likelihood pays off
@pytest.fixture
def one_thread():
    """Runs pass trainer.num_threads=1 (a tiny MLP gains nothing from more); torch's count is restored after."""
    n = torch.get_num_threads()
    yield "trainer.num_threads=1"
    torch.set_num_threads(n)


def test_learned_variance_beats_fixed_variance_on_heteroscedastic_data(train, one_thread):
    # ~450 steps: enough for the variance head to settle (seeds 0-2 all give a margin of ~0.14 nats)
    common = ["dataset=heteroscedastic", "dataset.n_samples=1000", "model.hidden=[32,32]", "trainer.epochs=20",
              "trainer.batch_size=32", "trainer.checkpoint=false", "trainer.progress=none", one_thread]
    gauss = train(*common, "loss=gaussian_nll", tiny=False)
    mse = train(*common, "loss=mse", tiny=False)
    assert 0.85 <= gauss["test"]["coverage95"] <= 0.99
    # both NLLs are of Gaussians; mse's sigma^2 is the MLE constant from its validation residuals
    assert gauss["test"]["nll"] < mse["test"]["nll"] - 0.05
    best = mse["best"]
    assert best["val/nll"] == pytest.approx(0.5 * math.log(2 * math.pi * best["val/rmse"] ** 2) + 0.5, rel=1e-4)


# ----------------------------------------------------------------------------- presets
def _sweep_of(experiment: str) -> dict:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    return dict(cfg.hydra.sweeper.params), cfg


def test_probabilistic_preset_sweeps_gaussian_nll_against_mse_on_one_scale(train, one_thread):
    sweep, cfg = _sweep_of("probabilistic")
    assert sweep["loss"] == "gaussian_nll,mse" and len(sweep["seed"].split(",")) >= 2
    assert cfg.dataset.name == "heteroscedastic"
    for loss in sweep["loss"].split(","):  # each job of the sweep, tiny
        m = train("experiment=probabilistic", f"loss={loss}", one_thread)
        assert m["status"] == "completed" and m["monitor"] == "val/nll"
        assert {"nll", "coverage95", "rmse"} <= set(m["test"]) and m["objective"] == m["best"]["val/nll"]


def test_loss_showdown_preset_sweeps_cross_entropy_against_mse_on_mnist(train, tmp_path, one_thread):
    from test_data_vision import write_mnist

    write_mnist(tmp_path / "data")
    sweep, cfg = _sweep_of("loss_showdown")
    assert sweep["loss"] == "cross_entropy,mse" and len(sweep["seed"].split(",")) >= 2
    assert cfg.dataset.name == "mnist"
    tiny = ["trainer.epochs=1", "model.hidden=[16]", "trainer.progress=none", f"dataset.data_dir={tmp_path / 'data'}",
            "dataset.download=false", one_thread]
    for loss in sweep["loss"].split(","):  # each job of the sweep, on tiny IDX files
        m = train("experiment=loss_showdown", f"loss={loss}", *tiny, tiny=False)
        assert m["status"] == "completed" and m["monitor"] == "val/acc"  # one scale for both losses
        assert {"acc", "nll", "ece"} <= set(m["test"])


def test_misfit_on_an_image_set_fails_before_any_file_is_read(tmp_path):
    r = mlptrain("dataset=mnist", "loss=gaussian_nll", f"dataset.data_dir={tmp_path / 'nothing'}",
                 "dataset.download=false", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("mlptrain: error: loss=gaussian_nll does not fit dataset=mnist (classification); "
                                "losses that fit: cross_entropy, nll, mse, bce (two classes only)")

"""Losses as likelihoods: the identities behind them, the heads they need, and the metrics they report."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, mlptrain
from mlptrain.config import (
    LOSSES,
    SYNTHETIC_CLASSIFICATION,
    SYNTHETIC_REGRESSION,
    ConfigError,
    LossConfig,
    ModelConfig,
    SyntheticConfig,
    parse,
)
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


@pytest.mark.parametrize(
    "loss, sample",
    [
        ("gaussian_nll", lambda g, n: torch.randn(n, generator=g) * 2.0),  # variance 4
        ("laplace_nll", lambda g, n: torch.distributions.Laplace(0.0, 2.0).sample((n,))),  # scale 2
    ],
)
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


@pytest.mark.parametrize(
    "loss, logits, exact",
    [
        ("cross_entropy", [[0.0, 40.0, 0.0]], 40 + math.log(1 + 2 * math.exp(-40))),  # p(0) underflows to ~1e-18
        ("bce", [[60.0]], 60.0),  # 1 - sigmoid(60) is 0 in float32
    ],
)
def test_nll_of_a_confident_mistake_is_not_capped(loss, logits, exact):
    """The nll metric comes from the logits: log(probabilities) would cap it at -log(1e-12) = 27.6."""
    task = task_for(loss, 3 if loss == "cross_entropy" else 2)
    m = task.metrics(torch.tensor(logits), torch.tensor([0]))
    assert m["nll"] == pytest.approx(exact, rel=1e-5)


def test_raw_mse_probabilities_are_a_distribution_and_accuracy_follows_the_raw_argmax():
    task = build_task(
        LossConfig(name="mse", output="raw"),
        {"name": "t", "task": "classification", "n_outputs": 3},
        torch.zeros(()),
        torch.ones(()),
    )
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
    "regression": {"mse", "l1", "huber", "gaussian_nll", "laplace_nll", "poisson_nll"},
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
    reported, undefined = set(task.metrics(out.detach(), data.y_val)), {"roc_auc", "mape"}  # a class absent, y <= 0
    assert reported <= set(METRICS[task.kind]) and set(METRICS[task.kind]) - reported <= undefined


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
    assert r.stderr.strip() == (
        "mlptrain: error: loss=gaussian_nll does not fit dataset=spirals "
        "(classification, 3 classes); losses that fit: cross_entropy, nll, mse"
    )
    assert not (tmp_path / "outputs").exists()  # rejected before Hydra made a run dir


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["loss=nll", "+loss.label_smoothing=0.1"], "loss.label_smoothing: only applies to loss=cross_entropy"),
        (
            ["trainer.monitor=coverage95", "dataset=sine", "loss=gaussian_nll"],
            "trainer.monitor: 'coverage95' is not a metric this task can select on; valid choices: auto, loss, rmse",
        ),
    ],
)
def test_loss_option_errors(overrides, needle, make_cfg):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        cfg = parse(make_cfg(*overrides))
        data = _data(cfg.dataset.name)
        monitor_of(build_task(cfg.loss, data.meta(), data.y_mean, data.y_std), cfg.trainer.monitor, "auto")


@pytest.mark.parametrize(
    "loss, monitor, mode",
    [
        ("cross_entropy", "nll", "min"),
        ("mse", "rmse", "min"),
        ("gaussian_nll", "nll", "min"),
    ],
)
def test_default_monitor_is_comparable_across_the_losses_of_a_task(loss, monitor, mode):
    classifier = loss == "cross_entropy"
    task = task_for(loss, 3 if classifier else 1, "classification" if classifier else "regression")
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
    common = [
        "dataset=heteroscedastic",
        "dataset.n_samples=1000",
        "model.hidden=[32,32]",
        "trainer.epochs=20",
        "trainer.batch_size=32",
        "trainer.checkpoint=false",
        "trainer.progress=none",
        one_thread,
    ]
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
    tiny = [
        "trainer.epochs=1",
        "model.hidden=[16]",
        "trainer.progress=none",
        f"dataset.data_dir={tmp_path / 'data'}",
        "dataset.download=false",
        one_thread,
    ]
    for loss in sweep["loss"].split(","):  # each job of the sweep, on tiny IDX files
        m = train("experiment=loss_showdown", f"loss={loss}", *tiny, tiny=False)
        assert m["status"] == "completed" and m["monitor"] == "val/nll"  # one scale for both losses
        assert {"acc", "nll", "ece"} <= set(m["test"])


def test_misfit_on_an_image_set_fails_before_any_file_is_read(tmp_path):
    r = mlptrain(
        "dataset=mnist",
        "loss=gaussian_nll",
        f"dataset.data_dir={tmp_path / 'nothing'}",
        "dataset.download=false",
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "mlptrain: error: loss=gaussian_nll does not fit dataset=mnist (classification); "
        "losses that fit: cross_entropy, nll, mse, bce (two classes only)"
    )


# ----------------------------------------------------------------------------- poisson_nll: counts, log link
def test_poisson_loss_is_torchs_and_its_nll_metric_is_the_exact_log_pmf_with_log_y_factorial():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(200, 1, generator=g)  # log rates
    y = torch.poisson(z[:, 0].exp() * 3, generator=g)
    task = task_for("poisson_nll", 1, "regression")
    ours = value_and_grad(lambda t: task.loss(t, y), z)
    ref = value_and_grad(lambda t: F.poisson_nll_loss(t, y[:, None], log_input=True, full=False), z)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])
    m = task.metrics(z, y)
    by_hand = sum(
        math.exp(zi) - yi * zi + math.log(math.factorial(int(yi))) for zi, yi in zip(z[:, 0].tolist(), y.tolist())
    )
    assert m["nll"] == pytest.approx(by_hand / 200, rel=1e-5)
    exact = -torch.distributions.Poisson(z[:, 0].exp()).log_prob(y).mean()
    assert m["nll"] == pytest.approx(exact.item(), rel=1e-5)
    # the loss drops only the constant log(y!): it moves no gradient
    assert m["loss"] == pytest.approx(m["nll"] - torch.lgamma(y + 1).mean().item(), rel=1e-5)


def test_poisson_on_two_targets_sums_the_nll_over_outputs_per_example():
    g = torch.Generator().manual_seed(9)
    z, y = torch.randn(50, 2, generator=g), torch.poisson(torch.full((50, 2), 2.0), generator=g)
    task = task_for("poisson_nll", 2, "regression")
    assert task.head_width == 2
    ref = F.poisson_nll_loss(z, y, log_input=True, full=False, reduction="sum") / 50
    torch.testing.assert_close(task.loss(z, y), ref)
    exact = -torch.distributions.Poisson(z.exp()).log_prob(y).sum(1).mean()
    assert task.metrics(z, y)["nll"] == pytest.approx(exact.item(), rel=1e-5)


def test_poisson_predicts_the_rate_as_mean_and_its_square_root_as_std():
    task = task_for("poisson_nll", 1, "regression")
    z = torch.tensor([[-1.0], [0.0], [math.log(9.0)]])
    mean, std = task.mean_and_std(z)
    torch.testing.assert_close(mean, z.exp())
    torch.testing.assert_close(std, z.exp().sqrt())
    assert std[2].item() == pytest.approx(3.0)
    assert task.kind == "probabilistic" and monitor_of(task, "auto", "auto") == ("nll", "min")
    task.calibrate(z, torch.tensor([5.0, 0.0, 1.0]))  # nothing to refit: the variance is the mean
    torch.testing.assert_close(task.mean_and_std(z)[1], std)


def test_the_log_link_head_starts_at_the_mean_count_and_keeps_every_rate_positive():
    data = load_synthetic(SyntheticConfig(name="counts", n_samples=300))
    task = build_task(LossConfig(name="poisson_nll"), data.meta(), data.y_mean, data.y_std)
    z = torch.tensor([[0.0], [-50.0], [5.0]])
    rate = task.predictive(task.head(z))[0]
    assert rate[0].item() == pytest.approx(data.y_train.mean().item(), rel=1e-5)  # z = 0: the mean count
    assert (rate > 0).all()


@pytest.mark.parametrize("rate", [0.3, 2.0, 12.0])
def test_poisson_coverage95_is_the_central_interval_of_the_predicted_pmf(rate):
    """coverage95 counts y in [q(0.025), q(0.975)] of Poisson(rate); the quantiles here come from a direct sum."""
    pmf = [math.exp(-rate) * rate**k / math.factorial(k) for k in range(80)]
    cdf = [sum(pmf[: k + 1]) for k in range(80)]
    lo = next(k for k in range(80) if cdf[k] >= 0.025)
    hi = next(k for k in range(80) if cdf[k] >= 0.975)
    task = task_for("poisson_nll", 1, "regression")
    ys = torch.arange(40.0)
    z = torch.full((40, 1), math.log(rate))
    covered = task.likelihood.covered95(task.predictive(z)[0], ys[:, None], task.predictive(z)[1])[:, 0]
    assert covered.tolist() == [lo <= k <= hi for k in range(40)]
    # draws from the predicted distribution: covered as often as the interval's mass (>= 0.95, discrete)
    n = 40_000
    y = torch.poisson(torch.full((n,), rate), generator=torch.Generator().manual_seed(10))
    mass = cdf[hi] - (cdf[lo - 1] if lo else 0.0)
    assert mass >= 0.95
    assert task.metrics(torch.full((n, 1), math.log(rate)), y)["coverage95"] == pytest.approx(mass, abs=0.005)


@pytest.mark.parametrize("bad, found", [(-3.0, "-3 (negative)"), (2.5, "2.5 (not a whole number)")])
def test_targets_that_are_not_counts_fail_poisson_in_one_line_naming_the_losses_that_fit(bad, found):
    meta = {"name": "t", "task": "regression", "n_outputs": 1}
    y = torch.tensor([0.0, 1.0, 4.0, bad])
    with pytest.raises(ConfigError) as e:
        build_task(LossConfig(name="poisson_nll"), meta, torch.ones(1), torch.ones(1), targets=(y[:2], y))
    assert str(e.value) == (
        f"dataset=t: loss=poisson_nll needs counts (integers >= 0) as targets, but they include "
        f"{found}; losses for real-valued targets: mse, l1, huber, gaussian_nll, laplace_nll"
    )
    build_task(LossConfig(name="mse"), meta, torch.ones(1), torch.ones(1), targets=(y,))  # other losses take them


def test_a_negative_count_in_a_table_stops_the_command_before_training_naming_the_column(tmp_path):
    rows = ["x,visits"] + [f"{i / 10},{i % 4}" for i in range(60)] + ["6.5,-2"]  # one bad row, in whichever split
    (tmp_path / "visits.csv").write_text("\n".join(rows) + "\n")
    r = mlptrain(
        *TINY[:1],
        "trainer.progress=none",
        "dataset=csv",
        f"dataset.path={tmp_path / 'visits.csv'}",
        "dataset.target=visits",
        "dataset.task=regression",
        "loss=poisson_nll",
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert r.stderr.strip().startswith(
        "mlptrain: error: dataset.target 'visits': loss=poisson_nll needs counts "
        "(integers >= 0) as targets, but they include -2 (negative); "
    )
    assert len(r.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("outputs/*/*/*.pt"))  # no training step ran


def test_poisson_on_real_valued_synthetic_targets_fails_before_training(train):
    with pytest.raises(ConfigError, match=r"^dataset=sine: loss=poisson_nll needs counts .* \(negative\); losses for "):
        train("dataset=sine", "loss=poisson_nll")


def test_poisson_beats_mse_on_counts_and_predicts_rate_and_its_root(train, tmp_path, one_thread):
    # ~220 steps on dataset=counts; seeds 0-2 give a margin of 0.23-0.25 nats (both NLLs are exact
    # per-example -log p: mse's is its Gaussian with the MLE constant variance)
    common = [
        "dataset=counts",
        "dataset.n_samples=1000",
        "model.hidden=[32,32]",
        "trainer.epochs=10",
        "trainer.batch_size=32",
        "trainer.progress=none",
        one_thread,
    ]
    poisson = train(*common, "loss=poisson_nll", out=tmp_path / "poisson", tiny=False)
    mse = train(*common, "loss=mse", "trainer.checkpoint=false", tiny=False)
    assert poisson["monitor"] == "val/nll" and mse["monitor"] == "val/rmse"
    assert poisson["test"]["nll"] < mse["test"]["nll"] - 0.1
    assert 0.9 <= poisson["test"]["coverage95"] <= 1.0

    from mlptrain.predict import load, predict

    loaded = load(tmp_path / "poisson")  # what mlptrain-predict does
    x = torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.9, 0.9]])
    cols, rows = predict(loaded, x)
    assert cols == ["mean", "sigma"]
    (m0, s0), (m1, s1) = rows
    assert s0 == pytest.approx(math.sqrt(m0), rel=1e-5) and s1 == pytest.approx(math.sqrt(m1), rel=1e-5)
    assert m0 > m1 > 0  # log rate 2 against 0.81 in the generator


# ----------------------------------------------------------------------------- the registry
def test_every_loss_is_one_yaml_one_registry_line_one_likelihood_class():
    from importlib import resources

    from mlptrain import registry
    from mlptrain.losses import Likelihood

    yamls = {
        p.name.removesuffix(".yaml")
        for p in (resources.files("mlptrain.configs") / "loss").iterdir()
        if p.name.endswith(".yaml")
    }
    assert yamls - {"auto"} == set(registry.LOSSES) == set(LOSSES) - {"auto"}  # auto: one of them, per task
    for name, spec in registry.LOSSES.items():
        for task in {"classification" if t == "binary" else t for t in spec.tasks}:
            cls = spec.implementation(task)
            assert issubclass(cls, Likelihood) and cls.task == task, (name, task)
        for key in spec.params:
            assert key in LossConfig.__dataclass_fields__, (name, key)


def test_the_registry_and_the_config_import_no_torch():
    import subprocess
    import sys

    code = "import sys, mlptrain.registry, mlptrain.config; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_a_loss_key_the_loss_does_not_read_is_refused_naming_the_losses_that_do():
    with pytest.raises(
        ConfigError, match=r"^loss\.variance: only applies to loss=gaussian_nll or laplace_nll, not loss=mse$"
    ):
        LossConfig(name="mse", variance="exp")
    with pytest.raises(ConfigError, match=r"^loss\.huber_delta: only applies to loss=huber, not loss=poisson_nll$"):
        LossConfig(name="poisson_nll", huber_delta=2.0)
    LossConfig(name="gaussian_nll", variance="exp", min_variance=1e-3)  # its own keys

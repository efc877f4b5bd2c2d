"""Optimizers, schedulers, early stopping, clipping and weight-decay groups, checked against torch itself."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mlptrain.compose import config_groups
from mlptrain.config import ConfigError, parse
from mlptrain.optim import build_scheduler

# 400 samples -> 280 train rows -> 5 steps of 64 per epoch: schedules have room to move.
SMALL = ["dataset.n_samples=400", "trainer.batch_size=64", "optim=sgd", "optim.lr=0.1"]
STEPS_PER_EPOCH = 5

OPTIMIZERS = {  # option -> (torch class, settings the config must carry)
    "sgd": (torch.optim.SGD, {"momentum": 0.0}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {}),
    "rmsprop": (torch.optim.RMSprop, {"alpha": 0.99}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {"weight_decay": 0.01}),
}


def _model(make_cfg, *overrides):
    from mlptrain.training import Trainer

    run = parse(make_cfg("dataset.n_samples=120", "trainer.progress=none", *overrides))
    return Trainer(run, out_dir="/nonexistent-not-written"), run


def test_the_issue_optimizers_and_schedulers_all_exist():
    groups = config_groups()
    assert set(OPTIMIZERS) <= set(groups["optim"])
    assert {"none", "step", "exponential", "cosine", "onecycle", "plateau"} <= set(groups["scheduler"])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_is_its_torch_class_on_the_fast_path_and_steps(make_cfg, name):
    cls, settings = OPTIMIZERS[name]
    trainer, run = _model(make_cfg, f"optim={name}")
    opt = trainer.optimizer
    assert isinstance(opt, cls) and opt.defaults["lr"] == run.optim.lr  # fast_optim subclasses skip torch._dynamo
    for k, v in settings.items():
        assert opt.defaults[k] == v, k
    # fused where torch has it for this device, else foreach (never the per-tensor loop)
    assert opt.defaults.get("fused") or opt.defaults.get("foreach"), opt.defaults
    before = [p.detach().clone() for p in trainer.model.parameters()]
    xb, yb = trainer.data.x_train[:32], trainer.data.y_train[:32]
    trainer.task.loss(trainer.model(xb), yb).backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


# ----------------------------------------------------------------------------- schedules vs torch
def _reference(make, n_steps, per_step=True, metrics=None, base_lr=0.1):
    """The lr each step (or epoch) uses when torch's own scheduler drives a bare optimizer."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = make(opt)
    lrs = []
    for i in range(n_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(metrics[i]) if metrics is not None else sched.step()
    return lrs


def _step_lrs(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars("step/lr") if "step/lr" in acc.Tags()["scalars"] else []
    return [e.step for e in events], [e.value for e in events]


S = torch.optim.lr_scheduler
PER_STEP = {  # option, overrides -> torch reference over 20 steps (4 epochs x 5)
    "cosine": ([], lambda o: S.CosineAnnealingLR(o, T_max=20)),
    "cosine_floor": (["scheduler.min_lr=0.01"], lambda o: S.CosineAnnealingLR(o, T_max=20, eta_min=0.01)),
    "onecycle": ([], lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=20, cycle_momentum=False)),
    "onecycle_peak": (
        ["scheduler.max_lr=0.5", "scheduler.pct_start=0.25"],
        lambda o: S.OneCycleLR(o, max_lr=0.5, total_steps=20, pct_start=0.25, cycle_momentum=False),
    ),
}


@pytest.mark.parametrize("case", sorted(PER_STEP))
def test_per_step_schedule_is_logged_every_step_and_matches_torch(train, tmp_path, case):
    overrides, make = PER_STEP[case]
    out = tmp_path / "run"
    m = train(f"scheduler={case.split('_')[0]}", *SMALL, "trainer.epochs=4", *overrides, out=out)
    assert m["steps"] == 4 * STEPS_PER_EPOCH
    steps, lrs = _step_lrs(out)
    assert steps == list(range(1, 21))
    assert lrs == pytest.approx(_reference(make, 20), rel=1e-5)  # TensorBoard stores float32
    # the per-epoch lr is the one the epoch's last step used
    assert [r["lr"] for r in m["history"]] == pytest.approx([lrs[4], lrs[9], lrs[14], lrs[19]], rel=1e-5)


def test_cosine_warmup_is_linear_then_cosine_in_closed_form(train, tmp_path):
    out = tmp_path / "run"
    train("scheduler=cosine", *SMALL, "trainer.epochs=4", "scheduler.warmup_epochs=1", out=out)
    _, lrs = _step_lrs(out)
    warm, total, lr = STEPS_PER_EPOCH, 20, 0.1
    expected = [lr * (k + 1) / (warm + 1) for k in range(warm)]
    expected += [lr * (1 + math.cos(math.pi * k / (total - warm))) / 2 for k in range(total - warm)]
    assert lrs == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_max_steps_replaces_epochs_and_sizes_the_schedule(train, tmp_path):
    out = tmp_path / "run"
    # 13 steps = 2 full epochs + 3 steps, whatever trainer.epochs says
    m = train("scheduler=cosine", *SMALL, "trainer.epochs=1", "trainer.max_steps=13", out=out)
    assert m["steps"] == 13 and m["epochs"] == 3 and m["status"] == "completed"
    steps, lrs = _step_lrs(out)
    assert steps == list(range(1, 14))
    assert lrs == pytest.approx(_reference(lambda o: S.CosineAnnealingLR(o, T_max=13), 13), rel=1e-5)
    assert lrs[-1] < 0.02 * lrs[0]  # the cosine really ends with the run, not at some later epoch
    # the partial last epoch's throughput counts the rows it trained on, not a whole epoch's
    rows = [r["samples_per_s"] * r["time_s"] for r in m["history"]]
    assert rows == pytest.approx([280, 280, 3 * 64], rel=1e-6)  # 70% of 400 rows; 3 steps of batch 64


PER_EPOCH = {
    "step": (["scheduler.step_size=2", "scheduler.gamma=0.5"], lambda o: S.StepLR(o, step_size=2, gamma=0.5)),
    "exponential": (["scheduler.gamma=0.7"], lambda o: S.ExponentialLR(o, gamma=0.7)),
    "none": ([], lambda o: S.LambdaLR(o, lambda e: 1.0)),
}


@pytest.mark.parametrize("name", sorted(PER_EPOCH))
def test_per_epoch_schedule_steps_once_per_epoch_like_torch(train, tmp_path, name):
    overrides, make = PER_EPOCH[name]
    out = tmp_path / "run"
    m = train(f"scheduler={name}", *SMALL, "trainer.epochs=5", *overrides, out=out)
    assert [r["lr"] for r in m["history"]] == pytest.approx(_reference(make, 5, per_step=False))
    assert _step_lrs(out) == ([], [])  # nothing to log between epochs


def test_plateau_follows_the_monitored_metric_like_torch(train, tmp_path):
    # mode=max on the val loss: a falling loss is "no improvement", so the lr must drop
    m = train(
        "scheduler=plateau",
        *SMALL,
        "trainer.epochs=6",
        "scheduler.patience=1",
        "scheduler.factor=0.5",
        "trainer.monitor=loss",
        "trainer.mode=max",
    )
    val = [r["val/loss"] for r in m["history"]]
    ref = _reference(lambda o: S.ReduceLROnPlateau(o, mode="max", factor=0.5, patience=1), 6, metrics=val)
    got = [r["lr"] for r in m["history"]]
    assert got == pytest.approx(ref) and min(got) < 0.1


def test_onecycle_leaves_optimizers_without_momentum_alone(make_cfg):
    # torch's default would switch momentum on for plain SGD and crash on Adagrad
    for name, key in (("sgd", "momentum"), ("adagrad", None)):
        trainer, _ = _model(make_cfg, f"optim={name}", "scheduler=onecycle", "trainer.epochs=20")
        group = trainer.optimizer.param_groups[0]
        assert key is None or group[key] == 0.0
    trainer, _ = _model(make_cfg, "optim=momentum", "scheduler=onecycle", "trainer.epochs=20")
    assert trainer.optimizer.param_groups[0]["momentum"] == pytest.approx(0.95)  # cycled: starts at max


def test_onecycle_survives_a_one_step_warmup(make_cfg):
    trainer, run = _model(make_cfg, "scheduler=onecycle", "scheduler.pct_start=0.1")
    sched = build_scheduler(run.scheduler, trainer.optimizer, 1, 10, run.optim.lr, "max")  # torch: 0.1 * 10 = 1
    for _ in range(10):
        trainer.optimizer.step()
        sched.step_batch()
    assert len(sched.drain_step_lrs()) == 10


# ----------------------------------------------------------------------------- early stopping
PLATEAU = [
    "optim.lr=1e-30",
    "trainer.epochs=20",
    "trainer.early_stopping.enabled=true",
    "trainer.early_stopping.patience=3",
]  # an lr so small that float32 weights cannot move


@pytest.mark.parametrize("monitor", [[], ["trainer.monitor=loss"]])
def test_early_stopping_stops_patience_epochs_after_the_last_improvement(train, monitor):
    m = train(*PLATEAU, *monitor)
    assert len({r[m["monitor"]] for r in m["history"]}) == 1  # the plateau is real
    assert m["status"] == "early_stopped" and m["epochs"] == 1 + 3 and m["best_epoch"] == 1


def test_min_delta_only_delays_stopping_the_best_weights_still_follow_any_improvement(train):
    m = train(
        "optim=adam",
        "optim.lr=0.01",
        "trainer.epochs=20",
        "trainer.monitor=loss",
        "trainer.early_stopping.enabled=true",
        "trainer.early_stopping.patience=2",
        "trainer.early_stopping.min_delta=100",
    )
    losses = [r["val/loss"] for r in m["history"]]
    assert m["status"] == "early_stopped" and m["epochs"] == 3
    assert losses[2] < losses[0]  # it did improve, just not by min_delta ...
    assert m["best_epoch"] == 1 + losses.index(min(losses))  # ... and the best epoch is the real best


def test_without_early_stopping_the_plateau_runs_all_epochs(train):
    m = train(*PLATEAU[:2], "trainer.epochs=6")
    assert m["status"] == "completed" and m["epochs"] == 6


# ----------------------------------------------------------------------------- clipping
def _one_sgd_step(make_cfg, tmp_path, clip):
    from mlptrain.training import Trainer

    cfg = make_cfg(
        "dataset.n_samples=120",
        "model.hidden=[16]",
        "trainer.progress=none",
        "optim=sgd",
        "optim.lr=1.0",
        "trainer.max_steps=1",
        f"trainer.grad_clip={clip}",
        "trainer.checkpoint=false",
    )
    trainer = Trainer(parse(cfg), tmp_path / f"clip{clip}")
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    m = trainer.fit()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    return torch.linalg.vector_norm(after - before).item(), m["history"][0]


def test_clipping_bounds_the_update_and_logs_the_pre_clip_norm(make_cfg, tmp_path):
    # plain SGD with lr 1: the update is exactly the (clipped) gradient
    free, row_free = _one_sgd_step(make_cfg, tmp_path, 1e6)
    clipped, row = _one_sgd_step(make_cfg, tmp_path, 0.01)
    assert free == pytest.approx(row_free["train/grad_norm"], rel=1e-4)  # the logged norm is the real one
    assert free > 0.05
    assert clipped == pytest.approx(0.01, rel=1e-3)  # bounded by the clip
    assert row["train/grad_norm"] == pytest.approx(free, rel=1e-4)  # logged before clipping
    assert row["train/clip_frac"] == 1.0 and row_free["train/clip_frac"] == 0.0


def test_epoch_grad_norm_stats_cover_every_step(train, tmp_path):
    m = train(*SMALL, "trainer.epochs=2", "trainer.grad_clip=0.5")
    for r in m["history"]:
        assert 0 < r["train/grad_norm"] <= r["train/grad_norm_max"]
        clipped_steps = r["train/clip_frac"] * STEPS_PER_EPOCH
        assert 0 <= clipped_steps <= STEPS_PER_EPOCH and clipped_steps == pytest.approx(round(clipped_steps))
    assert "train/grad_norm" not in train(*SMALL)["history"][0]  # no clipping, no norm computed


# ----------------------------------------------------------------------------- weight decay groups
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_decay_exclusion_puts_exactly_biases_and_norm_parameters_in_the_no_decay_group(make_cfg, norm):
    trainer, _ = _model(make_cfg, "optim=adamw", f"model.norm={norm}", "model.hidden=[8,8]")
    model, groups = trainer.model, trainer.optimizer.param_groups
    weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    rest = {id(p) for p in model.parameters()} - weights
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)) for p in m.parameters()
    }
    assert len(norm_params) == 4 and norm_params < rest  # two norm layers' scales and shifts, plus biases
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert {id(p) for p in groups[0]["params"]} == weights
    assert {id(p) for p in groups[1]["params"]} == rest

    # and it is what AdamW does: with zero gradients only the decayed weights shrink
    before = {id(p): p.detach().clone() for p in model.parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    lr = groups[0]["lr"]
    assert lr == pytest.approx(2e-3)  # adamw's default
    trainer.optimizer.step()
    for p in model.parameters():
        if id(p) in weights:
            assert torch.allclose(p, before[id(p)] * (1 - lr * 0.01))
        else:
            assert torch.equal(p, before[id(p)])


def test_decay_exclusion_off_is_one_group(make_cfg):
    trainer, _ = _model(make_cfg, "optim=adamw", "optim.decay_exclude_bias_norm=false", "model.norm=layer")
    (group,) = trainer.optimizer.param_groups
    assert group["weight_decay"] == 0.01 and len(group["params"]) == len(list(trainer.model.parameters()))


# ----------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    "override, needle",
    [
        ("optim.alpha=1.5", "optim.alpha: must be in [0, 1]"),
        ("+optim.betas=[0.9]", "optim.betas: must be two numbers in [0, 1)"),
        ("+optim.nosuch=1", "optim.nosuch: not an argument of RMSprop; valid keys: lr, alpha"),
    ],
)
def test_bad_optimizer_settings_are_one_clear_line(make_cfg, override, needle):
    with pytest.raises(ConfigError) as e:
        _model(make_cfg, "optim=rmsprop", override)
    assert needle in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- presets
def test_optimizer_showdown_is_one_command_one_job_per_optimizer(tmp_path):
    from hydra import compose, initialize_config_module

    from conftest import mlptrain
    from test_data_vision import write_mnist

    with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=optimizer_showdown"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {"optim": "sgd,momentum,adagrad,rmsprop,adam", "seed": "0,1"}
    assert cfg.dataset.name == "mnist"

    write_mnist(tmp_path / "data", n_train=100, n_test=20)
    r = mlptrain(
        "-m",
        "experiment=optimizer_showdown",
        "seed=0",
        "trainer.max_steps=1",
        "trainer.progress=none",
        "dataset.download=false",
        "trainer.checkpoint=false",
        cwd=tmp_path,
        env={"MLPTRAIN_DATA": str(tmp_path / "data")},
    )
    assert r.returncode == 0, r.stderr
    jobs = sorted((tmp_path / "outputs" / "multirun").glob("*/*/*/metrics.json"))
    assert [json.loads(p.read_text())["status"] for p in jobs] == ["completed"] * 5
    assert [p.parent.name.split("optim=")[1].split(",")[0] for p in jobs] == [
        "sgd",
        "momentum",
        "adagrad",
        "rmsprop",
        "adam",
    ]


def test_mnist_fast_is_one_command(tmp_path, train):
    from test_data_vision import write_mnist

    write_mnist(tmp_path / "data", n_train=100, n_test=20)
    out = tmp_path / "run"
    m = train(
        "experiment=mnist_fast",
        "trainer.progress=none",
        f"dataset.data_dir={tmp_path / 'data'}",
        "dataset.download=false",
        tiny=False,
        out=out,
    )
    assert m["status"] == "completed" and m["epochs"] == 3
    raw = checkpoint_config(out)
    assert raw["scheduler"]["name"] == "onecycle" and raw["model"]["norm"] == "batch"
    assert raw["optim"]["_target_"] == "torch.optim.Adam" and raw["trainer"]["batch_size"] == 512


def checkpoint_config(out):
    from mlptrain import checkpoint

    return checkpoint.load(out)["config"]

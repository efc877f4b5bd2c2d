"""A diverging run stops with one line naming epoch, step, lr and the last finite loss, keeps the last
good checkpoint (never a non-finite one) and exits 1."""

from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import mlptrain
from mlptrain import checkpoint
from mlptrain.errors import TrainingError

# SGD at lr 1.5 on a small regression set: the loss grows ~10x a step and overflows at step 8.
DIVERGE = [
    "dataset=sine",
    "loss=mse",
    "optim=sgd",
    "optim.lr=1.5",
    "trainer.batch_size=16",
    "trainer.epochs=3",
    "dataset.n_samples=300",
    "model.hidden=[8]",
    "trainer.progress=none",
]


def finite(path) -> bool:
    return all(torch.isfinite(t).all() for t in checkpoint.load(path)["model"].values() if t.is_floating_point())


def test_nan_stops_with_one_line_and_keeps_the_last_good_checkpoint(train, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError) as e:
        train(*DIVERGE, "scheduler=none", "trainer.checkpoint_every_n_steps=2", out=run_dir, tiny=False)
    msg = str(e.value)
    m = re.fullmatch(
        r"loss became non-finite at epoch 1, step (\d+) \(lr 1\.5, last finite loss ([0-9.e+]+)\); "
        r"the last good checkpoint is kept: (\S+) \(epoch 1, step (\d+), mid-epoch\)\. Lower optim\.lr, "
        r"set trainer\.grad_clip, or set trainer\.nan_policy=skip_batch",
        msg,
    )
    assert m, msg
    bad_step, kept_step = int(m[1]), int(m[4])
    assert float(m[2]) > 1e6 and m[3] == str(run_dir / "last.pt")
    saved = checkpoint.load(run_dir / "last.pt")
    assert saved["step"] == kept_step == (bad_step - 1) // 2 * 2  # the newest periodic one before the NaN
    assert finite(run_dir / "last.pt")
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "diverged"


def test_overflowing_weights_are_never_checkpointed(train, tmp_path):
    """One step at lr 1e38 leaves finite but huge weights whose outputs overflow: that is divergence too.
    The message names the lr that step used, not the (cosine-decayed to 0) lr the schedule moved on to."""
    run_dir = tmp_path / "run"
    with pytest.raises(
        TrainingError,
        match=r"^validation loss became non-finite after epoch 1, step 1 \(lr 1e\+38, "
        r"train loss [0-9.]+\); no checkpoint had been written yet",
    ):
        train(*DIVERGE, "optim.lr=1e38", "trainer.max_steps=1", out=run_dir, tiny=False)
    assert not (run_dir / "last.pt").exists() and not (run_dir / "best.pt").exists()


@pytest.mark.parametrize("policy", ["stop", "skip_batch"])
def test_a_poisoned_row_stops_the_run_or_is_skipped(make_cfg, tmp_path, policy):
    """One NaN feature in the training split: `stop` names the step, `skip_batch` skips that batch
    every epoch and finishes with finite weights."""
    from mlptrain.config import parse
    from mlptrain.data import load_dataset
    from mlptrain.training import Trainer

    run = parse(
        make_cfg(
            "trainer.epochs=3",
            "dataset.n_samples=200",
            "model.hidden=[8]",
            "trainer.batch_size=20",
            "trainer.progress=none",
            f"trainer.nan_policy={policy}",
        )
    )
    data = load_dataset(run.dataset)
    data.x_train[7, 0] = float("nan")  # statistics were taken before: the model's standardisation stays finite
    trainer = Trainer(run, tmp_path, data=data)
    if policy == "stop":
        with pytest.raises(TrainingError, match=r"^loss became non-finite at epoch 1, step \d+ .*no checkpoint had"):
            trainer.fit()
        assert not (tmp_path / "last.pt").exists()
        return
    metrics = trainer.fit()
    steps = len(trainer.train_batches)
    assert metrics["status"] == "completed" and metrics["steps"] == 3 * (steps - 1)  # one batch skipped an epoch
    assert finite(tmp_path / "last.pt") and all(h["train/loss"] == h["train/loss"] for h in metrics["history"])


def test_skipped_batches_do_not_count_in_train_accuracy(make_cfg, tmp_path):
    """At an lr too small to move any weight, the epoch's train accuracy is the fixed model's accuracy on
    exactly the rows of the batches it did not skip."""
    from mlptrain.config import parse
    from mlptrain.data import load_dataset
    from mlptrain.training import Trainer

    run = parse(
        make_cfg(
            "trainer.epochs=1",
            "dataset.n_samples=200",
            "model.hidden=[8]",
            "trainer.batch_size=30",
            "optim=sgd",
            "optim.lr=1e-30",
            "scheduler=none",
            "trainer.progress=none",
            "trainer.nan_policy=skip_batch",
            "trainer.image_every_n_epochs=-1",
            "trainer.histogram_every_n_epochs=-1",
        )
    )
    data = load_dataset(run.dataset)
    data.x_train[7, 0] = float("nan")
    trainer = Trainer(run, tmp_path, data=data)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    acc = trainer.fit()["history"][0]["train/acc"]
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())

    order, size = trainer.train_batches.order, 30
    poisoned = (order == 7).nonzero().item() // size
    kept = torch.cat([order[: poisoned * size], order[(poisoned + 1) * size :]])
    assert len(kept) < len(order)
    with torch.no_grad():
        trainer.model.eval()
        hits = trainer.task.predicted_class(trainer.model(data.x_train[kept])) == data.y_train[kept]
    assert acc == hits.sum().item() / len(kept)


def test_the_command_exits_1_with_one_line(tmp_path):
    r = mlptrain(*DIVERGE, cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("mlptrain: error: loss became non-finite at epoch 1, step "), r.stderr
    (run_dir,) = list((tmp_path / "outputs").glob("*/*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["error"] == lines[0].removeprefix("mlptrain: error: ")

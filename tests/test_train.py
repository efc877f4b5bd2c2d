"""End-to-end training: every config option runs, runs are reproducible, outputs are complete."""

from __future__ import annotations

import json

import pytest
import torch

from mlptrain import checkpoint, files
from mlptrain.compose import config_groups
from mlptrain.config import SYNTHETIC_REGRESSION

GROUP_DATASET = {  # options that need a dataset of another task than the default spirals
    ("loss", "bce"): "dataset=moons",
    **{("loss", n): "dataset=sine" for n in ("l1", "huber", "gaussian_nll", "laplace_nll")},
    ("loss", "poisson_nll"): "dataset=counts",  # count targets only
}
NEEDS_FILES = {
    ("dataset", "mnist"),
    ("dataset", "fashion_mnist"),
    ("dataset", "kmnist"),
    ("dataset", "cifar10"),
    ("dataset", "csv"),
}  # covered with tiny real-format files in the data tests


def every_option():
    for group, options in sorted(config_groups().items()):
        for option in options:
            if group in ("experiment", "hparams_search", "cv") or (group, option) in NEEDS_FILES:
                continue
            yield group, option


@pytest.mark.parametrize("group, option", list(every_option()))
def test_every_option_of_every_group_composes_and_trains(train, group, option):
    extra = [GROUP_DATASET[(group, option)]] if (group, option) in GROUP_DATASET else []
    if group == "dataset" and option in SYNTHETIC_REGRESSION:
        extra.append("loss=mse")
    metrics = train(f"{group}={option}", *extra, "trainer.epochs=3", "trainer.max_steps=2")
    assert metrics["status"] == "completed" and metrics["steps"] == 2
    assert metrics["test"], metrics


def test_every_experiment_composes(make_cfg):
    from mlptrain.config import parse

    for name in config_groups().get("experiment", []):
        cfg = make_cfg(f"experiment={name}")
        parse(cfg)  # valid under the typed schema


def test_same_seed_same_numbers_other_seed_different(train):
    a = train("seed=3", "trainer.epochs=2")
    b = train("seed=3", "trainer.epochs=2")
    c = train("seed=4", "trainer.epochs=2")
    strip = lambda m: [{k: v for k, v in r.items() if k not in ("time_s", "samples_per_s")} for r in m["history"]]
    assert strip(a) == strip(b) and a["test"] == b["test"]
    assert strip(a) != strip(c)


def test_checkpoint_round_trip_is_self_describing(train, tmp_path):
    out = tmp_path / "run"
    metrics = train("trainer.epochs=2", out=out)
    ckpt = checkpoint.load(out / "best.pt")  # weights_only=True inside
    assert ckpt["epoch"] == metrics["best_epoch"] and ckpt["best"]["metric"] == "val/nll"
    assert ckpt["config"]["model"]["hidden"] == [8] and ckpt["data"]["n_outputs"] == 3
    assert {"torch", "mlptrain", "hydra"} <= set(ckpt["versions"])
    last = checkpoint.load(out)  # a run dir means its last.pt
    assert last["epoch"] == 2 and last["step"] == metrics["steps"] and "optimizer" in last

    # The checkpoint alone rebuilds the model that scored the test metrics.
    from omegaconf import OmegaConf

    from mlptrain.config import parse
    from mlptrain.data import load_dataset
    from mlptrain.losses import build_task
    from mlptrain.model import build_model

    run, meta = parse(OmegaConf.create(ckpt["config"])), ckpt["data"]
    task = build_task(run.loss, meta, torch.zeros(()), torch.ones(()))
    model = build_model(run.model, meta, torch.zeros(2), torch.ones(2), task.head, task.head_width)
    model.load_state_dict(ckpt["model"])  # buffers (input statistics) come from the checkpoint
    data = load_dataset(run.dataset)
    model.eval()
    with torch.no_grad():
        m = task.metrics(model(data.x_test), data.y_test)
    assert m["acc"] == pytest.approx(metrics["test"]["acc"])


def test_corrupt_and_foreign_checkpoints_fail_with_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(
        checkpoint.CheckpointError, match=r"not an mlptrain checkpoint \(not a file written by torch.save\)"
    ):
        checkpoint.load(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(checkpoint.CheckpointError, match="not an mlptrain checkpoint"):
        checkpoint.load(foreign)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")

    def boom(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        files.atomic_write(target, boom)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_event_file_has_scalars_config_and_hparams_in_one_run(train, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "run"
    train("trainer.epochs=2", out=out)
    assert [p for p in out.iterdir() if p.is_dir()] == []  # no add_hparams-style sub-run
    (event_file,) = out.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(out))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "lr",
        "throughput/samples_per_s",
        "hparam/test_acc",
        "hparam/best_val_nll",
    } <= scalars
    assert [e.step for e in acc.Scalars("val/acc")] == [1, 2]
    content = acc.PluginTagToContent("hparams")
    # the run holds its row; the columns are one experiment summary above it (mlptrain.loggers.hparams)
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(content)
    assert "_hparams_/experiment" not in content
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(2e-3)
    above = EventAccumulator(str(out.parent))
    above.Reload()
    blob = above.PluginTagToContent("hparams")["_hparams_/experiment"]
    exp = plugin_data_pb2.HParamsPluginData.FromString(blob).experiment
    assert "hparam/test_acc" in [m.name.tag for m in exp.metric_infos]
    assert "config" in "".join(acc.Tags().get("tensors", []))


def test_metrics_json_is_complete(train, tmp_path):
    out = tmp_path / "run"
    train("trainer.epochs=2", out=out)
    m = json.loads((out / "metrics.json").read_text())
    assert m["monitor"] == "val/nll" and m["mode"] == "min" and m["epochs"] == 2
    assert len(m["history"]) == 2 and {"train/loss", "val/acc", "lr"} <= set(m["history"][0])
    assert m["objective"] == min(r["val/nll"] for r in m["history"])


def test_progress_bar_on_a_terminal_and_epoch_lines_otherwise(caplog):
    import io
    import logging

    from mlptrain.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    with caplog.at_level(logging.INFO, logger="mlptrain"):
        for stream in (tty, pipe):
            p = Progress("auto", epochs=1, stream=stream)
            p.start_epoch(1)
            for i in range(1, 4):
                p.step(i, 3)
            p.end_epoch("epoch 1/1 done")
    assert "\repoch 1/1 [" in tty.getvalue() and "3/3" in tty.getvalue()
    assert pipe.getvalue() == ""  # not a terminal: no bar, only the logged epoch line
    assert [r.getMessage() for r in caplog.records] == ["epoch 1/1 done", "epoch 1/1 done"]

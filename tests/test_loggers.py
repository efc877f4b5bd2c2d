"""trainer.loggers: what each logger writes, the one-line error for a bad name, and metrics.csv cut back
on resume exactly as the TensorBoard events are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import TINY, assert_csv_is_the_history, metrics_csv, mlptrain
from mlptrain import checkpoint
from mlptrain.config import ConfigError
from test_resume import assert_same_run

pytestmark = pytest.mark.usefixtures("keep_threads")

BOTH = "trainer.loggers=[tensorboard,csv]"


def events(run_dir):
    return sorted(run_dir.glob("events.out.tfevents.*"))


def read_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    acc.Reload()
    return acc


def test_tensorboard_and_csv_write_one_row_per_epoch_equal_to_the_history(train, tmp_path):
    run = tmp_path / "run"
    metrics = train("trainer.epochs=3", "trainer.grad_clip=1.0", BOTH, out=run)
    assert_csv_is_the_history(run)  # header, every value, and the test row
    header, rows = metrics_csv(run)
    assert header[:5] == ["epoch", "step", "lr", "time_s", "samples_per_s"] and "train/grad_norm" in header
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "3"] and rows[-1]["val/acc"] == ""
    assert rows[-1]["test/acc"] and all(r["test/acc"] == "" for r in rows[:-1])
    assert metrics["status"] == "completed"
    acc = read_events(run)  # TensorBoard still gets everything, the pictures included
    assert [e.step for e in acc.Scalars("val/acc")] == [1, 2, 3]
    assert "val/confusion_matrix" in acc.Tags()["images"] and "config/text_summary" in acc.Tags()["tensors"]


def test_csv_alone_writes_no_event_file_and_draws_nothing(train, tmp_path, caplog):
    caplog.set_level("INFO", logger="mlptrain")
    only_csv, none = tmp_path / "csv", tmp_path / "none"
    train("trainer.epochs=2", "trainer.loggers=[csv]", out=only_csv)
    assert not events(only_csv) and (only_csv / "metrics.csv").is_file()
    assert_csv_is_the_history(only_csv)
    assert "diagnostics:" not in caplog.text  # no logger takes pictures or histograms: none are drawn
    train("trainer.epochs=2", "trainer.loggers=[]", out=none)
    assert not events(none) and not (none / "metrics.csv").exists() and (none / "metrics.json").is_file()


def test_an_unknown_logger_is_one_line_naming_the_key_and_the_choices(make_cfg, tmp_path):
    from mlptrain.config import parse

    r = mlptrain(*TINY, "trainer.loggers=[tensorboard,mlflow]", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr == "mlptrain: error: trainer.loggers: unknown value 'mlflow'; valid choices: tensorboard, csv\n"
    assert not (tmp_path / "outputs").exists()
    with pytest.raises(ConfigError, match=r"^trainer.loggers: 'csv' is listed twice$"):
        parse(make_cfg("trainer.loggers=[csv,tensorboard,csv]"))


# The child trains as `python -m mlptrain` would and SIGKILLs itself at one moment: "checkpoint" when
# epoch 2's checkpoint is about to be written (its csv row and events are flushed, last.pt is still epoch
# 1's); "end" when the completed metrics.json is about to be written (the test row is in metrics.csv).
DIES = """
import os, signal, sys
from mlptrain import checkpoint, files
when = sys.argv[1]
save, write_json = checkpoint.save, files.write_json
def save_or_die(path, payload):
    if when == "checkpoint" and payload["epoch"] == 2 and payload["mid_epoch"] is None:
        os.kill(os.getpid(), signal.SIGKILL)
    save(path, payload)
def write_or_die(path, data, *args):
    if when == "end" and data.get("status") == "completed":
        os.kill(os.getpid(), signal.SIGKILL)
    write_json(path, data, *args)
checkpoint.save, files.write_json = save_or_die, write_or_die
sys.argv = ["mlptrain", *sys.argv[2:]]
from mlptrain.cli import main
main()
"""
# Six steps an epoch, dropout and a per-step schedule: the resumed rows must be the same numbers.
RUN = [
    "dataset.n_samples=120",
    "model.hidden=[8]",
    "model.dropout=0.1",
    "trainer.batch_size=16",
    "scheduler=cosine",
    "trainer.epochs=3",
    "trainer.progress=none",
    "trainer.checkpoint_interval_s=0",  # a checkpoint at every epoch
    "trainer.num_threads=1",
    BOTH,
]


@pytest.mark.parametrize("when, kept, logged", [("checkpoint", 1, ["1", "2"]), ("end", 3, ["1", "2", "3", "3"])])
def test_rows_logged_after_the_checkpoint_are_dropped_on_resume(train, make_cfg, tmp_path, when, kept, logged):
    from mlptrain import cli

    ref = tmp_path / "ref"
    train(*RUN, out=ref, tiny=False)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-c", DIES, when, *RUN], cwd=work, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (run_dir,) = list((work / "outputs").glob("*/*"))
    assert checkpoint.load(run_dir / "last.pt")["epoch"] == kept
    assert [r["epoch"] for r in metrics_csv(run_dir)[1]] == logged  # rows past the checkpoint are on disk

    cli.run(make_cfg(*RUN, f"trainer.resume={run_dir}"), run_dir)
    assert_same_run(ref, run_dir)  # metrics, weights, every TensorBoard scalar once, metrics.csv row for row
    assert [r["epoch"] for r in metrics_csv(run_dir)[1]] == ["1", "2", "3", "3"]


def test_a_resumed_file_keeps_its_header_drops_a_cut_line_and_widens_for_a_new_column(tmp_path):
    from mlptrain.loggers import ResumePoint, build_loggers

    path = tmp_path / "metrics.csv"
    first = build_loggers(["csv"], tmp_path, metric_tags=["hparam/best_val_acc", "hparam/test_acc"])
    for epoch in (1, 2, 3):
        first.epoch({"epoch": epoch, "step": 10 * epoch, "lr": 0.1, "train/loss": 1.0 / epoch})
    first.close()
    with open(path, "a") as f:  # a kill in the middle of the next row
        f.write("4,4")

    again = build_loggers(["csv"], tmp_path, ResumePoint(epoch=2, step=20, saved_at=None))
    assert path.read_text() == "epoch,step,lr,train/loss,test/acc\n1,10,0.1,1.0,\n2,20,0.1,0.5,\n"
    again.epoch({"epoch": 3, "step": 30, "lr": 0.1, "train/loss": 0.25, "train/grad_norm": 2.0})  # a new column
    again.hparams_end({"hparam/best_val_acc": 0.9, "hparam/test_acc": 0.75}, 3)
    again.close()
    assert path.read_text() == (
        "epoch,step,lr,train/loss,train/grad_norm,test/acc\n1,10,0.1,1.0,,\n2,20,0.1,0.5,,\n"
        "3,30,0.1,0.25,2.0,\n3,30,,,,0.75\n"
    )
    assert not list(tmp_path.glob(".*.tmp"))

    fresh = build_loggers(["csv"], tmp_path)  # a new run in the same dir (no resume) starts the file again
    fresh.close()
    assert path.read_text() == ""

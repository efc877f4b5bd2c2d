"""Defaults for small tables: the loss follows the task, the monitor is the validation loss, splits are
stratified, and batch size / epochs / early stopping follow the size of the training split."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch

from conftest import untimed
from mlptrain.data.splits import fold_of_rows, split_rows
from mlptrain.training.sizes import auto_batch_size, auto_epochs

pytestmark = pytest.mark.usefixtures("keep_threads")
FAST = ["trainer.progress=none", "model.hidden=[16]", "trainer.num_threads=1", "trainer.loggers=[]"]


def table(path, n: int, target: str = "class"):
    rng = random.Random(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "y"])
        for i in range(n):
            a, b = rng.gauss(0, 1), rng.gauss(0, 1)
            w.writerow(
                [f"{a:.3f}", f"{b:.3f}", i % 3 if target == "class" else f"{2 * a - b + 0.1 * rng.gauss(0, 1):.4f}"]
            )
    return path


def test_a_decimal_target_trains_as_regression_without_a_loss_override(train, tmp_path):
    path = table(tmp_path / "r.csv", 90, target="reg")
    m = train("dataset=csv", f"dataset.path={path}", "dataset.target=y", *FAST, tiny=False, out=tmp_path / "run")
    assert m["status"] in ("completed", "early_stopped") and m["monitor"] == "val/rmse" and m["mode"] == "min"
    assert m["test"]["r2"] > 0.5
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ckpt["config"]["loss"]["name"] == "auto" and ckpt["data"]["task"] == "regression"


def test_classification_defaults_to_cross_entropy_monitored_by_validation_nll(train, tmp_path):
    path = table(tmp_path / "c.csv", 90)
    m = train("dataset=csv", f"dataset.path={path}", "dataset.target=y", *FAST, "trainer.epochs=3", tiny=False)
    assert m["monitor"] == "val/nll" and m["mode"] == "min"
    assert m["final"]["val/loss"] == pytest.approx(m["final"]["val/nll"])  # cross_entropy: the loss is the NLL


def test_an_explicit_loss_is_still_checked_against_the_inferred_task(train, tmp_path):
    from mlptrain.errors import ConfigError

    path = table(tmp_path / "r.csv", 60, target="reg")
    with pytest.raises(ConfigError, match=r"^loss=cross_entropy does not fit dataset=csv \(regression\)"):
        train("dataset=csv", f"dataset.path={path}", "dataset.target=y", "loss=cross_entropy", *FAST, tiny=False)
    with pytest.raises(ConfigError, match=r"^loss\.label_smoothing: only applies to loss=cross_entropy, not loss=mse"):
        train("dataset=csv", f"dataset.path={path}", "dataset.target=y", "loss.label_smoothing=0.1", *FAST, tiny=False)


def test_classification_splits_are_stratified_and_folds_are_balanced():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 21)
    train, val, test = split_rows(101, 0.2, 0.2, 0, y)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(101))
    for part in (val, test):
        counts = torch.bincount(y[part], minlength=3).tolist()
        assert all(abs(c - len(part) * k / 101) <= 1 for c, k in zip(counts, (50, 30, 21))), counts
    fold = fold_of_rows(101, 5, 0, y)
    for k in range(5):
        counts = torch.bincount(y[fold == k], minlength=3).tolist()
        assert [abs(c - n / 5) < 1 for c, n in zip(counts, (50, 30, 21))] == [True] * 3, counts
    assert torch.equal(fold, fold_of_rows(101, 5, 0, y))  # the same in every job of a sweep


@pytest.mark.parametrize(
    "n_train, batch, epochs", [(82, 32, 167), (240, 32, 63), (600, 64, 60), (1070, 128, 60), (51000, 128, 60)]
)
def test_auto_sizes_follow_the_training_split(n_train, batch, epochs):
    assert auto_batch_size(n_train) == batch
    assert auto_epochs(-(-n_train // batch)) == epochs


def test_a_small_table_gets_more_epochs_and_early_stopping(train, tmp_path):
    path = table(tmp_path / "c.csv", 60)  # 42 training rows: batch 32, 2 steps an epoch
    m = train("dataset=csv", f"dataset.path={path}", "dataset.target=y", *FAST, tiny=False, out=tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["config"]["trainer"]["batch_size"] == "auto" and m["steps"] == 2 * m["epochs"]
    assert m["epochs"] == 200 or m["status"] == "early_stopped"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == m["status"]


def test_a_pandas_index_and_a_text_id_are_left_out_with_one_line_each(tmp_path, caplog):
    from mlptrain.config import CsvConfig
    from mlptrain.data import load_dataset

    path = tmp_path / "p.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "name", "x", "colour", "y"])
        for i in range(40):  # sorted by class: the index would leak the label
            w.writerow([i, f"penguin-{i}", f"{i % 7 * 0.5}", ["red", "blue"][i % 2], "a" if i < 20 else "b"])
    caplog.set_level("WARNING", logger="mlptrain")
    data = load_dataset(CsvConfig(path=str(path), target="y"))
    assert data.preprocess["features"] == ["x", "colour"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "dataset.features: column '' is the row number (a pandas index written with the table); left out",
        "dataset.features: column 'name' has a different text value in every row (an id); left out "
        "(list it in dataset.features to use it)",
    ]
    data = load_dataset(CsvConfig(path=str(path), target="y", features=["name", "x"]))  # asked for: used
    assert len(data.preprocess["inputs"]) > 20


def test_throttled_checkpoints_hold_the_same_best_and_last_as_one_per_epoch(train, tmp_path, monkeypatch):
    from mlptrain import checkpoint

    names = []
    save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda path, payload: (names.append(path.name), save(path, payload)))
    run = ["dataset=moons", "dataset.n_samples=300", "model.hidden=[8]", "trainer.epochs=6", "trainer.progress=none"]
    every = train(*run, "trainer.checkpoint_interval_s=0", tiny=False, out=tmp_path / "every")
    written = len(names)
    names.clear()
    once = train(*run, "trainer.checkpoint_interval_s=1e9", tiny=False, out=tmp_path / "once")
    assert written == 6 and len(names) <= 2  # the held best.pt (if not the last epoch), then last.pt
    assert untimed(once) == untimed(every)
    for name in ("best.pt", "last.pt"):
        a, b = (torch.load(tmp_path / d / name, weights_only=True) for d in ("every", "once"))
        assert (a["epoch"], a["step"], untimed(a["history"])) == (b["epoch"], b["step"], untimed(b["history"]))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert all(
            torch.equal(a["optimizer"]["state"][i]["exp_avg"], b["optimizer"]["state"][i]["exp_avg"])
            for i in a["optimizer"]["state"]
        )

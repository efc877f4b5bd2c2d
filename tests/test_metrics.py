"""The classification and regression metrics beside accuracy/NLL/ECE and RMSE/MAE/R²: their values (by hand
and against scikit-learn), where they are left out, and any of them as the monitor and objective."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from conftest import call, metrics_csv, mlptrain
from mlptrain.errors import ConfigError
from mlptrain.losses import build_task, monitor_of
from mlptrain.losses.task import macro_scores, roc_auc
from mlptrain.registry import MAXIMISE, check_direction, objective_mode
from mlptrain.schemas import LossConfig


def task_of(loss: str, task: str, k: int):
    meta = {"name": "t", "task": task, "n_outputs": k, "class_names": [str(c) for c in range(k)] if k > 1 else None}
    return build_task(LossConfig(name=loss), meta, torch.zeros(k), torch.ones(k))


def scores(pred, y, k):
    return {n: v.item() for n, v in macro_scores(torch.tensor(pred), torch.tensor(y), k).items()}


# ----------------------------------------------------------------------------- values, by hand
def test_macro_scores_by_hand():
    # confusion (rows: true 0, 1, 2): [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = scores([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 2], 3)
    assert m["recall"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["balanced_acc"] == pytest.approx(13 / 18)
    assert m["precision"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert m["f1"] == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)  # 2tp / (2tp + fp + fn) per class


def test_macro_scores_skip_classes_absent_from_targets_and_predictions():
    """Class 2 never occurs: the macro averages run over classes 0 and 1 (scikit-learn's default labels)."""
    m = scores([0, 1, 1, 1], [0, 0, 1, 1], 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1) / 2) and m["precision"] == pytest.approx((1 + 2 / 3) / 2)
    # predicted but never true: its recall is 0 in the macro recall, and balanced accuracy leaves it out
    m = scores([0, 2, 1, 1], [0, 0, 1, 1], 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3) and m["balanced_acc"] == pytest.approx(3 / 4)


def test_roc_auc_by_hand_with_ties():
    p1 = torch.tensor([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(torch.stack([1 - p1, p1], 1), torch.tensor([0, 0, 1, 1])).item() == pytest.approx(0.75)
    # positives {0.5, 0.9} against negatives {0.5, 0.2}: 3 pairs ranked right and one tie (counts 1/2)
    p1 = torch.tensor([0.5, 0.5, 0.2, 0.9])
    assert roc_auc(torch.stack([1 - p1, p1], 1), torch.tensor([1, 0, 0, 1])).item() == pytest.approx(0.875)
    # three classes, one-vs-rest: each class ranked perfectly -> 1
    p = torch.eye(3)[[0, 1, 2, 0]] * 0.8 + 0.2 / 3
    assert roc_auc(p, torch.tensor([0, 1, 2, 0])).item() == pytest.approx(1.0)


def test_mape_by_hand_and_only_for_positive_targets(caplog):
    task = task_of("mse", "regression", 1)
    m = task.metrics(torch.tensor([[1.5], [2.0], [3.0]]), torch.tensor([1.0, 2.0, 4.0]))
    assert m["mape"] == pytest.approx((0.5 + 0 + 0.25) / 3)
    with caplog.at_level(logging.INFO, logger="mlptrain"):
        for _ in range(3):  # once per split, not once per epoch
            m = task.metrics(torch.tensor([[1.5], [2.0]]), torch.tensor([0.0, 2.0]), "val")
    assert "mape" not in m and {"rmse", "mae", "r2"} <= set(m)
    lines = [r.getMessage() for r in caplog.records if "mape" in r.getMessage()]
    assert lines == ["mape not reported on the val split: the target is not positive everywhere (min 0); "
                     "MAPE needs targets > 0"]  # fmt: skip


def test_roc_auc_is_left_out_where_a_class_has_no_rows(caplog):
    task = task_of("cross_entropy", "classification", 3)
    out = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]])
    assert "roc_auc" in task.metrics(out, torch.tensor([0, 1, 2, 0]))
    with caplog.at_level(logging.INFO, logger="mlptrain"):
        m = task.metrics(out, torch.tensor([0, 1, 1, 0]), "test")
    assert "roc_auc" not in m and m["f1"] == pytest.approx(scores([0, 1, 2, 0], [0, 1, 1, 0], 3)["f1"])
    assert any("roc_auc not reported on the test split: undefined, class 2 has no rows" in r.getMessage()
               for r in caplog.records)  # fmt: skip


# ----------------------------------------------------------------------------- values, against scikit-learn
def test_against_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    for k in (2, 3, 5):
        for _ in range(5):
            y = torch.randint(0, k, (41,), generator=g)
            y[:k] = torch.arange(k)
            p = ((torch.randn(41, k, generator=g) * 2).round() / 2).softmax(1)  # rounded logits: tied scores
            pred = p.argmax(1)
            m = scores(pred.tolist(), y.tolist(), k)
            assert m["balanced_acc"] == pytest.approx(metrics.balanced_accuracy_score(y, pred))
            for name, fn in (("f1", metrics.f1_score), ("precision", metrics.precision_score)):
                assert m[name] == pytest.approx(fn(y, pred, average="macro", zero_division=0))
            assert m["recall"] == pytest.approx(metrics.recall_score(y, pred, average="macro", zero_division=0))
            want = (
                metrics.roc_auc_score(y, p[:, 1])
                if k == 2
                else metrics.roc_auc_score(y, p.numpy(), multi_class="ovr", average="macro")
            )
            assert roc_auc(p, y).item() == pytest.approx(want, abs=1e-6)
    y, mean = torch.rand(30, 2, generator=g) + 0.1, torch.rand(30, 2, generator=g)
    task = task_of("mse", "regression", 2)
    want = metrics.mean_absolute_percentage_error(y, mean)
    assert task.metrics(mean, y)["mape"] == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------- monitor and objective
def test_every_new_metric_can_be_monitored_in_its_direction():
    cls, reg = task_of("cross_entropy", "classification", 2), task_of("mse", "regression", 1)
    for name in ("balanced_acc", "f1", "precision", "recall", "roc_auc"):
        assert monitor_of(cls, f"val/{name}", "auto") == (name, "max") and name in MAXIMISE
    assert monitor_of(reg, "mape", "auto") == ("mape", "min")
    trainer = lambda monitor: type("T", (), {"monitor": monitor, "mode": "auto"})  # noqa: E731
    assert objective_mode(trainer("val/f1"), None) == "max" and objective_mode(trainer("mape"), None) == "min"
    with pytest.raises(ConfigError, match=r"direction: minimize does not match the objective val/f1 .*maximize"):
        check_direction("minimize", objective_mode(trainer("val/f1"), None), "val/f1")
    with pytest.raises(ConfigError) as e:
        monitor_of(reg, "f1", "auto")
    assert str(e.value) == (
        "trainer.monitor: 'f1' is not a metric this task can select on; "
        "valid choices: auto, loss, rmse, mae, r2, nll, mape"
    )


def test_a_monitor_undefined_on_the_validation_split_is_refused():
    cls, reg = task_of("cross_entropy", "classification", 3), task_of("mse", "regression", 1)
    with pytest.raises(ConfigError, match=r"^trainer.monitor: val/roc_auc cannot select .*class 1 has no rows"):
        monitor_of(cls, "roc_auc", "auto", torch.tensor([0, 2, 2]))
    with pytest.raises(ConfigError, match=r"^trainer.monitor: val/mape cannot select .*MAPE needs targets > 0$"):
        monitor_of(reg, "mape", "auto", torch.tensor([1.0, -2.0]))
    assert monitor_of(cls, "f1", "auto", torch.tensor([0, 2, 2])) == ("f1", "max")  # defined without class 1


def _table(path, n=120):
    g = torch.Generator().manual_seed(3)
    with open(path, "w") as f:
        f.write("a,b,label,price\n")
        for i in range(n):
            a, b = torch.randn(2, generator=g).tolist()
            f.write(f"{a:.4f},{b:.4f},{'xyz'[i % 3]},{3 + a + 0.5 * b + (i % 3):.4f}\n")


def test_monitor_val_f1_end_to_end(tmp_path):
    """`trainer.monitor=val/f1` from the shell: selected on (max), in metrics.json, metrics.csv, the
    TensorBoard scalars' rows and mlptrain-eval's output."""
    from mlptrain.evaluate import eval_main

    _table(tmp_path / "t.csv")
    args = ["dataset=csv", f"dataset.path={tmp_path / 't.csv'}", "dataset.target=label", "dataset.features=[a,b]"]
    r = mlptrain(*args, "trainer.monitor=val/f1", "trainer.epochs=8", "trainer.early_stopping.enabled=false",
                 "trainer.loggers=[csv]", "model.hidden=[8]", "trainer.progress=none", "hydra.run.dir=run",
                 cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (m["monitor"], m["mode"]) == ("val/f1", "max")
    f1 = [h["val/f1"] for h in m["history"]]
    assert m["objective"] == max(f1) and m["best_epoch"] == f1.index(max(f1)) + 1  # the first maximum
    new = {"balanced_acc", "f1", "precision", "recall", "roc_auc"}
    assert new <= set(m["test"]) and all(0 <= m["test"][k] <= 1 for k in new)
    header, _ = metrics_csv(tmp_path / "run")
    assert {f"val/{k}" for k in new} | {f"test/{k}" for k in new} <= set(header)
    code, out, err = call(eval_main, str(tmp_path / "run"))
    assert code == 0, err
    assert json.loads(out)["metrics"] == pytest.approx(m["test"])

    r = mlptrain(*args, "trainer.monitor=val/mape", "trainer.epochs=1", "hydra.run.dir=bad", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("mlptrain: error: trainer.monitor: 'mape' is not a metric this task can select on;")
    assert "auto, loss, acc, nll, ece, balanced_acc, f1, precision, recall, roc_auc" in r.stderr


def test_regression_reports_mape_and_selects_on_it(train, tmp_path):
    _table(tmp_path / "t.csv")
    csv = ["dataset=csv", f"dataset.path={tmp_path / 't.csv'}", "dataset.target=price", "dataset.features=[a,b]"]
    m = train(*csv, "trainer.monitor=mape", "trainer.epochs=3", "trainer.progress=none", tiny=False)
    assert (m["monitor"], m["mode"]) == ("val/mape", "min") and math.isfinite(m["test"]["mape"])
    assert m["objective"] == min(h["val/mape"] for h in m["history"])

"""loss.class_weight (balanced | a list) for cross_entropy, nll and bce, and dataset.weight: per-row weights."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F

from conftest import call, mlptrain
from mlptrain import checkpoint
from mlptrain.errors import ConfigError, DataError
from mlptrain.losses import build_task
from mlptrain.losses.task import class_weights
from mlptrain.schemas import LossConfig

META = {"name": "t", "task": "classification", "n_outputs": 3, "class_names": ["a", "b", "c"]}


def weighted(loss: str, weight, k: int = 3):
    meta = {**META, "n_outputs": k, "class_names": META["class_names"][:k]}
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 0][: 8 if k == 3 else 6]) % k
    return build_task(LossConfig(name=loss, class_weight=weight), meta, torch.zeros(k), torch.ones(k), (y,)), y, meta


def test_balanced_is_scikit_learns_rule():
    y = torch.tensor([0] * 8 + [1] * 2 + [2] * 5)
    w = class_weights("balanced", META, y)
    assert w.tolist() == pytest.approx([15 / (3 * 8), 15 / (3 * 2), 15 / (3 * 5)])
    utils = pytest.importorskip("sklearn.utils")
    want = utils.compute_class_weight("balanced", classes=torch.arange(3).numpy(), y=y.numpy())
    assert w.tolist() == pytest.approx(want.tolist())
    with pytest.raises(ConfigError, match=r"^loss.class_weight=balanced: class 'c' has no rows in the training"):
        class_weights("balanced", META, torch.tensor([0, 1, 1]))


@pytest.mark.parametrize("loss", ["cross_entropy", "nll"])
def test_weighted_loss_is_torchs_weighted_mean(loss):
    task, y, meta = weighted(loss, "balanced")
    out = torch.randn(len(y), 3, generator=torch.Generator().manual_seed(0))
    cw = torch.tensor(meta["class_weight"])
    assert cw.tolist() == pytest.approx([8 / (3 * 5), 8 / (3 * 2), 8 / 3])  # recorded for the checkpoint
    assert task.loss(out, y).item() == pytest.approx(F.cross_entropy(out, y, weight=cw).item(), rel=1e-6)
    # per-row weights multiply the class weights
    rows = torch.tensor([1.0, 0, 2, 1, 1, 0, 3, 1])
    want = (F.cross_entropy(out, y, reduction="none") * rows * cw[y]).sum() / (rows * cw[y]).sum()
    assert task.loss(out, y, rows).item() == pytest.approx(want.item(), rel=1e-6)


def test_bce_takes_per_class_weights():
    task, y, _ = weighted("bce", [1.0, 4.0], k=2)
    z = torch.tensor([[0.3], [-1.0], [2.0], [0.0], [1.0], [-0.5]])
    per_row = F.binary_cross_entropy_with_logits(z[:, 0], y.float(), reduction="none")
    w = torch.tensor([1.0, 4.0])[y]
    assert task.loss(z, y).item() == pytest.approx(((per_row * w).sum() / w.sum()).item(), rel=1e-6)
    with pytest.raises(ConfigError, match=r"^loss.class_weight: 3 weights given, expected 2 \(one per class, in "):
        weighted("bce", [1.0, 2.0, 3.0], k=2)


def test_bad_values_and_losses_that_take_no_class_weight():
    for bad in ("bal", [1, -1], [0, 0], "1,2"):
        with pytest.raises(ConfigError, match=r"^loss.class_weight: must be balanced or a list of weights >= 0"):
            LossConfig(name="cross_entropy", class_weight=bad)
    with pytest.raises(ConfigError, match=r"^loss.class_weight: only applies to loss=cross_entropy or nll or bce"):
        LossConfig(name="mse", class_weight="balanced")


def imbalanced(path, n=300):
    r = random.Random(0)
    with open(path, "w") as f:
        f.write("x1,x2,label\n")
        for i in range(n):
            rare = i % 10 == 0
            m = 1.0 if rare else 0.0
            f.write(f"{r.gauss(m, 1):.4f},{r.gauss(m, 1):.4f},{'rare' if rare else 'common'}\n")


def recall_of(run_dir, table, cls: str) -> float:
    from mlptrain.predict import load, read_csv_inputs

    loaded = load(run_dir)
    rows = read_csv_inputs(table, loaded, with_target=True)
    with torch.no_grad():
        pred = loaded.task.predicted_class(loaded.model(rows.x))
    k = loaded.meta["class_names"].index(cls)
    return (pred[rows.y == k] == k).float().mean().item()


def test_balanced_weights_raise_the_minority_recall(train, tmp_path):
    """90% common, 10% rare, overlapping: unweighted, the model mostly answers 'common'; balanced, the rare
    class's recall rises. The checkpoint keeps the weights: mlptrain-eval gives the run's own test loss."""
    from mlptrain.evaluate import eval_main

    imbalanced(tmp_path / "imb.csv")
    csv = ["dataset=csv", f"dataset.path={tmp_path / 'imb.csv'}", "dataset.target=label", "trainer.epochs=30"]
    train(*csv, out=tmp_path / "plain", tiny=False)
    m = train(*csv, "loss.class_weight=balanced", out=tmp_path / "balanced", tiny=False)
    plain, balanced = (recall_of(tmp_path / d, tmp_path / "imb.csv", "rare") for d in ("plain", "balanced"))
    assert plain < 0.3 and balanced > plain + 0.3, (plain, balanced)
    assert checkpoint.load(tmp_path / "balanced" / "best.pt")["data"]["class_weight"] == pytest.approx(
        [300 / (2 * 270), 300 / (2 * 30)], rel=0.05
    )  # on the training split (stratified: the same proportions)
    code, out, err = call(eval_main, str(tmp_path / "balanced"))
    assert code == 0, err
    assert json.loads(out)["metrics"] == pytest.approx(m["test"])


def test_class_weight_errors_from_the_shell(tmp_path):
    imbalanced(tmp_path / "imb.csv", 40)
    csv = ["dataset=csv", "dataset.path=imb.csv", "dataset.target=label", "trainer.epochs=1"]
    for args, want in (
        (["loss.class_weight=[1,2,3]"], "loss.class_weight: 3 weights given, expected 2 (one per class, in the "
                                        "order common, rare), or balanced"),
        (["loss=mse", "loss.class_weight=balanced"], "loss.class_weight: only applies to loss=cross_entropy or "
                                                     "nll or bce, not loss=mse"),
    ):  # fmt: skip
        r = mlptrain(*csv, *args, "hydra.run.dir=run", cwd=tmp_path)
        assert (r.returncode, r.stderr) == (2, f"mlptrain: error: {want}\n")


# ----------------------------------------------------------------------------- dataset.weight
def noisy(path, n_clean=120, n_flipped=180, weight=True):
    """label = x > 0 on the clean rows; the flipped rows (the majority) say the opposite, with weight 0."""
    r = random.Random(1)
    with open(path, "w") as f:
        f.write("x,w,label\n" if weight else "x,label\n")
        for i in range(n_clean + n_flipped):
            x = r.uniform(-2, 2)
            flipped = i % (n_clean + n_flipped) >= n_clean
            label = int(x > 0) ^ flipped
            f.write(f"{x:.4f},{0 if flipped else 1},{label}\n" if weight else f"{x:.4f},{label}\n")


def test_zero_weight_rows_do_not_train(train, tmp_path):
    """Exact equality with a run without those rows cannot hold (removing rows changes the split and the
    batches), so: a majority of mislabelled rows with weight 0 is ignored (a clean test table is learnt),
    while the same rows unweighted turn the rule around; the weight column is no feature, and a checkpoint
    predicts rows without it."""
    from mlptrain.evaluate import predict_main

    noisy(tmp_path / "train.csv")
    noisy(tmp_path / "test.csv", 100, 0, weight=False)
    csv = ["dataset=csv", f"dataset.path={tmp_path / 'train.csv'}", f"dataset.test_path={tmp_path / 'test.csv'}"]
    csv += ["dataset.target=label", "trainer.epochs=20"]
    weighted = train(*csv, "dataset.weight=w", out=tmp_path / "w", tiny=False)
    assert checkpoint.load(tmp_path / "w" / "best.pt")["data"]["preprocess"]["features"] == ["x"]
    plain = train(*csv, "dataset.features=[x]", out=tmp_path / "plain", tiny=False)
    assert weighted["test"]["acc"] > 0.9 and plain["test"]["acc"] < 0.5, (weighted["test"], plain["test"])
    (tmp_path / "new.csv").write_text("x\n-1.5\n1.5\n")
    code, out, err = call(predict_main, str(tmp_path / "w"), str(tmp_path / "new.csv"))
    assert code == 0, err
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == ["0", "1"]


def test_bad_weight_cells_and_columns_are_refused(tmp_path):
    from mlptrain.data.tabular import load_csv
    from mlptrain.dataset_config import CsvConfig

    path = tmp_path / "t.csv"
    for cell, shown in (("-1", "'-1'"), ("nan", "'nan'"), ("", "''"), ("heavy", "'heavy'")):
        path.write_text(f"x,w,y\n1,1,0\n2,{cell},1\n3,1,0\n4,1,1\n5,2,0\n6,1,1\n")
        with pytest.raises(DataError) as e:
            load_csv(CsvConfig(path=str(path), target="y", weight="w"))
        assert str(e.value) == (
            f"dataset.path: {path} line 3, column 'w': {shown} is not a weight; dataset.weight needs a number >= 0"
        )
    path.write_text("x,w,y\n1,1,0\n2,1,1\n")
    with pytest.raises(DataError, match=r"^dataset.weight: column 'v' is not in"):
        load_csv(CsvConfig(path=str(path), target="y", weight="v"))
    with pytest.raises(DataError, match=r"^dataset.features: the weight column 'w' cannot also be a feature$"):
        load_csv(CsvConfig(path=str(path), target="y", weight="w", features=["x", "w"]))

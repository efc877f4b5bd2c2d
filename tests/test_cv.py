"""k-fold cross-validation as a sweep: dataset.folds/dataset.fold, the cv=<k>fold preset, each fold's
val_predictions.csv, the sweep's oof_predictions.csv and the folds' mean ± std in the summary."""

from __future__ import annotations

import csv
import json
import random
import shutil
import signal
import statistics
from pathlib import Path

import pytest
import torch

from conftest import call, mlptrain
from mlptrain.data.splits import fold_split
from mlptrain.dataset_config import CsvConfig
from mlptrain.errors import ConfigError, DataError

CV = ["dataset=csv", "dataset.target=y", "dataset.id=name", "trainer.epochs=3", "model.hidden=[8]"]
QUIET = ["trainer.progress=none", "trainer.num_threads=1", "trainer.loggers=[]"]


def write_table(path: Path, n: int = 45) -> list[dict]:
    """A 3-class table with a text id; the classes are unbalanced (20/15/10 of 45 rows)."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        c = "abc"[0 if i % 9 < 4 else 1 if i % 9 < 7 else 2]
        rows.append(
            {"name": f"id{i:03d}", "u": f"{rng.gauss(0, 1) + 'abc'.index(c):.3f}", "v": f"{rng.gauss(0, 1):.3f}"}
        )
        rows[-1]["y"] = c
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["name", "u", "v", "y"])
        w.writeheader()
        w.writerows(rows)
    return rows


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- the folds
def test_folds_partition_the_rows_stratified_and_leave_the_test_part_alone():
    labels = torch.tensor([0] * 20 + [1] * 13 + [2] * 7)
    parts = [fold_split(40, 4, k, 0.2, seed=3, labels=labels) for k in range(4)]
    tests = {tuple(te.tolist()) for _, _, te in parts}
    assert len(tests) == 1 and len(parts[0][2]) == 8  # the same test part for every fold
    test = set(parts[0][2].tolist())
    vals = [set(va.tolist()) for _, va, _ in parts]
    assert sorted(i for v in vals for i in v) == sorted(set(range(40)) - test)  # each row in exactly one fold
    for (tr, va, _), v in zip(parts, vals):
        assert set(tr.tolist()) == set(range(40)) - test - v
        counts = torch.bincount(labels[va], minlength=3)
        rest = torch.bincount(labels[sorted(set(range(40)) - test)], minlength=3)
        assert ((counts - rest / 4).abs() <= 1).all(), counts  # stratified: within one row per class
    again = fold_split(40, 4, 1, 0.2, seed=3, labels=labels)
    assert all(torch.equal(a, b) for a, b in zip(again, parts[1]))  # reproducible from the seed
    other = fold_split(40, 4, 1, 0.2, seed=4, labels=labels)
    assert not torch.equal(other[1].sort().values, parts[1][1].sort().values)
    _, va, te = fold_split(10, 5, 0, 0, seed=0)  # regression / a separate test file: every row is folded
    assert len(te) == 0 and len(va) == 2


@pytest.mark.parametrize(
    "folds, fold, message",
    [
        (1, 0, "dataset.folds: must be >= 2 (or 0: no cross-validation), got 1"),
        (5, 5, "dataset.fold: must be in [0, 4] for dataset.folds=5, got 5"),
        (5, -1, "dataset.fold: must be in [0, 4] for dataset.folds=5, got -1"),
        (0, 0, "dataset.fold: needs dataset.folds (the number of folds, >= 2)"),
        (5, None, "dataset.fold: dataset.folds=5 trains one job per fold: run a sweep over them"),
    ],
)
def test_fold_keys_are_checked_in_one_line(folds, fold, message):
    with pytest.raises(ConfigError) as e:
        CsvConfig(path="t.csv", target="y", folds=folds, fold=fold)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_more_folds_than_rows_or_than_the_smallest_class_has_are_refused():
    with pytest.raises(DataError, match=r"^dataset.folds: must be in \[2, 7\] \(the smallest class has 7"):
        fold_split(40, 8, 0, 0, seed=0, labels=torch.tensor([0] * 33 + [1] * 7))
    with pytest.raises(DataError, match=r"^dataset.folds: must be in \[2, 8\] for the 8 rows left"):
        fold_split(10, 9, 0, 0.2, seed=0)


def test_a_fold_without_a_sweep_is_refused_in_one_line(tmp_path):
    write_table(tmp_path / "t.csv")
    r = mlptrain(*CV, "dataset.path=t.csv", "cv=5fold", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "mlptrain: error: dataset.fold: dataset.folds=5 trains one job per fold: run a sweep over them, "
        "mlptrain -m ... 'dataset.fold=range(5)' (or mlptrain -m ... cv=5fold)"
    ], r.stderr


# ----------------------------------------------------------------------------- the sweep
def test_a_cv_sweep_gives_out_of_fold_predictions_and_mean_std_with_any_launcher(tmp_path):
    """joblib workers train the folds; a continued sweep (basic launcher) rewrites the same file."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from mlptrain import evaluate, sweep

    table = write_table(tmp_path / "t.csv")
    d = tmp_path / "sweep"
    args = ["-m", *CV, f"dataset.path={tmp_path / 't.csv'}", "cv=3fold", f"hydra.sweep.dir={d}", *QUIET]
    r = mlptrain(*args, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = sorted(p for p in d.iterdir() if (p / "metrics.json").is_file())
    assert [j.name for j in jobs] == ["0_fold=0", "1_fold=1", "2_fold=2"]
    assert len({json.loads((j / "metrics.json").read_text())["runtime"]["pid"] for j in jobs}) == 2  # workers

    oof = read_csv(d / "oof_predictions.csv")
    assert list(oof[0]) == ["row", "id", "fold", "target", "prediction", "p_a", "p_b", "p_c"]
    rows = [int(o["row"]) for o in oof]
    assert rows == sorted(set(rows)) and len(rows) == 45 - 7  # every non-test row once (7 rows: test)
    assert all(o["id"] == table[int(o["row"])]["name"] and o["target"] == table[int(o["row"])]["y"] for o in oof)
    for k, job in enumerate(jobs):  # each row predicted by the model of the fold that held it out
        mine = [o for o in oof if o["fold"] == str(k)]
        for c in "abc":  # stratified: each class within one row of its share
            assert abs(sum(o["target"] == c for o in mine) - sum(o["target"] == c for o in oof) / 3) <= 1
        out = tmp_path / f"pred{k}.csv"
        code, _, err = call(evaluate.predict_main, str(job), str(tmp_path / "t.csv"), "-o", str(out), "--id", "name")
        assert code == 0, err
        predicted = {p["name"]: p for p in read_csv(out)}
        for o in mine:
            p = predicted[o["id"]]
            assert p["prediction"] == o["prediction"]
            assert all(abs(float(p[c]) - float(o[c])) < 1e-6 for c in ("p_a", "p_b", "p_c"))

    code, text, _ = call(sweep.main, str(d))
    assert code == 0
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    acc = [m["test"]["acc"] for m in metrics]
    objective = [m["objective"] for m in metrics]
    assert "## Mean ± std over folds" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| 0,1,2 | 3/3 |"))
    fmt = sweep._fmt
    assert f"| {fmt(statistics.fmean(objective))} ± {fmt(statistics.stdev(objective))} |" in line
    assert f"| {fmt(statistics.fmean(acc))} ± {fmt(statistics.stdev(acc))} |" in line
    assert "cross-validation: val/nll (best)" in r.stdout + r.stderr  # the console has the folds' mean ± std too

    # A continued sweep (fold 1 lost, another launcher): fold 1 runs again and the file is the same.
    before = (d / "oof_predictions.csv").read_text()
    shutil.rmtree(jobs[1])
    (d / "oof_predictions.csv").unlink()
    r = mlptrain(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (d / "oof_predictions.csv").read_text() == before


def test_a_sweep_over_other_keys_and_folds_gives_one_row_per_setting(tmp_path):
    write_table(tmp_path / "t.csv")
    d = tmp_path / "sweep"
    r = mlptrain(
        "-m",
        *CV,
        "dataset.path=t.csv",
        "dataset.test_fraction=0.2",
        "dataset.folds=2",
        "dataset.fold=0,1",
        "optim=sgd,adam",
        "trainer.epochs=1",
        f"hydra.sweep.dir={d}",
        *QUIET,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    oof = read_csv(d / "oof_predictions.csv")
    assert list(oof[0])[:3] == ["optim", "row", "id"]
    for optim in ("sgd", "adam"):
        rows = [int(o["row"]) for o in oof if o["optim"] == optim]
        assert len(rows) == len(set(rows)) == 36
    md = (d / "summary.md").read_text()
    section = md.split("## Mean ± std over folds")[1].strip().splitlines()
    assert section[0].startswith("| optim | folds | completed |") and len(section) == 4
    assert {ln.split(" | ")[0] for ln in section[2:]} == {"| sgd", "| adam"}


# ----------------------------------------------------------------------------- trainer.refit
REFIT = [
    "dataset=csv",
    "dataset.target=y",
    "model.hidden=[8]",
    "trainer.epochs=6",
    "trainer.monitor=loss",
    "trainer.refit=true",
    "trainer.checkpoint_every_n_steps=1",
    "trainer.checkpoint_interval_s=0",
    *QUIET,
]


def weights(path: Path) -> dict:
    from mlptrain import checkpoint

    return checkpoint.load(path)["model"]


def test_refit_trains_on_train_and_val_for_the_best_epochs_and_is_the_runs_model(train, tmp_path, keep_threads):
    from mlptrain import evaluate

    write_table(tmp_path / "t.csv")
    run = tmp_path / "run"
    m = train(*REFIT, f"dataset.path={tmp_path / 't.csv'}", "trainer.loggers=[tensorboard]", out=run, tiny=False)
    r = json.loads((run / "refit" / "metrics.json").read_text())
    sizes = torch.load(run / "last.pt", weights_only=True)["data"]["sizes"]  # the selection's splits
    assert m["refit"]["train_rows"] == sizes["train"] + sizes["val"] == 38
    assert m["refit"]["epochs"] == r["epochs"] == m["best_epoch"] >= 1  # the selected number of epochs
    assert m["epochs"] == 6 and m["best"] and m["objective"] == m["best"]["val/loss"]  # the selection's record
    assert m["test"] == r["test"] and m["refit"]["selection_test"] != m["test"]
    # the same schedule length: the lr is planned over the selection's 6 epochs, then it stops
    assert torch.load(run / "refit" / "last.pt", weights_only=True)["config"]["trainer"]["epochs"] == 6
    assert len(r["history"]) == m["best_epoch"] and (m["best_epoch"] == 6 or r["history"][-1]["lr"] > 1e-6)
    assert (run / "best.pt").read_bytes() == (run / "refit" / "best.pt").read_bytes()
    code, out, err = call(evaluate.eval_main, str(run))  # the run's model is the refit one
    assert code == 0, err
    assert json.loads(out)["metrics"]["acc"] == pytest.approx(m["test"]["acc"])
    assert list((run / "refit").glob("events.out.tfevents.*"))  # TensorBoard: the refit is a run of its own


@pytest.mark.parametrize("how", ["sigint", "crash"])
def test_a_refit_stopped_midway_resumes_to_the_same_model(train, make_cfg, tmp_path, monkeypatch, keep_threads, how):
    """Stopped in the refit (a SIGINT, or a crash that leaves only the periodic last.pt, as a SIGKILL
    would), the run resumes the refit from refit/last.pt and ends as the run that was never stopped."""
    from mlptrain import cli
    from mlptrain.progress import Progress

    write_table(tmp_path / "t.csv")
    args = [*REFIT, f"dataset.path={tmp_path / 't.csv'}"]
    ref = tmp_path / "ref"
    m = train(*args, out=ref, tiny=False)
    selection_steps = m["steps"]
    step, seen = Progress.step, []

    def stop(self, i, n):
        step(self, i, n)
        seen.append(i)
        if len(seen) == selection_steps + 2:  # the refit's 2nd step
            if how == "sigint":
                signal.raise_signal(signal.SIGINT)
            else:
                raise RuntimeError("killed")

    run = tmp_path / "run"
    monkeypatch.setattr(Progress, "step", stop)
    with pytest.raises(Exception) as e:
        cli.run(make_cfg(*args), run)
    monkeypatch.undo()
    if how == "sigint":
        assert "interrupted during the refit; resume the run with: mlptrain trainer.resume=" in str(e.value)
    assert (run / "refit" / "last.pt").is_file() and json.loads((run / "metrics.json").read_text())["status"] != (
        "completed"
    )
    cli.run(make_cfg(*args, f"trainer.resume={run}"), run)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref, run))
    assert b["status"] == "completed" and b["test"] == a["test"] and b["refit"] == a["refit"]
    wa, wb = weights(ref / "best.pt"), weights(run / "best.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_refit_of_a_fold_is_refused_in_one_line(make_cfg):
    from mlptrain.config import parse

    cfg = make_cfg("dataset=csv", "dataset.path=t.csv", "dataset.target=y", "dataset.folds=3", "dataset.fold=0")
    cfg.trainer.refit = True
    with pytest.raises(ConfigError, match=r"^trainer.refit: a cross-validation fold is scored on its held-out fold"):
        parse(cfg)
    with pytest.raises(ConfigError, match=r"^trainer.refit: retrains for the selected number of epochs"):
        parse(make_cfg("trainer.refit=true", "trainer.max_steps=5"))

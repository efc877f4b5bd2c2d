"""mlptrain-eval --importance: permutation importance per input column (a one-hot column as one)."""

from __future__ import annotations

import csv
import json
import random

from conftest import call
from mlptrain.evaluate import eval_main
from test_predict_inputs import train_run


def test_the_column_that_carries_the_signal_ranks_first(tmp_path):
    rng = random.Random(0)
    rows = []
    for _ in range(300):
        signal, noise = rng.uniform(-1, 1), rng.uniform(-1, 1)
        colour = rng.choice(["red", "green", "blue"])  # one-hot: 3 inputs, permuted together
        rows.append([f"{noise:.3f}", colour, f"{signal:.3f}", "pos" if signal > 0 else "neg"])
    table = tmp_path / "t.csv"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([["noise", "colour", "signal", "label"], *rows])
    run = train_run(
        tmp_path,
        "run",
        "dataset=csv",
        f"dataset.path={table}",
        "dataset.target=label",
        "trainer.epochs=30",
        "optim.lr=0.03",
    )
    code, out, err = call(eval_main, str(run), "--importance", "--repeats", "3", "-o", str(tmp_path / "m.json"))
    assert code == 0, err
    assert out.splitlines()[0].startswith("permutation importance: drop in acc")
    assert out.splitlines()[2].split()[0] == "signal"  # the table, most important first
    with open(run / "importance.csv", newline="") as f:
        table_rows = list(csv.DictReader(f))
    assert [r["column"] for r in table_rows][0] == "signal" and len(table_rows) == 3  # colour is one column
    assert list(table_rows[0]) == ["column", "importance_acc_mean", "importance_acc_std"]
    signal = float(table_rows[0]["importance_acc_mean"])
    assert signal > 0.2 and all(abs(float(r["importance_acc_mean"])) < signal / 2 for r in table_rows[1:])
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["importance"]["columns"][0]["column"] == "signal" and result["importance"]["repeats"] == 3

    code, _, err = call(eval_main, str(run), "--importance", "--repeats", "0")
    assert code == 2 and "--repeats 0: give 1 or more" in err

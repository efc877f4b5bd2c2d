"""CSV tables: a realistic mixed table end to end, the encoders, and every bad-input message."""

from __future__ import annotations

import csv
import json
import math
import random
import statistics

import pytest
import torch

from conftest import mlptrain
from mlptrain.config import ConfigError, CsvConfig
from mlptrain.data import DataError, load_dataset
from mlptrain.data.bundle import split_indices
from mlptrain.data.encoding import encode_rows, encoded_names

FAST = ["trainer.progress=none", "model.hidden=[32]", "trainer.batch_size=32"]
COLUMNS = ["species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
# Per-species means and spreads of the Palmer penguins measurements, and the islands each lives on.
SPECIES = {
    "Adelie": ((38.8, 2.7), (18.3, 1.2), (190.0, 6.5), (3700.0, 450.0), ("Biscoe", "Dream", "Torgersen")),
    "Chinstrap": ((48.8, 3.3), (18.4, 1.1), (195.8, 7.1), (3733.0, 380.0), ("Dream",)),
    "Gentoo": ((47.5, 3.1), (15.0, 1.0), (217.2, 6.5), (5076.0, 500.0), ("Biscoe",)),
}


def penguins(n: int = 330, seed: int = 0, missing: bool = True) -> list[list[str]]:
    """A penguins-like table: two text columns, four measurements (body mass in whole grams), sex with
    gaps, a year; about 2% of the measurement cells are ``NA`` as in the real data."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        species = list(SPECIES)[i % 3]
        (bl, bd, fl, mass, islands) = SPECIES[species]
        sex = rng.choice(["male", "female"])
        male = 1 if sex == "male" else -1
        cells = [
            species,
            rng.choice(islands),
            f"{rng.gauss(*bl) + 1.5 * male:.1f}",
            f"{rng.gauss(*bd) + 0.6 * male:.1f}",
            f"{rng.gauss(*fl) + 3 * male:.0f}",
            f"{rng.gauss(mass[0] + 0.8 * mass[1] * male, 0.5 * mass[1]):.0f}",
            sex,
            str(rng.choice([2007, 2008, 2009])),
        ]
        if missing and rng.random() < 0.08:
            cells[rng.choice([2, 3, 4, 6])] = "NA"
        rows.append(cells)
    return rows


def write_csv(path, rows, header=COLUMNS, delimiter=","):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def load(path, **kw) -> DataBundle:  # noqa: F821
    return load_dataset(CsvConfig(path=str(path), **kw))


# ----------------------------------------------------------------------------- end to end
def test_a_table_edited_between_loads_is_read_again_also_through_a_home_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write_csv(tmp_path / "t.csv", penguins(n=40))
    first = load("~/t.csv", target="species")
    assert load("~/t.csv", target="species") is first  # unchanged: the process's copy
    write_csv(path, penguins(n=80))
    second = load("~/t.csv", target="species")
    n_rows = lambda b: len(b.x_train) + len(b.x_val) + len(b.x_test)
    assert n_rows(second) > n_rows(first)


def test_mixed_table_classifies_through_the_command(tmp_path):
    path = write_csv(tmp_path / "penguins.csv", penguins())
    r = mlptrain(
        "dataset=csv", f"dataset.path={path}", "dataset.target=species", "trainer.epochs=15", *FAST, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["test"]["acc"] > 0.9
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)  # the encoders are plain data
    pre = ckpt["data"]["preprocess"]
    assert ckpt["data"]["class_names"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert pre["inputs"] == [
        "island=Biscoe",
        "island=Dream",
        "island=Torgersen",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex=female",
        "sex=male",
        "year",
    ]


def test_mixed_table_regresses_an_integer_column_when_told(tmp_path, train):
    path = write_csv(tmp_path / "penguins.csv", penguins())
    m = train(
        "dataset=csv",
        f"dataset.path={path}",
        "dataset.target=body_mass_g",
        "dataset.task=regression",
        "loss=mse",
        "trainer.epochs=30",
        *FAST,
        tiny=False,
    )
    assert m["status"] == "completed" and m["test"]["r2"] > 0.6  # species and sex explain most of the mass


# ----------------------------------------------------------------------------- encoding
def test_categoricals_one_hot_from_training_categories_numerics_standardised_in_the_model(tmp_path):
    path = write_csv(tmp_path / "p.csv", penguins(missing=False))
    rows = penguins(n=3, seed=1, missing=False)
    rows[0][1] = "Deception"  # an island never seen in training
    test = write_csv(tmp_path / "test.csv", rows)
    data = load(path, target="species", test_path=str(test))

    names = data.preprocess["inputs"]
    assert names == encoded_names(data.preprocess) and data.in_features == len(names) == 10
    islands = slice(0, 3)
    assert data.x_test[0, islands].tolist() == [0.0, 0.0, 0.0]  # unseen: all zeros
    assert data.x_test[1:, islands].sum(1).tolist() == [1.0, 1.0]
    # numeric columns hold raw values; their train mean/std go to the model, one-hot columns stay 0/1
    bill = names.index("bill_length_mm")
    assert data.x_test[0, bill].item() == pytest.approx(float(rows[0][2]))
    assert data.x_mean[bill].item() == pytest.approx(data.x_train[:, bill].double().mean().item(), rel=1e-5)
    assert data.x_std[bill].item() == pytest.approx(data.x_train[:, bill].double().std().item(), rel=1e-5)
    assert data.x_mean[islands].tolist() == [0.0] * 3 and data.x_std[islands].tolist() == [1.0] * 3
    assert (len(data.y_train) + len(data.y_val), len(data.y_test)) == (330, 3)


def test_missing_values_are_imputed_from_the_training_split(tmp_path):
    rows = penguins(n=60, missing=False)
    for r in rows[::4]:
        r[2] = "NA"  # bill length
        r[6] = ""  # sex
    path = write_csv(tmp_path / "p.csv", rows)
    test_rows = penguins(n=2, seed=5, missing=False)
    test_rows[0][2], test_rows[0][6] = "?", "nan"
    test_rows[1][2] = "9999"  # extreme test values must not move the fill value
    test = write_csv(tmp_path / "t.csv", test_rows)

    for policy, stat in (("mean", lambda v: sum(v) / len(v)), ("median", statistics.median)):
        data = load(path, target="species", test_path=str(test), missing=policy, val_fraction=0.25)
        train, _, _ = split_indices(60, 0.25, 0, 0)
        known = [float(rows[i][2]) for i in train.tolist() if rows[i][2] != "NA"]
        bill = data.preprocess["columns"][1]
        assert bill["name"] == "bill_length_mm" and bill["fill"] == pytest.approx(stat(known))
        sexes = [rows[i][6] for i in train.tolist() if rows[i][6]]
        expected_sex = max(sorted(set(sexes)), key=sexes.count)
        assert data.preprocess["columns"][5]["fill"] == expected_sex
        x = data.x_test[0]
        assert x[data.preprocess["inputs"].index("bill_length_mm")].item() == pytest.approx(bill["fill"], rel=1e-6)
        assert x[data.preprocess["inputs"].index(f"sex={expected_sex}")].item() == 1.0


def test_encode_rows_reproduces_the_training_encoding(tmp_path):
    path = write_csv(tmp_path / "p.csv", penguins())
    test = write_csv(tmp_path / "t.csv", penguins(n=20, seed=3))
    data = load(path, target="species", test_path=str(test))
    with open(test, newline="") as f:
        raw = list(csv.DictReader(f))
    assert torch.equal(encode_rows(data.preprocess, raw), data.x_test)
    pre = json.loads(json.dumps(data.preprocess))  # plain data: survives any serialisation
    features = pre["features"]
    as_lists = [[r[c] for c in features] for r in raw]
    assert torch.equal(encode_rows(pre, as_lists), data.x_test)
    new = encode_rows(
        pre,
        [
            {
                "island": "Atlantis",
                "bill_length_mm": 40,
                "bill_depth_mm": None,
                "flipper_length_mm": "200",
                "body_mass_g": 3900.0,
                "sex": "NA",
                "year": 2008,
            }
        ],
    )
    assert new.shape == (1, 10) and new[0, :3].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(DataError, match=r"^row 1, column 'year': 'soon' is not a number"):
        encode_rows(pre, [{**raw[0], "year": "soon"}])
    with pytest.raises(DataError, match=r"^row 2: column 'sex' is missing; expected columns: island, "):
        encode_rows(pre, [raw[0], {k: v for k, v in raw[1].items() if k != "sex"}])


@pytest.mark.parametrize(
    "values, task, classes",
    [
        (["3", "1", "10", "2", "1", "3"], "classification", ["1", "2", "3", "10"]),
        (["yes", "no", "no", "maybe", "yes", "no"], "classification", ["maybe", "no", "yes"]),
        (["0.5", "1", "2.25", "3", "1e2", "-4"], "regression", None),
        (["0.0", "1.0", "1.0", "0.0", "1", "0"], "classification", ["0", "1"]),  # 0/1 stored as floats
        ([str(v) for v in range(0, 63, 3)], "regression", None),  # 21 distinct whole numbers: a quantity
    ],
)
def test_task_is_inferred_from_the_target(tmp_path, values, task, classes):
    rows = [[str(i), "a" if i % 2 else "b", v] for i, v in enumerate(values * 5)]
    path = write_csv(tmp_path / "t.csv", rows, header=["x", "kind", "y"])
    data = load(path, target="y")
    assert data.task == task and data.class_names == classes
    if task == "regression":
        assert data.y_train.dtype == torch.float32
    else:
        y = torch.cat([data.y_train, data.y_val, data.y_test])
        whole = lambda v: str(int(float(v))) if v.replace(".", "").isdigit() else v  # noqa: E731
        assert sorted(classes[k] for k in y.tolist()) == sorted(whole(v) for v in values * 5)


def test_explicit_task_codes_as_categories_and_other_delimiters(tmp_path):
    rows = [[f"{i % 4 + 10}", f"{i * 0.5}", f"{i % 3}"] for i in range(40)]
    path = write_csv(tmp_path / "t.csv", rows, header=["zip", "size", "label"], delimiter=";")
    data = load(path, target="label", task="regression", categorical=["zip"], delimiter=";")
    assert data.task == "regression" and data.preprocess["inputs"] == ["zip=10", "zip=11", "zip=12", "zip=13", "size"]
    data = load(path, target="label", features=["size"], delimiter=";")
    assert data.task == "classification" and data.preprocess["inputs"] == ["size"]


def test_rows_without_a_target_are_left_out(tmp_path):
    rows = penguins(n=40, missing=False)
    rows[5][0] = "NA"
    data = load(write_csv(tmp_path / "p.csv", rows), target="species")
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 39


# ----------------------------------------------------------------------------- bad input
def _bad(tmp_path, rows, header=COLUMNS, **kw):
    path = write_csv(tmp_path / "bad.csv", rows, header=header)
    with pytest.raises(DataError) as e:
        load(path, **{"target": "species", **kw})
    msg = str(e.value)
    assert "\n" not in msg
    return msg, path


def test_bad_path(tmp_path):
    with pytest.raises(DataError, match=rf"^dataset.path: file not found: {tmp_path}/nope.csv$"):
        load(tmp_path / "nope.csv", target="y")
    with pytest.raises(DataError, match=rf"^dataset.path: {tmp_path} is a folder; give the path of a CSV file$"):
        load(tmp_path, target="y")


def test_missing_target_column_lists_the_columns(tmp_path):
    msg, path = _bad(tmp_path, penguins(n=10), target="spieces")
    assert msg == (
        f"dataset.target: column 'spieces' is not in {path}; columns: species, island, bill_length_mm, "
        "bill_depth_mm, flipper_length_mm, body_mass_g, sex, year"
    )


def test_empty_file_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"^dataset.path: .*/empty.csv is empty; expected a header row"):
        load(tmp_path / "empty.csv", target="y")
    (tmp_path / "header.csv").write_text("a,b,y\n\n")
    with pytest.raises(DataError, match=r"^dataset.path: .*/header.csv has a header but no data rows$"):
        load(tmp_path / "header.csv", target="y")


def test_non_numeric_cell_names_line_and_column(tmp_path):
    rows = penguins(n=30)
    rows[6][4] = "two hundred"
    msg, path = _bad(tmp_path, rows)
    assert msg == (
        f"dataset.path: {path} line 8, column 'flipper_length_mm': 'two hundred' is not a number, but the "
        "column is numeric; fix the cell, add 'two hundred' to dataset.na_values, or list the column in "
        "dataset.categorical"
    )


def test_missing_value_rejected_when_asked(tmp_path):
    rows = penguins(n=30, missing=False)
    rows[9][3] = "NA"
    msg, path = _bad(tmp_path, rows, missing="error")
    assert msg == (
        f"dataset.path: {path} line 11, column 'bill_depth_mm': missing value (dataset.missing=error); "
        "fill it in, or set dataset.missing=mean, median or most_frequent to impute"
    )


def test_missing_value_rejected_also_when_a_numeric_na_token_is_spelled_differently(tmp_path):
    rows = penguins(n=30, missing=False)
    rows[4][3] = "-999.0"  # na_values has -999: the same number
    msg, path = _bad(tmp_path, rows, missing="error", na_values=["-999"])
    assert msg.startswith(f"dataset.path: {path} line 6, column 'bill_depth_mm': missing value (dataset.missing=error)")


def test_ragged_row_and_a_bad_test_file(tmp_path):
    rows = penguins(n=20)
    rows[3] = rows[3][:5]
    msg, path = _bad(tmp_path, rows)
    assert msg == (
        f"dataset.path: {path} line 5 has 5 fields, the header has 8 (delimiter ','; set "
        "dataset.delimiter if it differs)"
    )
    good = write_csv(tmp_path / "good.csv", penguins(n=30))
    other = write_csv(tmp_path / "other.csv", [r[:2] for r in penguins(n=5)], header=["species", "isle"])
    with pytest.raises(
        DataError,
        match=r"^dataset.test_path: column 'island' is not in .*other.csv; columns: "
        r"species, isle$",
    ):
        load(good, target="species", test_path=str(other))
    rows = penguins(n=5)
    rows[2][0] = "Emperor"
    unseen = write_csv(tmp_path / "unseen.csv", rows)
    with pytest.raises(
        DataError,
        match=r"^dataset.test_path: .*unseen.csv line 4, column 'species': class 'Emperor' "
        r"does not occur in 'species' of the training file; classes: Adelie, Chinstrap, Gentoo$",
    ):
        load(good, target="species", test_path=str(unseen))


def test_single_class_and_bad_feature_lists(tmp_path):
    rows = [["Adelie", *r[1:]] for r in penguins(n=20)]
    msg, _ = _bad(tmp_path, rows)
    assert msg == (
        "dataset.target: column 'species' has a single value 'Adelie'; a classifier needs at least two classes"
    )
    msg, path = _bad(tmp_path, penguins(n=20), features=["island", "beak"])
    assert msg.startswith(f"dataset.features: column 'beak' is not in {path}; columns: species, island")
    msg, _ = _bad(tmp_path, penguins(n=20), categorical=["colour"])
    assert msg.startswith("dataset.categorical: 'colour' is not a feature column; features: island, bill_length_mm")


def test_config_errors_are_caught_before_loading():
    with pytest.raises(ConfigError, match="dataset.missing: unknown value 'drop'; valid choices: mean, median"):
        CsvConfig(path="x.csv", target="y", missing="drop")
    with pytest.raises(ConfigError, match="dataset.delimiter: must be one character"):
        CsvConfig(path="x.csv", target="y", delimiter=";;")
    assert (
        CsvConfig(path="x.csv", target="y", delimiter="tab").delimiter
        == CsvConfig(path="x.csv", target="y", delimiter="\\t").delimiter
        == "\t"
    )


def test_bad_column_from_the_command_is_one_line(tmp_path):
    path = write_csv(tmp_path / "p.csv", penguins(n=20))
    r = mlptrain("dataset=csv", f"dataset.path={path}", "dataset.target=mass", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"mlptrain: error: dataset.target: column 'mass' is not in {path}; columns: species, island, bill_length_mm, "
        "bill_depth_mm, flipper_length_mm, body_mass_g, sex, year"
    ]
    r = mlptrain("dataset=csv", "dataset.target=mass", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "mlptrain: error: dataset.path: is required but missing (set dataset.path=...)"


def test_body_mass_in_whole_grams_is_a_quantity(tmp_path):
    # Hundreds of distinct whole numbers are a quantity, not ~90 classes; dataset.task still decides.
    path = write_csv(tmp_path / "p.csv", penguins(n=60, missing=False))
    assert load(path, target="body_mass_g").task == "regression"
    data = load(path, target="body_mass_g", task="classification")
    assert data.task == "classification" and not math.isnan(float(data.class_names[0]))

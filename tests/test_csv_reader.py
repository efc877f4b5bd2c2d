"""Reading CSV files: every row accounted for (quotes, blank lines), number spellings, values too large
for float32, a wrong delimiter, and the compact columns behaving like lists of the cells."""

from __future__ import annotations

import logging
import random

import pytest
import torch

from conftest import mlptrain
from mlptrain.data import DataError
from mlptrain.data.csv_reader import COMMA_DECIMAL, DOT_DECIMAL, Column, RawTable, TextColumn
from mlptrain.data.encoding import encode_rows
from mlptrain.data.tabular import load_csv
from mlptrain.dataset_config import CsvConfig


def table(n: int = 60, seed: int = 0) -> list[list[str]]:
    """Rows of x (decimal), colour (text), kind (a class: a or b), y (decimal)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x = rng.gauss(0, 1)
        rows.append([f"{x:.3f}", rng.choice(["red", "blue"]), "a" if x > 0 else "b", f"{2 * x + 1:.3f}"])
    return rows


def write(path, rows, header=("x", "colour", "kind", "y"), delimiter=","):
    path.write_text("\n".join(delimiter.join(r) for r in [list(header), *rows]) + "\n", encoding="utf-8")
    return path


def load(path, **kw):
    return load_csv(CsvConfig(path=str(path), **{"target": "kind", **kw}))


def n_rows(bundle) -> int:
    return len(bundle.x_train) + len(bundle.x_val) + len(bundle.x_test)


# ----------------------------------------------------------------------------- 18.1: every row accounted for
def test_an_unterminated_quote_in_the_last_column_is_refused_naming_its_line(tmp_path):
    rows = table()
    rows[29][3] = '"' + rows[29][3]  # file line 31: the quote would swallow the rest of the file
    path = write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"^dataset.path: .*t.csv line 31: a quote opened in this row is never closed"):
        load(path)


def test_an_unterminated_quote_in_another_column_names_its_line_not_the_last(tmp_path):
    rows = table()
    rows[9][1] = '"red'  # file line 11
    path = write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"line 11: a quote opened in this row is never closed") as e:
        load(path)
    assert "\n" not in str(e.value)


def test_a_stray_quote_closed_further_down_is_refused_not_merged_into_one_row(tmp_path):
    rows = table()
    rows[9][1] = '"red'
    rows[19][1] = 'blue"'  # closes the quote opened on line 11: the rows between would be one cell
    path = write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"line 11: a quoted cell opened here runs to line 21 and swallows"):
        load(path)


def test_genuine_quoted_cells_with_line_breaks_and_delimiters_are_rows(tmp_path, caplog):
    rows = table()
    rows[4][1] = '"dark\nred"'  # a quoted cell over two lines
    rows[5][1] = '"blue, light"'
    path = write(tmp_path / "t.csv", rows)
    with caplog.at_level(logging.INFO, logger="mlptrain"):
        data = load(path)
    assert n_rows(data) == 60
    assert "1 row(s) hold a quoted cell with line breaks (starting on line 6)" in caplog.text
    assert "dark\nred" in data.preprocess["columns"][1]["categories"]


def test_blank_lines_are_counted_in_the_log_and_lines_keep_their_numbers(tmp_path, caplog):
    rows = table()
    text = write(tmp_path / "t.csv", rows).read_text().splitlines()
    text.insert(5, "")
    text.insert(9, "   ")
    cells = text[30].split(",")
    cells[0] = "oops"
    text[30] = ",".join(cells)  # file line 31, after two blank lines
    (tmp_path / "t.csv").write_text("\n".join(text) + "\n")
    with caplog.at_level(logging.INFO, logger="mlptrain"), pytest.raises(DataError, match=r"line 31, column 'x'"):
        load(tmp_path / "t.csv")
    assert "2 blank line(s) skipped (line 6, 10)" in caplog.text


def test_a_ragged_row_after_a_multiline_cell_names_the_line_it_starts_on(tmp_path):
    rows = table()
    rows[2][1] = '"two\nlines"'  # lines 4-5
    rows[5] = rows[5][:3]  # file line 8 (one line further down than its row number)
    path = write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"line 8 has 3 fields, the header has 4"):
        load(path)


def test_the_command_refuses_an_unterminated_quote_in_one_line_exit_2(tmp_path):
    rows = table()
    rows[29][3] = '"' + rows[29][3]
    path = write(tmp_path / "t.csv", rows)
    r = mlptrain("dataset=csv", f"dataset.path={path}", "dataset.target=kind", "trainer.progress=none", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "line 31: a quote opened in this row is never closed" in lines[0], r.stderr


# ----------------------------------------------------------------------------- 18.2: number spellings, overflow
def test_a_huge_number_in_a_decimal_target_is_refused_not_made_into_classes(tmp_path):
    rows = table()
    rows[6][3] = "1e400"  # file line 8
    path = write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"line 8, column 'y': '1e400' is too large for a 32-bit float"):
        load(path, target="y")


def test_a_value_that_overflows_float32_is_bad_input_not_a_divergence(tmp_path, train, keep_threads):
    """A run (in-process: the command prints a DataError as its one line, exit 2, as the quote test checks)."""
    rows = table()
    rows[10][0] = "3e39"  # finite in float64, inf in float32: file line 12
    path = write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError) as e:  # bad input, not a TrainingError (a divergence, which names the lr)
        train("dataset=csv", f"dataset.path={path}", "dataset.target=y", "trainer.progress=none", tiny=False)
    assert "line 12, column 'x': '3e39' is too large for a 32-bit float" in str(e.value)
    assert "lr" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "spell, delimiter, fmt",
    [
        (lambda v: f'"{v:,.2f}"', ",", DOT_DECIMAL),  # "1,234.50" (quoted in a comma-delimited file)
        (lambda v: f"{v:,.2f}".replace(",", " ").replace(".", ","), ";", COMMA_DECIMAL),  # 1 234,50
        (lambda v: f"{v:,.2f}".replace(",", "_").replace(".", ",").replace("_", "."), ";", COMMA_DECIMAL),  # 1.234,50
        (lambda v: f"{v:.2f}".replace(".", ","), ";", COMMA_DECIMAL),  # 1234,50
    ],
)
def test_thousands_separators_and_decimal_commas_are_numbers(tmp_path, spell, delimiter, fmt):
    rng = random.Random(1)
    values = [rng.uniform(-5000, 5000) for _ in range(60)]
    rows = [[spell(v), "a" if v > 0 else "b"] for v in values]
    path = write(tmp_path / "t.csv", rows, header=("price", "kind"), delimiter=delimiter)
    data = load(path, delimiter=delimiter)
    spec = data.preprocess["columns"][0]
    assert spec["kind"] == "numeric" and spec["number_format"] == fmt
    x = torch.cat([data.x_train, data.x_val, data.x_test])[:, 0]
    assert sorted(x.tolist()) == pytest.approx(sorted(round(v, 2) for v in values), abs=1e-3)
    # new rows (predict) are read under the training file's format
    row = spell(1234.5).strip('"')
    assert encode_rows(data.preprocess, [{"price": row}])[0, 0].item() == pytest.approx(1234.5)


def test_a_decimal_regression_target_with_separators_stays_regression(tmp_path):
    rows = [[f"{i}", f'"{1000 + 37.5 * i:,.1f}"'] for i in range(60)]
    data = load(write(tmp_path / "t.csv", rows, header=("x", "y")), target="y")
    assert data.task == "regression"
    assert sorted(torch.cat([data.y_train, data.y_val, data.y_test]).tolist())[-1] == pytest.approx(1000 + 37.5 * 59)


def test_the_log_names_the_cells_that_made_a_numeric_looking_column_text(tmp_path, caplog):
    rows = table()
    for i in range(0, 60, 2):
        rows[i][0] = ["n/a-ish", "low", "high"][i % 3]
    path = write(tmp_path / "t.csv", rows)
    with caplog.at_level(logging.INFO, logger="mlptrain"):
        data = load(path)
    assert data.preprocess["columns"][0]["kind"] == "categorical"
    assert "column 'x' has 30 numbers but is read as text because of 3 other value(s): 'n/a-ish' (line 2)" in (
        caplog.text
    )


def test_codes_keep_their_spelling_in_a_categorical_column(tmp_path):
    rows = [[z, "a" if i % 2 else "b"] for i, z in enumerate(["02134", "2134", "01", "1"] * 15)]
    data = load(write(tmp_path / "t.csv", rows, header=("zip", "kind")), categorical=["zip"])
    assert data.preprocess["columns"][0]["categories"] == ["01", "02134", "1", "2134"]


# ----------------------------------------------------------------------------- 14.7: a wrong delimiter
@pytest.mark.parametrize("delimiter, name", [(";", ";"), ("\t", "tab"), ("|", "|")])
def test_a_wrong_delimiter_names_the_one_that_works(tmp_path, delimiter, name):
    path = write(tmp_path / "t.csv", table(), delimiter=delimiter)
    with pytest.raises(DataError) as e:
        load(path)
    msg = str(e.value)
    assert "reads as one column with the delimiter ','" in msg and f"set dataset.delimiter={name!r}" in msg, msg
    assert "is not in" not in msg


def test_a_wrong_delimiter_in_a_run_is_one_line(tmp_path, train, keep_threads):
    """In-process: the command prints a DataError as its one line, exit 2, as the quote test checks."""
    path = write(tmp_path / "t.csv", table(), delimiter=";")
    with pytest.raises(DataError) as e:
        train("dataset=csv", f"dataset.path={path}", "dataset.target=kind", "trainer.progress=none", tiny=False)
    assert "set dataset.delimiter=';'" in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- the compact columns
def test_columns_read_like_lists_of_the_stripped_cells(tmp_path):
    rows = [[f"{i}", f" {i / 4} ", ["x", "1", " y "][i % 3], "NA" if i % 5 == 0 else f"{i}.0"] for i in range(50)]
    raw = RawTable(str(write(tmp_path / "t.csv", rows, header=("i", "q", "mixed", "gappy"))), "k", ",")
    cols = raw.columns
    assert isinstance(cols["i"], Column) and list(cols["i"]) == [str(i) for i in range(50)]
    assert list(cols["q"]) == [repr(i / 4) for i in range(50)]
    assert isinstance(cols["mixed"], TextColumn) and list(cols["mixed"]) == [["x", "1", "y"][i % 3] for i in range(50)]
    assert [cols["gappy"][i] for i in (0, 1, 5)] == ["NA", "1.0", "NA"]
    assert cols["q"][1:3] == ["0.25", "0.5"]
    assert list(raw.lines) == list(range(2, 52))

"""New rows for a checkpoint: CSV files, records and arrays, each row checked on its own.

Every input row is accounted for: it becomes a model input, or it is refused with its reason (a
cell that is not a number, not finite or beyond float32, a pixel outside 0-255, an empty row, a
wrong number of fields).  A refused row is never turned into a NaN prediction: ``mlptrain-predict``
writes it with empty prediction cells and the reason in its ``error`` column, so the output has one
row per input row.  What is wrong with the input as a whole (a missing column, the wrong number of
columns, an unreadable file) is one :class:`DataError`.

Tables a model was trained on (``dataset=csv``) are encoded with the checkpoint's own encoders
(:mod:`mlptrain.data.encoding`); synthetic sets and images read one numeric column per input
(per pixel, raw 0-255 values, for image models).  Image files are :mod:`mlptrain.image_files`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mlptrain.data.encoding import encode_rows
from mlptrain.errors import DataError

F32_MAX = float(torch.finfo(torch.float32).max)
TARGET_NAMES = ("target", "y")  # a header column by these names is the target of a non-table set


@dataclass
class Rows:
    """Input rows in a checkpoint's input format: the accepted ones as a tensor, the others with a reason."""

    n: int  # input rows, accepted and refused
    x: torch.Tensor  # the accepted rows' inputs, in input order
    accepted: list[int]  # which input rows they are
    refused: dict[int, str] = field(default_factory=dict)  # input row -> why (line included)
    y: torch.Tensor | None = None  # targets of the accepted rows (eval)
    carried: dict[str, list[str]] = field(default_factory=dict)  # columns carried to the output, per input row
    dropped: int = 0  # rows left out because their target is missing (eval, as training does)

    def first_refusal(self) -> DataError:
        i = min(self.refused)
        more = f" ({len(self.refused) - 1} more row(s) refused)" if len(self.refused) > 1 else ""
        return DataError(self.refused[i] + more)


def is_table(meta: dict) -> bool:
    """A checkpoint trained on a user's table (its encoders are in ``preprocess``)."""
    return (meta.get("preprocess") or {}).get("kind") == "csv"


def is_image(meta: dict) -> bool:
    return len(meta.get("input_shape") or []) == 3


def input_description(meta: dict) -> str:
    """What the model takes, for error messages."""
    d = meta["in_features"]
    if is_image(meta):
        c, h, w = meta["input_shape"]
        return f"{d} (one per pixel: {c}x{h}x{w} raw 0-255 values, channel by channel), or PNG/JPEG image files"
    return str(d)


def feature_names(meta: dict) -> list[str]:
    """The raw input columns in model order: a table's feature columns, ``x0``... for synthetic sets,
    ``px_<row>_<col>`` per pixel for grey images (``R_/G_/B_<row>_<col>`` for colour ones)."""
    if is_table(meta):
        return list(meta["preprocess"]["features"])
    if is_image(meta):
        c, h, w = meta["input_shape"]
        prefixes = ["px"] if c == 1 else (["R", "G", "B"] if c == 3 else [f"ch{k}" for k in range(c)])
        return [f"{p}_{r}_{q}" for p in prefixes for r in range(h) for q in range(w)]
    return [f"x{i}" for i in range(meta["in_features"])]


# ----------------------------------------------------------------------------- reading files
def read_text(path: str | Path) -> str:
    """A whole text file, or standard input for ``-``.  A named pipe or device is refused without
    opening it (opening a pipe with no writer blocks forever): standard input reads pipes."""
    if str(path) == "-":
        return sys.stdin.read()
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path} is a folder; give a CSV file (or a folder of PNG/JPEG images to an image model)")
    if not stat.S_ISREG(st.st_mode):
        kind = "a named pipe" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
        raise DataError(f"{path} is {kind}; to read from a pipe, give '-' and send the rows to standard input")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


def csv_records(text: str, delimiter: str) -> list[list[str]]:
    """Every record of a CSV text; blank lines in the body are records too (empty rows), those at
    the very end are not (a file's trailing newlines)."""
    try:
        rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff")), delimiter=delimiter))
    except csv.Error as e:
        raise DataError(f"malformed CSV: {e}") from None
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    return rows


def _is_empty(row: Sequence[str]) -> bool:
    return not any(str(c).strip() for c in row)


def number(text: str) -> tuple[float | None, str | None]:
    """A cell as a float32-representable number, or why it is not one."""
    if not str(text).strip():
        return None, "empty cell"
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None, f"{text!r} is not a number"
    if not math.isfinite(x):
        return None, f"{text!r} is not a finite number"
    if abs(x) > F32_MAX:
        return None, f"{text!r} is beyond the float32 range (about 3.4e38)"
    return x, None


# ----------------------------------------------------------------------------- tables a model was trained on
class TableEncoder:
    """Checks and encodes raw rows of the kind of table a checkpoint was trained on.

    ``na_values`` adds missing-value tokens to the training table's (``dataset.na_values=[...]`` given
    to eval/predict): such cells are imputed as in training."""

    def __init__(self, preprocess: dict, na_values: Sequence[str] = ()):
        self.pre = {**preprocess, "na_values": list(preprocess["na_values"]) + [str(v) for v in na_values]}
        self.features = list(preprocess["features"])
        self.kinds = {c["name"]: c["kind"] for c in preprocess["columns"]}
        self.na = {v.strip().lower() for v in self.pre["na_values"]}
        self.na_numbers = {x for x in (number(v)[0] for v in self.na) if x is not None}
        self.missing = preprocess["missing"]

    def is_missing(self, value: str) -> bool:
        if value.lower() in self.na:
            return True
        return bool(self.na_numbers) and number(value)[0] in self.na_numbers

    def problem(self, record: Mapping[str, str]) -> str | None:
        """Why this row (name -> stripped cell) cannot be encoded, or None."""
        if all(record.get(f, "") == "" for f in self.features):
            return "empty row"
        for f in self.features:
            v = record[f]
            if self.is_missing(v):
                if self.missing == "error":
                    return f"column {f!r}: missing value (the model was trained with dataset.missing=error)"
                continue
            if self.kinds[f] == "numeric":
                _, why = number(v)
                if why:
                    hint = (
                        f"; to impute it as missing, pass dataset.na_values=[{v}]"
                        if self.missing != "error" and "not a number" in why
                        else ""
                    )
                    return f"column {f!r}: {why}{hint}"
        return None

    def encode(self, records: Sequence[Mapping[str, str]]) -> torch.Tensor:
        return encode_rows(self.pre, records)


def table_rows(header: list[str], body: list[list[str]], enc: TableEncoder, line_of, where: str) -> tuple:
    """Records of a table's rows, and each row's problem (None: fine)."""
    absent = [f for f in enc.features if f not in header]
    if absent:
        raise DataError(f"{where}: column {absent[0]!r} is missing; expected columns: {', '.join(enc.features)}")
    records, problems = [], []
    for i, row in enumerate(body):
        cells = [c.strip() for c in row]
        if _is_empty(cells):
            records.append({}), problems.append(f"line {line_of(i)}: empty row")
            continue
        if len(cells) != len(header):
            records.append({}), problems.append(f"line {line_of(i)}: {len(cells)} fields, the header has {len(header)}")
            continue
        record = dict(zip(header, cells))
        why = enc.problem(record)
        records.append(record), problems.append(f"line {line_of(i)}: {why}" if why else None)
    return records, problems


# ----------------------------------------------------------------------------- numeric columns (synthetic, pixels)
def numeric_row_problem(values: Sequence, meta: dict, names: Sequence[str] = ()) -> tuple[list | None, str | None]:
    """One row of raw numeric inputs (one per pixel for images): the floats, or why not."""
    out = []
    image = is_image(meta)
    for j, v in enumerate(values):
        x, why = _float(v) if isinstance(v, (int, float)) else number(str(v))
        column = f"column {names[j]!r}" if names else f"column {j + 1}"
        if why:
            return None, f"{column}: {why}"
        if image and not 0 <= x <= 255:
            return None, f"{column}: pixel value {x:g} is outside 0-255 (raw pixel values, not normalised)"
        out.append(x)
    return out, None


def _float(v) -> tuple[float | None, str | None]:
    x = float(v)
    if not math.isfinite(x):
        return None, f"{x!r} is not a finite number"
    if abs(x) > F32_MAX:
        return None, f"{x!r} is beyond the float32 range (about 3.4e38)"
    return x, None


def _header(first: list[str]) -> list[str] | None:
    return None if all(number(c)[0] is not None or not c.strip() for c in first) else [c.strip() for c in first]


# ----------------------------------------------------------------------------- a CSV file
def read_csv(
    path: str | Path,
    meta: dict,
    with_target: bool,
    delimiter: str = ",",
    carry: Sequence[str] = (),
    na_values: Sequence[str] = (),
) -> Rows:
    """The rows of a CSV file as model inputs (and targets, ``with_target``), each checked on its own.
    ``carry``: columns to carry through to the output (``--id``/``--keep``)."""
    where = str(path)
    rows = csv_records(read_text(path), delimiter)
    if not rows:
        raise DataError(f"{where} has no rows")
    if is_table(meta):
        return _table_csv(rows, meta, with_target, carry, na_values, where)
    header = _header(rows[0])
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{where} has a header but no rows")
    first = 2 if header else 1
    d = meta["in_features"]
    width = len(header) if header else max(len(r) for r in body)
    names = header or []
    missing = [c for c in carry if c not in names]
    if missing:
        raise DataError(
            f"{where}: no column {missing[0]!r} to carry"
            + (f"; columns: {', '.join(names)}" if names else " (the file has no header row naming its columns)")
        )
    target_col = None
    if header and set(TARGET_NAMES) & set(header):
        target_col = header.index(next(t for t in TARGET_NAMES if t in header))
    elif with_target and not header and width == d + 1:
        target_col = width - 1  # no header naming it: the one extra column, last, is the target
    if with_target and target_col is None:
        raise DataError(f"{where}: no target column (name it 'target', or add it last after {d} feature columns)")
    # Carried columns are not inputs (an id), unless the model needs them to be (--keep x0).
    for skip in ({target_col, *(names.index(c) for c in carry)}, {target_col}):
        feature_cols = [i for i in range(width) if i not in skip]
        if len(feature_cols) == d:
            break
    if len(feature_cols) != d:
        raise DataError(
            f"{where} has {len(feature_cols)} feature column(s); the model expects {input_description(meta)}"
        )
    feature_names = [names[j] for j in feature_cols] if header else []
    xs, accepted, refused, ys, dropped = [], [], {}, [], 0
    carried = {c: [] for c in carry}
    for i, row in enumerate(body):
        line = i + first
        for c in carry:
            j = names.index(c)
            carried[c].append(row[j].strip() if j < len(row) else "")
        if _is_empty(row):
            refused[i] = f"{where} line {line}: empty row"
            continue
        if len(row) != width:
            refused[i] = f"{where} line {line}: {len(row)} fields, expected {width}"
            continue
        if with_target and not row[target_col].strip():
            dropped += 1  # no target: left out, as training leaves such rows out
            refused[i] = f"{where} line {line}: no target"
            continue
        values, why = numeric_row_problem([row[j].strip() for j in feature_cols], meta, feature_names)
        if why:
            refused[i] = f"{where} line {line}: {why}"
            continue
        if with_target:
            ys.append(target_value(row[target_col], meta, f"{where} line {line}"))
        xs.append(values)
        accepted.append(i)
    return _rows(len(body), xs, accepted, refused, ys if with_target else None, meta, carried, dropped, d)


def _table_csv(rows, meta, with_target, carry, na_values, where) -> Rows:
    pre = meta["preprocess"]
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if not body:
        raise DataError(f"{where} has a header but no rows")
    missing = [c for c in carry if c not in header]
    if missing:
        raise DataError(f"{where}: no column {missing[0]!r} to carry; columns: {', '.join(header)}")
    target = pre["target"]
    if with_target and target not in header:
        raise DataError(f"{where}: no target column {target!r}")
    enc = TableEncoder(pre, na_values)
    records, problems = table_rows(header, body, enc, lambda i: i + 2, where)
    carried = {c: [dict(zip(header, (x.strip() for x in r))).get(c, "") for r in body] for c in carry}
    ok, refused, ys, dropped = [], {}, [], 0
    for i, (record, why) in enumerate(zip(records, problems)):
        if with_target and why is None and enc.is_missing(record.get(target, "")):
            if enc.missing == "error":  # as training: dataset.missing=error refuses a missing target
                raise DataError(f"{where} line {i + 2}, column {target!r}: missing value (dataset.missing=error)")
            dropped += 1
            why = f"line {i + 2}: no target"
        if why is not None:
            refused[i] = f"{where} {why}"
            continue
        if with_target:
            ys.append(target_value(record[target], meta, f"{where} line {i + 2}"))
        ok.append(i)
    x = enc.encode([records[i] for i in ok]) if ok else torch.zeros(0, meta["in_features"])
    return Rows(len(body), x, ok, refused, _targets(ys, meta) if with_target else None, carried, dropped)


def _rows(n, xs, accepted, refused, ys, meta, carried, dropped, d) -> Rows:
    x = torch.tensor(xs, dtype=torch.float32) if xs else torch.zeros(0, d)
    return Rows(n, x, accepted, refused, None if ys is None else _targets(ys, meta), carried, dropped)


def _targets(ys: list, meta: dict) -> torch.Tensor:
    return torch.tensor(ys, dtype=torch.long if meta["task"] == "classification" else torch.float32)


def target_value(text: str, meta: dict, where: str):
    """A target cell as a class index or a number (one error naming the line)."""
    text = text.strip()
    if meta["task"] == "classification":
        names = meta["class_names"]
        if text in names:
            return names.index(text)
        x, _ = number(text)
        if x is not None and x.is_integer() and str(int(x)) in names:  # "1.0" for "1"
            return names.index(str(int(x)))
        raise DataError(f"{where}: unknown class {text!r}; classes: {', '.join(names)}")
    x, why = number(text)
    if why:
        raise DataError(f"{where}: target {why}")
    return x


# ----------------------------------------------------------------------------- Python objects (mlptrain.load)
def from_records(records: Sequence[Mapping], meta: dict) -> Rows:
    """Rows given as mappings (a list of dicts, a DataFrame's records): by column name."""
    if is_table(meta):
        enc = TableEncoder(meta["preprocess"])
        clean = [{str(k): _cell(v) for k, v in r.items()} for r in records]
        header = list(dict.fromkeys(k for r in clean for k in r))
        body = [[r.get(h, "") for h in header] for r in clean]
        recs, problems = table_rows(header, body, enc, lambda i: i + 1, "input")
        refused = {i: f"row {why.removeprefix('line ')}" for i, why in enumerate(problems) if why}
        ok = [i for i in range(len(recs)) if i not in refused]
        x = enc.encode([recs[i] for i in ok]) if ok else torch.zeros(0, meta["in_features"])
        return Rows(len(recs), x, ok, refused)
    arrays = []
    for n, r in enumerate(records):
        keys = [k for k in r if str(k) not in TARGET_NAMES]
        arrays.append([r[k] for k in keys])
        if len(keys) != meta["in_features"]:
            raise DataError(f"row {n + 1}: {len(keys)} values; the model expects {input_description(meta)}")
    return from_array(arrays, meta)


def _cell(v) -> str:
    """A Python value as the text a CSV would hold: None and NaN are missing (pandas' NA)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v).strip()


def from_array(array, meta: dict) -> Rows:
    """A 2-D array-like of raw inputs in training column order (image models: also (N, C, H, W) or (N, H, W)).
    A table model takes the raw values of its feature columns, in ``features`` order."""
    if is_table(meta):
        feats = meta["preprocess"]["features"]
        rows = [list(r) for r in array]
        for n, r in enumerate(rows):
            if len(r) != len(feats):
                raise DataError(f"row {n + 1}: {len(r)} values, expected {len(feats)} ({', '.join(feats)})")
        return from_records([dict(zip(feats, r)) for r in rows], meta)
    d = meta["in_features"]
    t = torch.as_tensor(array) if not isinstance(array, list) else None
    if t is not None and t.dim() > 2:
        t = t.reshape(len(t), -1)
    rows = t.tolist() if t is not None else [list(r) if not isinstance(r, (str, bytes)) else [r] for r in array]
    xs, accepted, refused = [], [], {}
    for n, r in enumerate(rows):
        if not isinstance(r, list):
            raise DataError(f"inputs must be 2-D (one row per example); row {n + 1} is a single value")
        if len(r) != d:
            raise DataError(f"row {n + 1}: {len(r)} values; the model expects {input_description(meta)}")
        values, why = numeric_row_problem(r, meta)
        if why:
            refused[n] = f"row {n + 1}, {why}"
            continue
        xs.append(values)
        accepted.append(n)
    return _rows(len(rows), xs, accepted, refused, None, meta, {}, 0, d)

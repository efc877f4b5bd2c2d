"""Cells of a table and its encoding as model inputs, shared by the CSV loader and ``mlptrain-predict``.

:class:`Cells` parses numbers and recognises missing values under the table's policy; the
``preprocess`` description fitted on the training split (columns, categories, imputed values) is
plain data kept in checkpoints, and :func:`encode_rows` turns new raw rows into inputs with it, as
the loader encoded the training table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch

from mlptrain.errors import DataError


# ----------------------------------------------------------------------------- cells
def parse_number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def is_int(value: str) -> bool:
    v = value[1:] if value[:1] in "+-" else value
    return v.isdigit()


class Cells:
    """Missing-value tokens and the policy for them, shared by fitting and encoding.

    Values reaching here are stripped strings; this runs once per cell, so it is kept lean."""

    def __init__(self, na_values: Iterable[str], missing: str):
        self.na = {v.strip().lower() for v in na_values}
        self.na_numbers = {x for x in map(parse_number, self.na) if x is not None}  # e.g. -999 also as -999.0
        self.missing = missing

    def is_missing(self, value: str) -> bool:
        return value.lower() in self.na

    def parse(self, values: Sequence[str]) -> tuple[list[float | None], list[int]]:
        """A column's numbers (None for a missing cell) and the positions of cells that are neither."""
        na, na_numbers = self.na, self.na_numbers
        if not na_numbers:
            try:  # the common case, a complete numeric column, at C speed
                out = list(map(float, values))
                if all(map(math.isfinite, out)):
                    return out, []
            except ValueError:
                pass
        out = []
        bad = []
        for i, v in enumerate(values):
            try:
                x = float(v)
            except ValueError:
                x = None
            if x is not None and math.isfinite(x) and x not in na_numbers:
                out.append(x)
                continue
            out.append(None)
            if v.lower() not in na and x not in na_numbers:
                bad.append(i)
        return out, bad

    def numbers(self, values: Sequence[str], where) -> list[float | None]:
        """Parse a numeric column; any cell that is neither a number nor missing is an error."""
        out, bad = self.parse(values)
        if bad:
            v = values[bad[0]]
            raise DataError(
                f"{where(bad[0])}: {v!r} is not a number, but the column is numeric; fix the cell, "
                f"add {v!r} to dataset.na_values, or list the column in dataset.categorical"
            )
        return out

    def reject_missing(self, where: str) -> DataError:
        return DataError(
            f"{where}: missing value (dataset.missing=error); fill it in, "
            f"or set dataset.missing=mean, median or most_frequent to impute"
        )


# ----------------------------------------------------------------------------- encoding
def encoded_names(preprocess: dict) -> list[str]:
    """The model's input columns: a numeric feature as itself, a categorical one as ``name=category``."""
    names = []
    for col in preprocess["columns"]:
        names += [col["name"]] if col["kind"] == "numeric" else [f"{col['name']}={c}" for c in col["categories"]]
    return names


def encode_columns(
    preprocess: dict,
    columns: Mapping[str, Sequence[str]],
    where,
    parsed_numbers: Mapping[str, list[float | None]] | None = None,
) -> torch.Tensor:
    """Encode raw (stripped string) columns, name -> values, into the model's float inputs.
    ``parsed_numbers``: numeric columns already parsed (and checked) by fitting."""
    cells = Cells(preprocess["na_values"], preprocess["missing"])
    parts = []
    for col in preprocess["columns"]:
        name, values = col["name"], columns[col["name"]]
        numeric = col["kind"] == "numeric"
        parsed = None
        if numeric:
            # the lambda is called inside cells.numbers, in this iteration
            parsed = (parsed_numbers or {}).get(name) or cells.numbers(values, lambda i: where(i, name))  # noqa: B023
        if cells.missing == "error":  # a numeric column's gaps include NA tokens spelled as numbers (-999.0)
            gaps = (
                [i for i, x in enumerate(parsed) if x is None]
                if numeric
                else [i for i, v in enumerate(values) if cells.is_missing(v)]
            )
            if gaps:
                raise cells.reject_missing(where(gaps[0], name))
        if numeric:
            fill = col["fill"]
            parts.append(torch.tensor([fill if x is None else x for x in parsed], dtype=torch.float64)[:, None])
        else:
            index = {c: k for k, c in enumerate(col["categories"])}
            fill, unseen = index[col["fill"]], len(index)
            idx = torch.tensor(
                [fill if cells.is_missing(v) else index.get(v, unseen) for v in values], dtype=torch.long
            )
            onehot = torch.zeros(len(values), len(index) + 1, dtype=torch.float64)
            onehot[torch.arange(len(values)), idx] = 1.0
            parts.append(onehot[:, :-1])  # an unseen category's slot is dropped: all zeros
    return torch.cat(parts, 1).float()


def encode_rows(preprocess: dict, rows: Sequence[Mapping[str, object] | Sequence[object]]) -> torch.Tensor:
    """Encode new raw rows exactly as the training data was (for predicting from a checkpoint).

    ``preprocess`` is ``DataBundle.preprocess`` (saved in checkpoints as ``ckpt["data"]["preprocess"]``).
    A row is a mapping from column name to raw value (e.g. a ``csv.DictReader`` row; extra columns
    such as the target are ignored) or a sequence of raw values in ``preprocess["features"]`` order.
    Missing values (None or one of the ``na_values``) are imputed as in training; unseen categories
    encode as all zeros.  Returns a float tensor of shape ``(len(rows), len(encoded_names(preprocess)))``.
    """
    features = preprocess["features"]
    columns: dict[str, list] = {f: [] for f in features}
    for n, row in enumerate(rows):
        if isinstance(row, Mapping):
            absent = [f for f in features if f not in row]
            if absent:
                raise DataError(
                    f"row {n + 1}: column {absent[0]!r} is missing; expected columns: {', '.join(features)}"
                )
            values = [row[f] for f in features]
        else:
            values = list(row)
            if len(values) != len(features):
                raise DataError(f"row {n + 1}: {len(values)} values, expected {len(features)} ({', '.join(features)})")
        for f, v in zip(features, values):
            columns[f].append("" if v is None else str(v).strip())
    if not rows:
        return torch.zeros(0, len(encoded_names(preprocess)))
    return encode_columns(preprocess, columns, lambda i, col: f"row {i + 1}, column {col!r}")

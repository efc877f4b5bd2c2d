"""Cells of a table and its encoding as model inputs, shared by the CSV loader and ``mlptrain-predict``.

:class:`Cells` parses numbers and recognises missing values under the table's policy; the
``preprocess`` description fitted on the training split (columns, categories, imputed values) is
plain data kept in checkpoints, and :func:`encode_rows` turns new raw rows into inputs with it, as
the loader encoded the training table.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence

import torch

from mlptrain.data.csv_reader import Column, TextColumn, parse_spelled, release_freed_memory
from mlptrain.errors import DataError


# ----------------------------------------------------------------------------- cells
def parse_number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def is_int(value: str) -> bool:
    v = value[1:] if value[:1] in "+-" else value
    return v.isdigit()


class Numbers(Sequence):
    """A parsed numeric column, read like ``list[float | None]`` (None: missing), held as one float64
    array (NaN: missing) so a large table's column costs 8 bytes a cell."""

    def __init__(self, values: array):
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        x = self.values[i]
        return None if x != x else x

    def tensor(self) -> torch.Tensor:
        """The values as a float64 tensor sharing the array's memory (NaN: missing)."""
        return torch.frombuffer(self.values, dtype=torch.float64) if len(self.values) else torch.zeros(0).double()

    def count(self, value) -> int:
        if value is None:
            return int(self.tensor().isnan().sum())
        return super().count(value)


class Positions(Sequence):
    """Row positions held as one int64 tensor (a text column's every cell may be one)."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.rows[i].tolist()
        return int(self.rows[i])


def present_numbers(parsed: Sequence[float | None], rows: Sequence[int]) -> Sequence[float]:
    """The numbers (not the missing cells) of ``parsed`` at ``rows``, in order."""
    if isinstance(parsed, Numbers):  # a compact array, not a list of Python floats (24 bytes each, not 8)
        if isinstance(rows, array) and rows.typecode == "q" and len(rows):
            index = torch.frombuffer(rows, dtype=torch.int64)
        else:
            index = torch.as_tensor(rows, dtype=torch.long)
        t = parsed.tensor()[index]
        t = t[~t.isnan()]
        out = array("d", [0.0]) * len(t)
        if len(t):
            torch.frombuffer(out, dtype=torch.float64).copy_(t)
        return out
    return [parsed[i] for i in rows if parsed[i] is not None]


class Cells:
    """Missing-value tokens and the policy for them, shared by fitting and encoding.

    Values reaching here are stripped strings; this runs once per cell, so it is kept lean."""

    def __init__(self, na_values: Iterable[str], missing: str):
        self.na = {v.strip().lower() for v in na_values}
        self.na_numbers = {x for x in map(parse_number, self.na) if x is not None}  # e.g. -999 also as -999.0
        self.missing = missing

    def is_missing(self, value: str) -> bool:
        return value.lower() in self.na

    def parse(
        self, values: Sequence[str], number_format: str | None = None
    ) -> tuple[Sequence[float | None], Sequence[int]]:
        """A column's numbers (None for a missing cell) and the positions of cells that are neither.
        ``number_format``: how the training file wrote numbers with separators (``csv_reader.DOT_DECIMAL``,
        ``COMMA_DECIMAL``), for new rows; a :class:`Column` was read under its own format."""
        if isinstance(values, (Column, TextColumn)):
            return self._parse_column(values)
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
                x = parse_spelled(v, number_format)
            if x is not None and math.isfinite(x) and x not in na_numbers:
                out.append(x)
                continue
            out.append(None)
            if v.lower() not in na and x not in na_numbers:
                bad.append(i)
        return out, bad

    def _parse_column(self, column: Column | TextColumn) -> tuple[Numbers, Sequence[int]]:
        values = column.values()
        if self.na_numbers:  # numbers that mean "missing" (-999)
            t = torch.frombuffer(values, dtype=torch.float64) if len(values) else torch.zeros(0).double()
            hit = torch.isin(t, torch.tensor(sorted(self.na_numbers), dtype=torch.float64))
            if hit.any():
                values = array("d", values) if isinstance(column, Column) else values  # not the column's own
                torch.frombuffer(values, dtype=torch.float64)[hit] = math.nan
        bad: Sequence[int] = []
        if column.codes is not None:
            na = self.na
            bad_codes = [k for k, t in enumerate(column.texts) if t.lower() not in na and not _finite(t)]
            if bad_codes:
                codes = torch.frombuffer(column.codes, dtype=torch.int32)
                bad = Positions(torch.isin(codes, torch.tensor(bad_codes, dtype=torch.int32)).nonzero()[:, 0])
        return Numbers(values), bad

    def numbers(self, values: Sequence[str], where, number_format: str | None = None) -> Sequence[float | None]:
        """Parse a numeric column; any cell that is neither a number nor missing is an error."""
        out, bad = self.parse(values, number_format)
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
    consume: bool = False,
) -> torch.Tensor:
    """Encode raw (stripped string) columns, name -> values, into the model's float inputs.
    ``parsed_numbers``: numeric columns already parsed (and checked) by fitting.  ``consume``: each
    column is removed from ``columns`` (and ``parsed_numbers``) once encoded, so its memory goes as the
    inputs grow, and the result is a transposed view of a feature-major matrix (index its rows to copy
    them out: ``torch.index_select``)."""
    cells = Cells(preprocess["na_values"], preprocess["missing"])
    n = len(columns[preprocess["columns"][0]["name"]]) if preprocess["columns"] else 0
    # Feature-major and filled one feature at a time: each column's values land in one contiguous row, so
    # the matrix's pages are touched as the columns are encoded (and, with ``consume``, freed), and a large
    # table never holds its cells and every input at once.
    out = torch.empty(len(encoded_names(preprocess)), n, dtype=torch.float32)  # each row is written below
    j = 0
    for col in preprocess["columns"]:
        name, values = col["name"], columns[col["name"]]
        numeric = col["kind"] == "numeric"
        parsed = None
        if numeric:
            parsed = (parsed_numbers or {}).get(name) or cells.numbers(
                values,
                lambda i: where(i, name),  # noqa: B023  (called inside cells.numbers, in this iteration)
                col.get("number_format"),
            )
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
            if isinstance(parsed, Numbers):
                t = parsed.tensor()
                out[j] = torch.where(t.isnan(), fill, t)
                del t
            else:
                out[j] = torch.tensor([fill if x is None else x for x in parsed], dtype=torch.float64)
            j += 1
        else:
            index = {c: k for k, c in enumerate(col["categories"])}
            idx = _category_indices(values, index, index[col["fill"]], cells)
            seen = idx < len(index)  # an unseen category encodes as all zeros
            out[j : j + len(index)] = 0.0
            out[j + idx[seen], seen.nonzero()[:, 0]] = 1.0
            j += len(index)
        if consume:
            del values, parsed
            columns.pop(name)  # type: ignore[attr-defined]
            (parsed_numbers or {}).pop(name, None)  # type: ignore[attr-defined]
            release_freed_memory()
    return out.T if consume else out.T.contiguous()


def _category_indices(values: Sequence[str], index: dict[str, int], fill: int, cells: Cells) -> torch.Tensor:
    """Each cell's category number: ``fill`` when missing, ``len(index)`` when unseen."""
    unseen = len(index)
    if isinstance(values, (Column, TextColumn)) and values.codes is not None:  # by distinct text, not by cell
        lut = torch.tensor(
            [fill if cells.is_missing(t) else index.get(t, unseen) for t in values.texts] or [0], dtype=torch.long
        )
        codes = torch.frombuffer(values.codes, dtype=torch.int32).long() if len(values) else torch.zeros(0).long()
        idx = lut[codes.clamp(min=0)]
        rebuilt = (codes < 0).nonzero()[:, 0].tolist()  # numbers whose spelling is rebuilt
        if rebuilt:
            idx[rebuilt] = torch.tensor(
                [fill if cells.is_missing(values[i]) else index.get(values[i], unseen) for i in rebuilt]
            )
        return idx
    return torch.tensor([fill if cells.is_missing(v) else index.get(v, unseen) for v in values], dtype=torch.long)


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

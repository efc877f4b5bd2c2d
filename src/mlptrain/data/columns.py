"""Columns of a table that are no features: a pandas index written with the table, a per-row text id.

``df.to_csv(path)`` writes the index as an unnamed first column holding the row number: used as a
feature it leaks the label when the rows were sorted by class.  A text column with a different value in
every row (a name, a uuid) would be one-hot encoded into one input per row that no new row can match.
Both are left out of the default features (``dataset.features`` unset) with one warning line each; a
column listed in ``dataset.features`` is used as asked.  A categorical column with very many values is
kept, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from mlptrain.data.encoding import Cells, is_int

log = logging.getLogger("mlptrain")

MIN_ROWS_FOR_ID = 20  # fewer rows: a column of distinct values may well be a real feature
MANY_CATEGORIES = 50  # warn above this many categories, when they are also more than a quarter of the rows


def is_row_number(name: str, values: Sequence[str]) -> bool:
    """An unnamed column (``""``, pandas' ``Unnamed: 0``) holding 0, 1, 2, ... or 1, 2, 3, ..."""
    if name and not name.startswith("Unnamed:"):
        return False
    if not values or not all(is_int(v) for v in values):
        return False
    first = int(values[0])
    return first in (0, 1) and all(int(v) == first + i for i, v in enumerate(values))


def is_text_id(values: Sequence[str], cells: Cells) -> bool:
    """A text column with a different (present) value in every row."""
    if getattr(values, "codes", ()) is None:  # a column read as numbers only (csv_reader.Column): no text
        return False
    if len(values) < MIN_ROWS_FOR_ID or len(set(values)) < len(values):
        return False
    parsed, bad = cells.parse(values)
    return len(bad) > len(values) // 2  # mostly not numbers: text, not a measurement


def junk_columns(header: Sequence[str], columns: Mapping[str, Sequence[str]], target: str, cells: Cells) -> list[str]:
    """The columns to leave out of the default features, each reported in one warning line."""
    junk = []
    for i, name in enumerate(header):
        if name == target:
            continue
        values = columns[name]
        if i == 0 and is_row_number(name, values):
            log.warning(
                "dataset.features: column %r is the row number (a pandas index written with the table); left out",
                name,
            )
            junk.append(name)
        elif is_text_id(values, cells):
            log.warning(
                "dataset.features: column %r has a different text value in every row (an id); left out "
                "(list it in dataset.features to use it)",
                name,
            )
            junk.append(name)
    return junk


def warn_many_categories(columns: Sequence[dict], n_train: int) -> None:
    for col in columns:
        k = len(col.get("categories") or ())
        if k > MANY_CATEGORIES and k > n_train / 4:
            log.warning(
                "dataset.features: categorical column %r has %d values in %d training rows (one input each); "
                "an id or free text? leave it out with dataset.features=[...]",
                col["name"],
                k,
                n_train,
            )

"""A user's own table: ``dataset=csv dataset.path=... dataset.target=<column>``.

Read with Python's standard ``csv`` module into compact columns (:mod:`mlptrain.data.csv_reader`).  Each
feature column is numeric or categorical; categorical columns are one-hot encoded over the
categories seen in the training split (an unseen category encodes as all zeros), missing
cells are imputed from the training split or rejected.  Everything needed to encode new raw
rows the same way is kept as plain data in ``DataBundle.preprocess`` (it goes into
checkpoints); :func:`encode_rows` applies it.  Numeric standardisation is not done here:
the training split's mean/std go to the model's ``Standardize`` layer, so a checkpoint
predicts from raw values.
"""

from __future__ import annotations

import logging
import os
import statistics
from array import array
from collections import Counter
from collections.abc import Iterable

import torch

from mlptrain.data.bundle import DataBundle, DataError
from mlptrain.data.columns import junk_columns, warn_many_categories
from mlptrain.data.csv_reader import Column, RawTable, release_freed_memory
from mlptrain.data.encoding import Cells, encode_columns, encoded_names, is_int, parse_number, present_numbers
from mlptrain.data.splits import fold_split, split_rows

log = logging.getLogger("mlptrain")


# ----------------------------------------------------------------------------- reading
class Table:
    """A CSV file as header + string columns (:class:`~mlptrain.data.csv_reader.Column`: compact sequences
    of stripped cells), with the file line number of every row."""

    def __init__(
        self, path: str, key: str, delimiter: str, text_columns: Iterable[str] = (), target: str | None = None
    ):
        self.path, self.key = path, key
        if not os.path.isfile(path):
            raise DataError(
                f"{key}: file not found: {path}"
                if not os.path.isdir(path)
                else f"{key}: {path} is a folder; give the path of a CSV file"
            )
        # Categorical columns keep every cell's spelling ("01" is not "1"); the target while it has few values.
        spellings = {c: "all" for c in text_columns}
        if target is not None:
            spellings.setdefault(target, "bounded")
        raw = RawTable(path, key, delimiter, spellings)
        self.header, self.lines, self.columns = raw.header, raw.lines, raw.columns
        self.rows = array("l", range(len(self.lines)))  # each row's number in the file (0: the first data row)

    def keep_rows(self, keep: list[int]) -> None:
        """Only these rows (in this order) from now on."""
        self.lines = array("l", (self.lines[i] for i in keep))
        self.rows = array("l", (self.rows[i] for i in keep))
        self.columns = {
            h: col.take(keep) if isinstance(col, Column) else [col[i] for i in keep] for h, col in self.columns.items()
        }

    def __len__(self) -> int:
        return len(self.lines)

    def column(self, name: str, what: str) -> list[str]:
        if name not in self.columns:
            raise DataError(f"{what}: column {name!r} is not in {self.path}; columns: {', '.join(self.header)}")
        return self.columns[name]

    def where(self, i: int, column: str) -> str:
        return f"{self.key}: {self.path} line {self.lines[i]}, column {column!r}"


# ----------------------------------------------------------------------------- fitting
def _fit_column(
    name: str, values: list[str], cells: Cells, categorical: set[str], table: Table, rows: list[int]
) -> tuple[dict, list[float | None] | None]:
    """How to encode one feature: its kind, and from the training rows its categories and the fill value
    for missing cells; with, for a numeric column, its parsed cells (so encoding does not parse them again).
    A column is numeric when most of its cells are numbers; its other cells are then errors, reported
    with their line."""
    parsed, bad = cells.parse(values)
    n_missing = parsed.count(None) - len(bad)
    if n_missing == len(values):
        raise DataError(
            f"dataset.features: column {name!r} of {table.path} has no values (all missing); "
            f"leave it out with dataset.features=[...]"
        )
    if name not in categorical and (len(values) - n_missing - len(bad)) > len(bad):
        if bad:
            cells.numbers(values, lambda i: table.where(i, name))  # raises for the first bad cell
        present = present_numbers(parsed, rows)
        if not present:
            raise DataError(f"dataset.features: column {name!r} has no values in the training split")
        average = {"median": statistics.median, "most_frequent": _most_frequent}.get(cells.missing, statistics.fmean)
        fill = average(present)
        return {"name": name, "kind": "numeric", "fill": float(fill)}, parsed
    present = [values[i] for i in rows if not cells.is_missing(values[i])]
    if not present:
        raise DataError(f"dataset.features: column {name!r} has no values in the training split")
    return (
        {"name": name, "kind": "categorical", "categories": sorted(set(present)), "fill": _most_frequent(present)},
        None,
    )


def _most_frequent(values):
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))  # ties: the smallest value, so the choice is deterministic


# dataset.task=auto: a target of whole numbers is a class label when it takes at most this many values
# (0/1 written as 0.0/1.0 included); with more it is a quantity (grams, counts, prices): regression.
MAX_AUTO_CLASSES = 20


def _whole(value: str) -> int | None:
    """The integer a cell spells (``3``, ``+3``, ``3.0``), else None."""
    if is_int(value):
        return int(value)
    x = parse_number(value)
    return int(x) if x is not None and x == int(x) else None


def infer_task(values: list[str], target: str) -> str:
    """dataset.task=auto: text -> classification; whole numbers -> classification with at most
    MAX_AUTO_CLASSES distinct values, else regression; other numbers -> regression."""
    whole = [_whole(v) for v in values]
    if all(w is not None for w in whole):
        n = len(set(whole))
        task = "classification" if n <= MAX_AUTO_CLASSES else "regression"
        why = f"{n} distinct whole numbers" + ("" if task == "classification" else f" (> {MAX_AUTO_CLASSES})")
    elif all(parse_number(v) is not None for v in values):
        task, why = "regression", "decimal numbers"
    else:
        task, why = "classification", "text values"
    log.info("dataset.target %r: %s, inferred from its %s (set dataset.task to change it)", target, task, why)
    return task


def _fit_target(values: list[str], task: str, target: str) -> tuple[str, list[str] | None]:
    """The task (from ``dataset.task`` or the target's values) and, for classification, the class names."""
    if task == "auto":
        task = infer_task(values, target)
    if task == "regression":
        return task, None
    whole = [_whole(v) for v in values]
    ints = all(w is not None for w in whole)
    classes = [str(c) for c in sorted(set(whole))] if ints else sorted(set(values))
    if len(classes) < 2:
        raise DataError(
            f"dataset.target: column {target!r} has a single value {classes[0]!r}; "
            f"a classifier needs at least two classes"
        )
    if len(classes) > 50 and ints:
        log.warning(
            "dataset.target %r: %d integer classes; for a quantity set dataset.task=regression", target, len(classes)
        )
    return task, classes


def _targets(values: list[str], task: str, classes: list[str] | None, table: Table, target: str) -> torch.Tensor:
    if task == "regression":
        out = []
        for i, v in enumerate(values):
            x = parse_number(v)
            if x is None:
                raise DataError(f"{table.where(i, target)}: {v!r} is not a number, but the regression target must be")
            out.append(x)
        return torch.tensor(out, dtype=torch.float32)
    index = {c: k for k, c in enumerate(classes)}
    ints = all(is_int(c) for c in classes)
    out = []
    for i, v in enumerate(values):
        w = _whole(v) if ints else None
        k = index.get(v if w is None else str(w))
        if k is None:
            raise DataError(
                f"{table.where(i, target)}: class {v!r} does not occur in {target!r} of the "
                f"training file; classes: {', '.join(classes)}"
            )
        out.append(k)
    return torch.tensor(out, dtype=torch.long)


# ----------------------------------------------------------------------------- the loader
def _input_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of each column in float64, one column at a time (no float64 copy of the whole table)."""
    if not len(x):
        return x.double().mean(0), x.double().std(0)
    mean, std = torch.empty(x.shape[1], dtype=torch.float64), torch.empty(x.shape[1], dtype=torch.float64)
    for j in range(x.shape[1]):
        col = x[:, j].double()
        mean[j], std[j] = col.mean(), col.std()
    return mean, std


def _row_weights(table: Table, column: str) -> torch.Tensor:
    """dataset.weight: one finite number >= 0 per row (a missing or bad cell is refused, with its line)."""
    out = []
    for i, v in enumerate(table.column(column, "dataset.weight")):
        x = parse_number(v)
        if x is None or x < 0:
            raise DataError(f"{table.where(i, column)}: {v!r} is not a weight; dataset.weight needs a number >= 0")
        out.append(x)
    return torch.tensor(out, dtype=torch.float32)


def _drop_missing_targets(table: Table, target: str, cells: Cells) -> None:
    values = table.column(target, "dataset.target")
    bad = [i for i, v in enumerate(values) if cells.is_missing(v)]
    if not bad:
        return
    if cells.missing == "error":
        raise cells.reject_missing(table.where(bad[0], target))
    dropped = set(bad)
    keep = [i for i in range(len(table)) if i not in dropped]
    if not keep:
        raise DataError(f"dataset.target: column {target!r} of {table.path} has no values")
    log.warning("%s: %d row(s) without a value for the target %r are left out", table.path, len(bad), target)
    table.keep_rows(keep)


def load_csv(cfg) -> DataBundle:
    cells = Cells(cfg.na_values, cfg.missing)
    spelled = [*cfg.categorical, *([cfg.id] if cfg.id is not None else [])]  # an id keeps its spelling ("007")
    main = Table(os.path.expanduser(cfg.path), "dataset.path", cfg.delimiter, spelled, cfg.target)
    target, weight = cfg.target, cfg.weight
    main.column(target, "dataset.target")
    if cfg.id is not None:
        main.column(cfg.id, "dataset.id")
        if cfg.id == target:
            raise DataError(f"dataset.id: the target {target!r} cannot also be the id column")
    if weight is not None:
        main.column(weight, "dataset.weight")
        if weight == target:
            raise DataError(f"dataset.weight: the target {target!r} cannot also be the weight column")
        if weight == cfg.id:
            raise DataError(f"dataset.weight: the id column {weight!r} cannot also be the weight column")
    if cfg.features:
        features = list(cfg.features)
        if cfg.id in features:
            raise DataError(f"dataset.features: the id column {cfg.id!r} cannot also be a feature")
        if weight in features:
            raise DataError(f"dataset.features: the weight column {weight!r} cannot also be a feature")
    else:  # every other column, but the id, the weights, a pandas index or a per-row text id (mlptrain.data.columns)
        header = [h for h in main.header if h not in (weight, cfg.id)]
        junk = junk_columns(header, main.columns, target, cells)
        features = [h for h in header if h != target and h not in junk]
    for f in features:
        main.column(f, "dataset.features")
    if target in features:
        raise DataError(f"dataset.features: the target {target!r} cannot also be a feature")
    if not features:
        raise DataError(f"dataset.features: {main.path} has no column besides the target {target!r}")
    unknown = [c for c in cfg.categorical if c not in features]
    if unknown:
        raise DataError(f"dataset.categorical: {unknown[0]!r} is not a feature column; features: {', '.join(features)}")
    _drop_missing_targets(main, target, cells)
    w_main = _row_weights(main, weight) if weight is not None else None

    test = None
    if cfg.test_path:
        test = Table(os.path.expanduser(cfg.test_path), "dataset.test_path", cfg.delimiter, cfg.categorical, cfg.target)
        for c in [target, *features]:
            test.column(c, "dataset.test_path")
        _drop_missing_targets(test, target, cells)

    task, classes = _fit_target(main.columns[target], cfg.task, target)
    y_main = _targets(main.columns[target], task, classes, main, target)
    # classification: stratified, so a small table's val and test parts hold every class in proportion
    labels = y_main if task == "classification" and cfg.stratify else None
    test_fraction = 0 if test else cfg.test_fraction
    if cfg.folds:
        tr, va, te = fold_split(len(main), cfg.folds, cfg.fold, test_fraction, cfg.seed, labels)
    else:
        tr, va, te = split_rows(len(main), cfg.val_fraction, test_fraction, cfg.seed, labels)
    # which rows of the file validate, by number and id: a fold's out-of-fold predictions name them
    val_rows = {"row": [main.rows[i] for i in va.tolist()]}
    if cfg.id is not None:
        ids = main.columns[cfg.id]
        val_rows["id"] = [ids[i] for i in va.tolist()]
    train_rows = array("q", [0]) * len(tr)  # 8 bytes a row, not a list of Python ints (36)
    if len(tr):
        torch.frombuffer(train_rows, dtype=torch.int64).copy_(tr)
    w_train = w_main[tr] if w_main is not None else None
    w_val = w_main[va] if w_main is not None else None
    if w_train is not None and not bool((w_train > 0).any()):
        raise DataError(f"dataset.weight: every row of the training split has weight 0 in column {weight!r}")

    categorical = set(cfg.categorical)
    fitted = {}
    for f in features:
        fitted[f] = _fit_column(f, main.columns[f], cells, categorical, main, train_rows)
        release_freed_memory()  # the fit's temporaries (each column's training cells) go back to the system
    columns = [spec for spec, _ in fitted.values()]
    warn_many_categories(columns, len(train_rows))
    for spec in columns:  # new rows are read as the training file wrote its numbers ("1,234.5")
        fmt = getattr(main.columns[spec["name"]], "number_format", None)
        if fmt and spec["kind"] == "numeric":
            spec["number_format"] = fmt
    preprocess = {
        "kind": "csv",
        "target": target,
        "task": task,
        "classes": classes,
        "features": features,
        "columns": columns,
        "na_values": list(cfg.na_values),
        "missing": cfg.missing,
    }
    parsed = {f: p for f, (_, p) in fitted.items() if p}
    fitted.clear()
    # each column goes once encoded, and the cells are all gone before the splits are copied out: a large
    # table never holds its cells and its inputs, or its inputs twice and its cells, at once
    x_main = encode_columns(preprocess, main.columns, main.where, parsed, consume=True)
    main.columns.clear()
    del parsed
    if test:
        x_test = encode_columns(preprocess, test.columns, test.where)
        y_test = _targets(test.columns[target], task, classes, test, target)
    else:
        x_test, y_test = torch.index_select(x_main, 0, te), y_main[te]

    names = encoded_names(preprocess)
    numeric = torch.tensor(
        [c["kind"] == "numeric" for c in columns for _ in range(1 if c["kind"] == "numeric" else len(c["categories"]))]
    )
    x_train, x_val = torch.index_select(x_main, 0, tr), torch.index_select(x_main, 0, va)  # contiguous copies
    del x_main
    # Numeric inputs are standardised with training-split statistics (inside the model); one-hot columns stay 0/1.
    mean, std = _input_stats(x_train)
    mean = torch.where(numeric, mean, 0.0).float()
    std = std if len(x_train) > 1 else torch.ones(len(names), dtype=torch.float64)
    std = torch.where(numeric & (std > 1e-12), std, 1.0).float()
    n_cat = sum(c["kind"] == "categorical" for c in columns)
    log.info(
        "csv %s: %d rows, %d numeric + %d categorical feature(s) -> %d inputs; %s%s",
        main.path,
        len(main),
        len(columns) - n_cat,
        n_cat,
        len(names),
        task,
        f" with {len(classes)} classes" if classes else "",
    )
    return DataBundle(
        name=cfg.name,
        task=task,
        x_train=x_train,
        y_train=y_main[tr],
        x_val=x_val,
        y_val=y_main[va],
        x_test=x_test,
        y_test=y_test,
        x_mean=mean,
        x_std=std,
        class_names=classes,
        input_shape=(len(names),),
        preprocess={**preprocess, "inputs": names},
        val_rows=val_rows,
        w_train=w_train,
        w_val=w_val,
    )

"""Seeded splits of a table's rows: train/val/test and k folds, stratified by class for classification.

Stratification orders the rows so that every prefix holds each class in its overall proportion: the
rows are shuffled, the j-th of a class's n_c rows gets the key (j + 1/2) / n_c, and the rows are
sorted by key; cutting that order into consecutive parts (val, test, train) gives parts whose class
counts are within about one row per class of the proportional ones.  Folds deal the rows out in turn,
grouped by class and shuffled within it, so fold sizes differ by at most one row, and per class too.
"""

from __future__ import annotations

import torch

from mlptrain.data.bundle import split_indices
from mlptrain.errors import DataError


def _ranks(labels: torch.Tensor, generator: torch.Generator):
    """A shuffle ``perm`` of the rows, and for ``labels[perm]``: each row's rank among its class's rows,
    the class sizes and where each class starts when the rows are grouped by class."""
    perm = torch.randperm(len(labels), generator=generator)
    lab = labels[perm]
    counts = torch.bincount(lab)
    order = torch.argsort(lab, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(lab)
    rank[order] = torch.arange(len(lab)) - starts[lab[order]]
    return perm, lab, rank, counts, starts


def stratified_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A shuffled order of ``range(len(labels))`` in which every prefix is stratified by label."""
    perm, lab, rank, counts, _ = _ranks(labels, generator)
    key = (rank.double() + 0.5) / counts[lab].double()
    return perm[torch.argsort(key, stable=True)]


def split_rows(n: int, val_fraction: float, test_fraction: float, seed: int, labels: torch.Tensor | None = None):
    """(train, val, test) indices; stratified when ``labels`` (class indices) are given. The part sizes
    are those of :func:`mlptrain.data.bundle.split_indices`."""
    if labels is None:
        return split_indices(n, val_fraction, test_fraction, seed)
    train, val, test = split_indices(n, val_fraction, test_fraction, seed)  # the sizes, and their checks
    order = stratified_order(labels, torch.Generator().manual_seed(seed))
    n_val, n_test = len(val), len(test)
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def fold_of_rows(n: int, folds: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's fold in ``range(folds)``: equal sizes (within one row), stratified when ``labels`` are given.
    The same for every fold's job of a sweep, since it depends only on the table, ``folds`` and ``seed``."""
    if folds > n:
        raise DataError(f"dataset.folds: {folds} folds need at least {folds} rows; the table has {n}")
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        perm, position = torch.randperm(n, generator=g), torch.arange(n)
    else:  # the rows grouped by class, shuffled within it, dealt out in turn: every class spread evenly
        perm, lab, rank, _, starts = _ranks(labels, g)
        position = starts[lab] + rank
    fold = torch.empty(n, dtype=torch.long)
    fold[perm] = position % folds
    return fold


def fold_split(n: int, folds: int, fold: int, test_fraction: float, seed: int, labels: torch.Tensor | None = None):
    """(train, val, test) indices for fold ``fold`` of ``folds``: the test part (``test_fraction`` of the rows,
    0: none, as with a separate test file) is held out as :func:`split_rows` would; the other rows are dealt
    into folds (:func:`fold_of_rows`), fold ``fold`` validates and the rest train.  The test part and the
    folds depend only on the table, ``folds`` and ``seed``: the same in every fold's job."""
    if test_fraction:
        n_test = max(1, round(n * test_fraction))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if labels is None else None
        if order is None:
            order = stratified_order(labels, torch.Generator().manual_seed(seed))
        test, rest = order[:n_test], order[n_test:].sort().values
    else:
        test, rest = torch.zeros(0, dtype=torch.long), torch.arange(n)
    sub = None if labels is None else labels[rest]
    if len(rest) < folds:
        raise DataError(
            f"dataset.folds: must be in [2, {len(rest)}] for the {len(rest)} rows left for cross-validation, "
            f"got {folds}"
        )
    if sub is not None:
        counts = torch.bincount(sub)
        smallest = int(counts[counts > 0].min())
        if smallest < folds:
            raise DataError(
                f"dataset.folds: must be in [2, {smallest}] (the smallest class has {smallest} of the rows left for "
                f"cross-validation: each fold needs one of each class), got {folds}"
            )
    which = fold_of_rows(len(rest), folds, seed, sub)
    return rest[which != fold], rest[which == fold], test

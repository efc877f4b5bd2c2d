"""The range and choice checks every config schema uses: a failure is one ConfigError line naming the key."""

from __future__ import annotations

import math

from mlptrain.errors import ConfigError


def check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def choice(value: str, key: str, choices) -> None:
    check(value in choices, key, f"unknown value {value!r}; valid choices: {', '.join(choices)}")


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def split_fractions(val: float, test: float | None) -> None:
    """A dataset's validation (and test) fractions: each in (0, 1), together below 1."""
    check(finite(val) and 0 < val < 1, "dataset.val_fraction", f"must be in (0, 1), got {val}")
    if test is not None:
        check(finite(test) and 0 < test < 1, "dataset.test_fraction", f"must be in (0, 1), got {test}")
        check(val + test < 1, "dataset.val_fraction", f"val_fraction + test_fraction must be < 1, got {val + test}")


def check_folds(folds: int, fold: int | None) -> None:
    """``dataset.folds``/``dataset.fold``: both or neither, ``folds >= 2`` and ``0 <= fold < folds``."""
    check(folds == 0 or folds >= 2, "dataset.folds", f"must be >= 2 (or 0: no cross-validation), got {folds}")
    if fold is None:
        check(
            not folds,
            "dataset.fold",
            f"dataset.folds={folds} trains one job per fold: run a sweep over them, "
            f"mlptrain -m ... 'dataset.fold=range({folds})'"
            + (f" (or mlptrain -m ... cv={folds}fold)" if folds in (3, 5, 10) else ""),
        )
        return
    check(folds > 0, "dataset.fold", "needs dataset.folds (the number of folds, >= 2)")
    check(0 <= fold < folds, "dataset.fold", f"must be in [0, {folds - 1}] for dataset.folds={folds}, got {fold}")

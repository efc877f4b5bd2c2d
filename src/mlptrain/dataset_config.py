"""The dataset groups' schemas: one dataclass per kind of dataset, range-checked on construction.

Which names use which schema is :data:`mlptrain.registry.DATASETS`.  Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlptrain.checks import check, check_folds, choice, finite, split_fractions


@dataclass
class SyntheticConfig:
    """Embedded toy sets, generated from ``seed`` with no download."""

    name: str = "spirals"
    n_samples: int = 3000
    noise: float = 0.2
    n_classes: int = 3  # spiral arms / blob centres; moons, circles and xor are binary
    n_features: int = 10  # friedman1 only (>= 5; the extra ones are noise)
    seed: int = 0  # the data's own seed: fixed, so a seed sweep varies init and order, not data
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        check(self.n_samples >= 30, "dataset.n_samples", f"must be >= 30, got {self.n_samples}")
        check(finite(self.noise) and self.noise >= 0, "dataset.noise", f"must be >= 0, got {self.noise}")
        check(self.n_classes >= 2, "dataset.n_classes", f"must be >= 2, got {self.n_classes}")
        check(
            self.n_classes <= self.n_samples,
            "dataset.n_classes",
            f"must be <= dataset.n_samples ({self.n_samples}), got {self.n_classes}",
        )
        check(self.n_features >= 5, "dataset.n_features", f"must be >= 5, got {self.n_features}")
        split_fractions(self.val_fraction, self.test_fraction)


@dataclass
class VisionConfig:
    """torchvision image sets; pixels stay uint8 in memory and are normalised per batch."""

    name: str = "mnist"
    data_dir: str = "${oc.env:MLPTRAIN_DATA,${oc.env:HOME,.}/.cache/mlptrain}"
    download: bool = True
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check(bool(self.data_dir), "dataset.data_dir", "must be a folder path")
        split_fractions(self.val_fraction, None)


MISSING_POLICIES = ("mean", "median", "most_frequent", "error")
NA_VALUES = ["", "NA", "N/A", "NaN", "null", "None", "?"]


@dataclass
class CsvConfig:
    """A user's own table: one row per example, one target column."""

    name: str = "csv"
    path: str = "???"
    target: str = "???"
    task: str = "auto"  # auto (integer/string target: classification, float: regression) | classification | regression
    test_path: str | None = None  # a separate test table; otherwise test_fraction of path is held out
    features: list[str] | None = None  # default: every column but the target
    categorical: list[str] = field(default_factory=list)  # one-hot these even if they look numeric (codes, ids)
    # Missing cells: imputed from the training split (numeric: mean/median/most frequent; categorical:
    # most frequent) or rejected (error).
    missing: str = "mean"
    na_values: list[str] = field(default_factory=lambda: list(NA_VALUES))  # cells that mean "missing" (any case)
    delimiter: str = ","
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    # Classification splits keep the class proportions (csv.yaml: true; false where a config predates it).
    stratify: bool = False
    # k-fold cross-validation: fold ``fold`` of the rows left after the test split validates, the other
    # folds train (one job per fold: ``mlptrain -m ... cv=5fold``); 0: the val_fraction split.
    folds: int = 0
    fold: int | None = None
    id: str | None = None  # a column naming each row: never a feature, carried into oof_predictions.csv
    weight: str | None = None  # a column of per-row weights >= 0 for the training loss (not a feature)

    def __post_init__(self) -> None:
        check(bool(self.path.strip()), "dataset.path", "must be the path of a CSV file")
        check_folds(self.folds, self.fold)
        check(bool(self.target.strip()), "dataset.target", "must name the target column")
        choice(self.task, "dataset.task", ("auto", "classification", "regression"))
        choice(self.missing, "dataset.missing", MISSING_POLICIES)
        if self.delimiter in ("tab", "\\t"):  # a tab is hard to type on a command line
            self.delimiter = "\t"
        check(len(self.delimiter) == 1, "dataset.delimiter", f"must be one character or tab, got {self.delimiter!r}")
        split_fractions(self.val_fraction, None if self.test_path else self.test_fraction)

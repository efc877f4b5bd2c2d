"""The common currency of every dataset: tensors plus what the model and loss need to know."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mlptrain.errors import DataError

__all__ = ["DataBundle", "DataError", "split_indices", "standardisation"]


@dataclass
class DataBundle:
    name: str
    task: str  # "classification" | "regression"
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    # Input standardisation, from the training split only; folded into the model so a
    # checkpoint predicts from raw inputs (raw pixels, raw table values).
    x_mean: torch.Tensor
    x_std: torch.Tensor
    class_names: list[str] | None = None
    input_shape: tuple[int, ...] = ()
    # Anything a predictor needs to encode raw inputs the same way (CSV encoders).
    preprocess: dict = field(default_factory=dict)
    # Which rows of the source file the validation split holds ("row": numbers, "id": the id column's
    # values), where the loader knows (CSV): a cross-validation fold writes its predictions for them.
    val_rows: dict | None = None
    # Per-row weights of the training loss (a CSV's dataset.weight column), or None: every row counts once.
    w_train: torch.Tensor | None = None
    w_val: torch.Tensor | None = None  # the validation rows' weights: a refit trains on them too

    @property
    def in_features(self) -> int:
        return int(torch.tensor(self.input_shape).prod()) if self.input_shape else self.x_train[0].numel()

    @property
    def n_outputs(self) -> int:
        """Classes for classification, target dimensions for regression."""
        if self.task == "classification":
            return len(self.class_names)
        return 1 if self.y_train.dim() == 1 else self.y_train.shape[1]

    @property
    def y_mean(self) -> torch.Tensor:
        return self.y_train.float().mean(0) if self.task == "regression" else torch.zeros(())

    @property
    def y_std(self) -> torch.Tensor:
        return self.y_train.float().std(0).clamp_min(1e-8) if self.task == "regression" else torch.ones(())

    def meta(self) -> dict:
        """Plain-typed description stored in checkpoints (loadable with weights_only=True)."""
        return {
            "name": self.name,
            "task": self.task,
            "input_shape": list(self.input_shape),
            "in_features": self.in_features,
            "n_outputs": self.n_outputs,
            "class_names": self.class_names,
            "preprocess": self.preprocess,
            "sizes": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
        }


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int):
    """Seeded random train/val/test index split (test_fraction 0: no test part)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val = max(1, round(n * val_fraction))
    n_test = max(1, round(n * test_fraction)) if test_fraction else 0
    if n - n_val - n_test < 1:
        raise DataError(f"dataset: {n} rows are too few to split into train/val/test")
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]


def standardisation(x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std of the training split (std floored so constant features stay finite)."""
    x = x_train.double()
    return x.mean(0).float(), x.std(0).clamp_min(1e-6).float()

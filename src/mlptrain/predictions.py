"""A model's outputs as prediction columns: class + probabilities, or mean (+ sigma for probabilistic heads).

One spelling for ``mlptrain-predict`` and a cross-validation fold's ``val_predictions.csv``, so the
out-of-fold predictions of a sweep read like the predictions of the fold's checkpoint.
"""

from __future__ import annotations

import torch

from mlptrain.losses import Task


def prediction_columns(task: Task, class_names: list[str] | None, out: torch.Tensor) -> tuple[list[str], list[list]]:
    """Column names, and one row of values per output row."""
    if task.task == "classification":
        p = task.probabilities(out).cpu()
        cols = ["prediction"] + [f"p_{c}" for c in class_names]
        return cols, [[class_names[int(r.argmax())]] + r.tolist() for r in p]
    mean, std = task.mean_and_std(out)
    k = mean.shape[1]
    suffix = [""] if k == 1 else [f"_{j}" for j in range(k)]
    cols = [f"mean{s}" for s in suffix] + ([f"sigma{s}" for s in suffix] if std is not None else [])
    values = mean if std is None else torch.cat([mean, std], 1)
    return cols, values.cpu().tolist()

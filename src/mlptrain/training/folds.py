"""A cross-validation fold's predictions for its validation rows: ``val_predictions.csv`` in its run dir.

The sweep's ``oof_predictions.csv`` is gathered from these files (:mod:`mlptrain.oof`), so it is the same
whichever launcher ran the folds, in whichever processes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import torch

from mlptrain.files import write_text
from mlptrain.predictions import prediction_columns

FILE = "val_predictions.csv"


def write_val_predictions(out_dir: Path, parts, outputs_of: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Each validation row's number (and id) in the file, its fold, true target and the prediction of the
    tested weights (``outputs_of``: the model's outputs on a split); nothing unless the run is a fold."""
    data, fold = parts.data, getattr(parts.run.dataset, "fold", None)
    if fold is None or not data.val_rows:
        return
    out = outputs_of(parts.val[0])  # every rank: DDP gathers the outputs
    if not parts.dist.is_main:
        return
    cols, values = prediction_columns(parts.task, data.class_names, out.float())
    y = data.y_val
    if data.class_names:
        targets = [data.class_names[int(k)] for k in y]
    else:
        targets = [repr(float(v)) if y.dim() == 1 else " ".join(map(repr, v.tolist())) for v in y]
    carried = list(data.val_rows)  # "row", then "id" where the dataset names one
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*carried, "fold", "target", *cols])
    for i, row in enumerate(values):
        cells = [repr(v) if isinstance(v, float) else v for v in row]
        w.writerow([*(data.val_rows[c][i] for c in carried), fold, targets[i], *cells])
    write_text(Path(out_dir) / FILE, buf.getvalue(), "validation predictions")

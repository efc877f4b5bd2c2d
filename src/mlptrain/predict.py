"""A trained model from its checkpoint alone: rebuild it, check data fits it, evaluate and predict.

The model is rebuilt from the config and data description stored in the checkpoint (the input
statistics and target scale are buffers in its state dict), so no training data has to be loaded
to predict.  The ``mlptrain-eval`` / ``mlptrain-predict`` commands are :mod:`mlptrain.evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mlptrain import checkpoint
from mlptrain.accel import autocast_for, model_outputs, resolve_device
from mlptrain.compose import with_overrides
from mlptrain.config import RunConfig, parse
from mlptrain.errors import CheckpointError, DataError
from mlptrain.inputs import Rows, is_table, read_csv
from mlptrain.losses import Task, build_task
from mlptrain.model import Network, build_model
from mlptrain.predictions import prediction_columns


@dataclass
class Loaded:
    path: Path
    ckpt: dict
    run: RunConfig
    meta: dict
    task: Task
    model: Network  # in eval mode on ``device``
    device: torch.device


def checkpoint_path(path: str | Path) -> Path:
    """A run dir means its best.pt (the weights its test metrics come from), else its last.pt."""
    path = Path(path)
    if path.is_dir():
        return path / "best.pt" if (path / "best.pt").is_file() else path / "last.pt"
    return path


def load(path: str | Path, overrides: list[str] = ()) -> Loaded:
    """Load a checkpoint and rebuild its model; every problem is one line (CheckpointError/ConfigError)."""
    path = checkpoint_path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # a pipe: opening it could block forever
        raise CheckpointError(f"{path} is not a regular file; give a checkpoint file or a run dir")
    ckpt = checkpoint.load(path)
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("data"), dict) or "model" not in ckpt:
        raise CheckpointError(f"{path} lacks its config, data description or weights")
    run = parse(with_overrides(ckpt["config"], list(overrides)))
    meta = ckpt["data"]
    n, d = meta["n_outputs"], meta["in_features"]
    task = build_task(run.loss, meta, torch.zeros(n), torch.ones(n))  # the head's scale: from the state dict
    model = build_model(run.model, meta, torch.zeros(d), torch.ones(d), task.head, task.head_width)
    problem = architecture_mismatch(model, ckpt["model"])
    if problem:
        raise CheckpointError(f"{path}: the weights do not match the model its config describes ({problem})")
    model.load_state_dict(ckpt["model"])
    device = resolve_device(run.trainer.device)
    return Loaded(path, ckpt, run, meta, task, model.to(device).eval(), device)


def architecture_mismatch(model, state: dict) -> str | None:
    """The first difference between a state dict and a model, in a few words (None: they match)."""
    own = model.state_dict()
    if not isinstance(state, dict):
        return "no state dict"
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        return "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(extra[:3])}" if extra else "",
            )
            if part
        )
    for k, v in own.items():
        w = state[k]
        if not hasattr(w, "shape") or tuple(w.shape) != tuple(v.shape):
            shape = tuple(w.shape) if hasattr(w, "shape") else type(w).__name__
            return (
                f"{k} is {list(shape) if isinstance(shape, tuple) else shape} in the checkpoint, "
                f"{list(v.shape)} in the model"
            )
    return None


def check_data_fits(meta: dict, data_meta: dict, what: str) -> None:
    """The data to evaluate must look like the data the model was trained on."""
    for key, label in (
        ("task", "task"),
        ("in_features", "input features"),
        ("n_outputs", "outputs"),
        ("class_names", "classes"),
    ):
        if meta.get(key) != data_meta.get(key):
            raise DataError(
                f"{what} does not fit the checkpoint: {label} {data_meta.get(key)!r}, "
                f"the model expects {meta.get(key)!r}"
            )
    if is_table(meta) and meta["preprocess"] != data_meta.get("preprocess"):
        # Encoders fitted on another file (categories, imputed values) would silently shift the inputs.
        raise DataError(
            f"{what} is encoded differently from the checkpoint's training table; "
            f"evaluate new rows with --csv FILE (they are encoded as in training)"
        )


# ----------------------------------------------------------------------------- inputs
def read_csv_inputs(path: str | Path, loaded: Loaded, with_target: bool, carry=()) -> Rows:
    """Rows of a CSV as model inputs (and targets): the checkpoint's own encoding for tables it was
    trained on (read with the training table's delimiter, with any ``dataset.na_values`` given now
    added to its missing-value tokens), else raw numeric columns (synthetic sets, one per pixel)."""
    meta = loaded.meta
    if not is_table(meta):
        return read_csv(path, meta, with_target, ",", carry)
    ds = loaded.run.dataset
    extra = [v for v in getattr(ds, "na_values", ()) if v not in meta["preprocess"]["na_values"]]
    return read_csv(path, meta, with_target, getattr(ds, "delimiter", ","), carry, extra)


def evaluate(loaded: Loaded, x, y) -> dict[str, float]:
    run, dev = loaded.run, loaded.device
    if not len(y):
        raise DataError("no rows to evaluate")
    with torch.no_grad():
        out = model_outputs(
            loaded.model, x.to(dev), run.trainer.eval_batch_size, autocast_for(run.trainer.precision, dev)
        )
    return loaded.task.metrics(out, y.to(dev))


def predict(loaded: Loaded, x) -> tuple[list[str], list[list]]:
    """Column names and rows: class + probabilities, or mean (+ sigma for probabilistic heads)."""
    run, dev, task = loaded.run, loaded.device, loaded.task
    n = len(x)
    if not n:  # the columns still: computed on one placeholder row
        x = torch.zeros(1, loaded.meta["in_features"])
    with torch.no_grad():
        out = model_outputs(
            loaded.model, x.to(dev), run.trainer.eval_batch_size, autocast_for(run.trainer.precision, dev)
        ).float()[:n]
    return prediction_columns(task, loaded.meta["class_names"], out)


def prediction_table(loaded: Loaded, rows: Rows) -> tuple[list[str], list[list]]:
    """One output row per input row: the carried columns, then the predictions; a refused row has
    empty prediction cells and its reason in a last ``error`` column (present when a row was refused)."""
    cols, values = predict(loaded, rows.x)
    out_cols = list(rows.carried) + cols + (["error"] if rows.refused else [])
    by_row = dict(zip(rows.accepted, values))
    out = []
    for i in range(rows.n):
        carried = [rows.carried[c][i] for c in rows.carried]
        if i in by_row:
            out.append(carried + by_row[i] + ([""] if rows.refused else []))
        else:
            out.append(carried + [""] * len(cols) + [rows.refused.get(i, "refused")])
    return out_cols, out

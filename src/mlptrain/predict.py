"""A trained model from its checkpoint alone: rebuild it, check data fits it, evaluate and predict.

The model is rebuilt from the config and data description stored in the checkpoint (the input
statistics and target scale are buffers in its state dict), so no training data has to be loaded
to predict.  The ``mlptrain-eval`` / ``mlptrain-predict`` commands are :mod:`mlptrain.evaluate`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from mlptrain import checkpoint
from mlptrain.accel import autocast_for, model_outputs, resolve_device
from mlptrain.compose import with_overrides
from mlptrain.config import RunConfig, parse
from mlptrain.data.encoding import encode_rows
from mlptrain.errors import CheckpointError, DataError
from mlptrain.losses import Task, build_task
from mlptrain.model import Network, build_model


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
    if meta.get("preprocess") and meta["preprocess"] != data_meta.get("preprocess"):
        # Encoders fitted on another file (categories, imputed values) would silently shift the inputs.
        raise DataError(
            f"{what} is encoded differently from the checkpoint's training table; "
            f"evaluate new rows with --csv FILE (they are encoded as in training)"
        )


# ----------------------------------------------------------------------------- CSV inputs
def read_csv_inputs(path: str | Path, meta: dict, with_target: bool, delimiter: str = ","):
    """Rows of a CSV as model inputs (and targets): the checkpoint's own encoding for tables it was
    trained on, else raw numeric feature columns (synthetic sets, flattened images)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path} has no rows")
    if meta.get("preprocess"):
        return _encode_table(path, rows, meta, with_target)
    header = None if all(_is_number(c) for c in rows[0]) else [c.strip() for c in rows[0]]
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{path} has a header but no rows")
    d = meta["in_features"]
    width = len(body[0])
    target_col = None
    if header and ({"target", "y"} & set(header)):
        target_col = header.index("target" if "target" in header else "y")
    elif with_target and not header and width == d + 1:
        target_col = width - 1  # no header naming it: the one extra column, last, is the target
    if with_target and target_col is None:
        raise DataError(f"{path}: no target column (name it 'target', or add it last after {d} feature columns)")
    n_features = width - (target_col is not None)
    if n_features != d:
        raise DataError(f"{path} has {n_features} feature column(s); the model expects {d}")
    feature_cols = [i for i in range(width) if i != target_col]
    xs, ys = [], []
    for line, row in enumerate(body, start=2 if header else 1):
        if len(row) != width:
            raise DataError(f"{path} line {line}: {len(row)} columns, expected {width}")
        try:
            xs.append([float(row[i]) for i in feature_cols])
        except ValueError:
            raise DataError(f"{path} line {line}: a feature is not a number") from None
        if with_target:
            ys.append(_target(row[target_col], meta, path, line))
    x = torch.tensor(xs, dtype=torch.float32)
    if not with_target:
        return x, None
    y = torch.tensor(ys, dtype=torch.long if meta["task"] == "classification" else torch.float32)
    return x, y


def _encode_table(path: Path, rows: list, meta: dict, with_target: bool):
    """Rows of a table like the one the model was trained on: named columns, encoded as in training."""
    pre = meta["preprocess"]
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if not body:
        raise DataError(f"{path} has a header but no rows")
    records = [dict(zip(header, r)) for r in body]
    try:
        x = encode_rows(pre, records)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    if not with_target:
        return x, None
    target = pre["target"]
    if target not in header:
        raise DataError(f"{path}: no target column {target!r}")
    ys = [_target(r.get(target, ""), meta, path, line) for line, r in enumerate(records, start=2)]
    return x, torch.tensor(ys, dtype=torch.long if meta["task"] == "classification" else torch.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _target(text: str, meta: dict, path: Path, line: int):
    if meta["task"] == "classification":
        names = meta["class_names"]
        if text.strip() in names:
            return names.index(text.strip())
        if _is_number(text) and float(text).is_integer() and str(int(float(text))) in names:  # "1.0" for "1"
            return names.index(str(int(float(text))))
        raise DataError(f"{path} line {line}: unknown class {text!r}; classes: {', '.join(names)}")
    if not _is_number(text):
        raise DataError(f"{path} line {line}: target {text!r} is not a number")
    return float(text)


def evaluate(loaded: Loaded, x, y) -> dict[str, float]:
    run, dev = loaded.run, loaded.device
    out = model_outputs(loaded.model, x.to(dev), run.trainer.eval_batch_size, autocast_for(run.trainer.precision, dev))
    return loaded.task.metrics(out, y.to(dev))


def predict(loaded: Loaded, x) -> tuple[list[str], list[list]]:
    """Column names and rows: class + probabilities, or mean (+ sigma for probabilistic heads)."""
    run, dev, task = loaded.run, loaded.device, loaded.task
    out = model_outputs(
        loaded.model, x.to(dev), run.trainer.eval_batch_size, autocast_for(run.trainer.precision, dev)
    ).float()
    if task.task == "classification":
        names = loaded.meta["class_names"]
        p = task.probabilities(out).cpu()
        cols = ["prediction"] + [f"p_{c}" for c in names]
        return cols, [[names[int(r.argmax())]] + r.tolist() for r in p]
    mean, std = task.mean_and_std(out)
    k = mean.shape[1]
    suffix = [""] if k == 1 else [f"_{j}" for j in range(k)]
    cols = [f"mean{s}" for s in suffix] + ([f"sigma{s}" for s in suffix] if std is not None else [])
    values = mean if std is None else torch.cat([mean, std], 1)
    return cols, values.cpu().tolist()

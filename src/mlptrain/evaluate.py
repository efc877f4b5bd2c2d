"""``mlptrain-eval`` and ``mlptrain-predict``: a checkpoint is all they need.

The model is rebuilt from the config and data description stored in the
checkpoint (the input statistics and target scale are buffers in its state
dict), so no training data has to be loaded to predict.  Overrides use the
training command's syntax and apply on top of the checkpoint's own config:
``dataset=moons``, ``dataset.n_samples=5000``, ``trainer.device=cpu`` ...
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from mlptrain.config import ConfigError

EXIT_BAD_INPUT, EXIT_FAILED = 2, 1


@dataclass
class Loaded:
    path: Path
    ckpt: dict
    run: object  # config.RunConfig
    meta: dict
    task: object  # losses.Task
    model: object  # models.Network, in eval mode on ``device``
    device: object


def checkpoint_path(path: str | Path) -> Path:
    """A run dir means its best.pt (the weights its test metrics come from), else its last.pt."""
    path = Path(path)
    if path.is_dir():
        return path / "best.pt" if (path / "best.pt").is_file() else path / "last.pt"
    return path


def load(path: str | Path, overrides: list[str] = ()) -> Loaded:
    """Load a checkpoint and rebuild its model; every problem is one line (CheckpointError/ConfigError)."""
    import torch

    from mlptrain import checkpoint
    from mlptrain.checkpoint import CheckpointError
    from mlptrain.config import parse
    from mlptrain.losses import build_task
    from mlptrain.models import build_model
    from mlptrain.trainer import resolve_device

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
        return "; ".join(part for part in (f"missing {', '.join(missing[:3])}" if missing else "",
                                           f"unexpected {', '.join(extra[:3])}" if extra else "") if part)
    for k, v in own.items():
        w = state[k]
        if not hasattr(w, "shape") or tuple(w.shape) != tuple(v.shape):
            shape = tuple(w.shape) if hasattr(w, "shape") else type(w).__name__
            return f"{k} is {list(shape) if isinstance(shape, tuple) else shape} in the checkpoint, {list(v.shape)} in the model"
    return None


def with_overrides(raw: dict, overrides: list[str]):
    """The checkpoint's config with command-line overrides applied, as the training command would."""
    from hydra import compose, initialize_config_module
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from mlptrain.cli import CONFIG_PACKAGE, check_group_overrides, compose_error, config_groups

    cfg = OmegaConf.create(raw)
    if not overrides:
        return cfg
    check_group_overrides(overrides)
    groups = config_groups()
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        chosen = {o.key_or_group for o in parsed if o.key_or_group in groups and not o.is_delete()}
        if chosen:  # a group picked anew (dataset=moons): its option file, plus overrides inside it
            mine = [o.input_line for o in parsed if o.key_or_group.split(".")[0] in chosen]
            with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
                fresh = compose(config_name="config", overrides=mine)
            for g in chosen:
                cfg[g] = fresh[g]
        OmegaConf.set_struct(cfg, True)
        ConfigLoaderImpl._apply_overrides_to_config(
            [o for o in parsed if o.key_or_group.split(".")[0] not in chosen], cfg)
    except ConfigError:
        raise
    except Exception as e:  # Hydra/OmegaConf's own words, on one line
        raise compose_error(e) from None
    OmegaConf.set_struct(cfg, False)
    return cfg


def check_data_fits(meta: dict, data_meta: dict, what: str) -> None:
    """The data to evaluate must look like the data the model was trained on."""
    from mlptrain.data import DataError

    for key, label in (("task", "task"), ("in_features", "input features"), ("n_outputs", "outputs"),
                       ("class_names", "classes")):
        if meta.get(key) != data_meta.get(key):
            raise DataError(f"{what} does not fit the checkpoint: {label} {data_meta.get(key)!r}, "
                            f"the model expects {meta.get(key)!r}")
    if meta.get("preprocess") and meta["preprocess"] != data_meta.get("preprocess"):
        # Encoders fitted on another file (categories, imputed values) would silently shift the inputs.
        raise DataError(f"{what} is encoded differently from the checkpoint's training table; "
                        f"evaluate new rows with --csv FILE (they are encoded as in training)")


# ----------------------------------------------------------------------------- CSV inputs
def read_csv_inputs(path: str | Path, meta: dict, with_target: bool, delimiter: str = ","):
    """Rows of a CSV as model inputs (and targets): the checkpoint's own encoding for tables it was
    trained on, else raw numeric feature columns (synthetic sets, flattened images)."""
    import torch

    from mlptrain.data import DataError

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
    import torch

    from mlptrain.data import DataError
    from mlptrain.data.tabular import encode_rows

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
    from mlptrain.data import DataError

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


# ----------------------------------------------------------------------------- the commands
def evaluate(loaded: Loaded, x, y) -> dict[str, float]:
    from mlptrain.trainer import autocast_for, model_outputs

    run, dev = loaded.run, loaded.device
    out = model_outputs(loaded.model, x.to(dev), run.trainer.eval_batch_size, autocast_for(run.trainer.precision, dev))
    return loaded.task.metrics(out, y.to(dev))


def predict(loaded: Loaded, x) -> tuple[list[str], list[list]]:
    """Column names and rows: class + probabilities, or mean (+ sigma for probabilistic heads)."""
    from mlptrain.trainer import autocast_for, model_outputs

    run, dev, task = loaded.run, loaded.device, loaded.task
    out = model_outputs(loaded.model, x.to(dev), run.trainer.eval_batch_size,
                        autocast_for(run.trainer.precision, dev)).float()
    if task.task == "classification":
        names = loaded.meta["class_names"]
        p = task.probabilities(out).cpu()
        cols = ["prediction"] + [f"p_{c}" for c in names]
        return cols, [[names[int(r.argmax())]] + r.tolist() for r in p]
    mean, std = task.mean_and_std(out)
    k = mean.shape[1]
    suffix = [""] if k == 1 else [f"_{j}" for j in range(k)]
    cols = [f"mean{s}" for s in suffix] + ([f"sigma{s}" for s in suffix] if std is not None else [])
    values = mean if std is None else __import__("torch").cat([mean, std], 1)
    return cols, values.cpu().tolist()


def _parser(prog: str, predict_cmd: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=("Predict from a checkpoint: a CSV of raw inputs in, predictions out." if predict_cmd else
                     "Evaluate a checkpoint on its test split, another split, another dataset config or a CSV."),
        epilog="Overrides use the training command's syntax and apply to the checkpoint's own config, "
               "e.g. dataset.n_samples=5000, dataset=moons, trainer.device=cpu, trainer.eval_batch_size=1024.")
    p.add_argument("checkpoint", help="a .pt file, or a run dir (its best.pt, else last.pt)")
    if predict_cmd:
        p.add_argument("input", help="CSV of raw feature columns (a header is optional; a target column is ignored)")
        p.add_argument("-o", "--output", default="-", help="predictions CSV to write (default: stdout)")
    else:
        p.add_argument("--split", choices=("test", "val", "train"), default="test", help="split to evaluate (default: test)")
        p.add_argument("--csv", help="evaluate on all rows of this CSV (raw features + target column) instead")
        p.add_argument("-o", "--output", help="also write the metrics JSON here")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the checkpoint's config")
    return p


def _run(prog: str, body) -> None:
    from mlptrain.checkpoint import CheckpointError
    from mlptrain.data import DataError

    try:
        body()
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except (MemoryError, RuntimeError) as e:
        from mlptrain.trainer import out_of_memory

        oom = out_of_memory(e)
        if oom is None:
            raise
        print(f"{prog}: error: {oom}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)


def _write(output: str | None, text: str, what: str) -> None:
    from mlptrain.checkpoint import write_bytes

    if output in (None, "-"):
        sys.stdout.write(text)
    else:
        write_bytes(Path(output), text.encode(), what)


def eval_main(argv: list[str] | None = None) -> None:
    """``mlptrain-eval CHECKPOINT [--split S | --csv FILE] [-o metrics.json] [overrides]``"""
    args = _parser("mlptrain-eval", False).parse_intermixed_args(argv)

    def body():
        from mlptrain.data import load_dataset

        loaded = load(args.checkpoint, args.overrides)
        if args.csv:
            x, y = read_csv_inputs(args.csv, loaded.meta, with_target=True, delimiter=_delimiter(loaded))
            source = str(args.csv)
        else:
            data = load_dataset(loaded.run.dataset)
            check_data_fits(loaded.meta, data.meta(), f"dataset {data.name}")
            x, y = getattr(data, f"x_{args.split}"), getattr(data, f"y_{args.split}")
            source = f"{data.name}:{args.split}"
        metrics = evaluate(loaded, x, y)
        result = {"checkpoint": str(loaded.path), "data": source, "rows": len(y), "epoch": loaded.ckpt.get("epoch"),
                  "metrics": {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}}
        text = json.dumps(result, indent=2) + "\n"
        if args.output:
            _write(args.output, text, "metrics file")
        sys.stdout.write(text)

    _run("mlptrain-eval", body)


def predict_main(argv: list[str] | None = None) -> None:
    """``mlptrain-predict CHECKPOINT input.csv [-o predictions.csv] [overrides]``"""
    args = _parser("mlptrain-predict", True).parse_intermixed_args(argv)

    def body():
        loaded = load(args.checkpoint, args.overrides)
        x, _ = read_csv_inputs(args.input, loaded.meta, with_target=False, delimiter=_delimiter(loaded))
        cols, rows = predict(loaded, x)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows([[_cell(v) for v in row] for row in rows])
        _write(args.output, buf.getvalue(), "predictions file")
        if args.output not in (None, "-"):
            print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)

    _run("mlptrain-predict", body)


def _delimiter(loaded: Loaded) -> str:
    """New rows of a table are read with the training table's delimiter; others are plain CSV."""
    return getattr(loaded.run.dataset, "delimiter", ",") if loaded.meta.get("preprocess") else ","


def _cell(v):
    return repr(v) if isinstance(v, float) else v

"""``mlptrain-eval`` and ``mlptrain-predict``: a checkpoint is all they need (see :mod:`mlptrain.predict`).

Overrides use the training command's syntax and apply on top of the checkpoint's own config:
``dataset=moons``, ``dataset.n_samples=5000``, ``trainer.device=cpu`` ...  Every problem is one
line and exit 2 (bad input) or 1 (out of memory).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

from mlptrain.data import load_dataset
from mlptrain.errors import BAD_INPUT, EXIT_BAD_INPUT, EXIT_FAILED, out_of_memory
from mlptrain.files import write_bytes


def _parser(prog: str, predict_cmd: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Predict from a checkpoint: a CSV of raw inputs in, predictions out."
            if predict_cmd
            else "Evaluate a checkpoint on its test split, another split, another dataset config or a CSV."
        ),
        epilog="Overrides use the training command's syntax and apply to the checkpoint's own config, "
        "e.g. dataset.n_samples=5000, dataset=moons, trainer.device=cpu, trainer.eval_batch_size=1024.",
    )
    p.add_argument("checkpoint", help="a .pt file, or a run dir (its best.pt, else last.pt)")
    if predict_cmd:
        p.add_argument("input", help="CSV of raw feature columns (a header is optional; a target column is ignored)")
        p.add_argument("-o", "--output", default="-", help="predictions CSV to write (default: stdout)")
    else:
        p.add_argument(
            "--split", choices=("test", "val", "train"), default="test", help="split to evaluate (default: test)"
        )
        p.add_argument("--csv", help="evaluate on all rows of this CSV (raw features + target column) instead")
        p.add_argument("-o", "--output", help="also write the metrics JSON here")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the checkpoint's config")
    return p


def _run(prog: str, body) -> None:
    try:
        body()
    except BAD_INPUT as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except (MemoryError, RuntimeError) as e:
        oom = out_of_memory(e)
        if oom is None:
            raise
        print(f"{prog}: error: {oom}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)


def _write(output: str | None, text: str, what: str) -> None:
    if output in (None, "-"):
        sys.stdout.write(text)
    else:
        write_bytes(Path(output), text.encode(), what)


def eval_main(argv: list[str] | None = None) -> None:
    """``mlptrain-eval CHECKPOINT [--split S | --csv FILE] [-o metrics.json] [overrides]``"""
    args = _parser("mlptrain-eval", False).parse_intermixed_args(argv)

    def body():
        from mlptrain.predict import check_data_fits, evaluate, load, read_csv_inputs  # torch: after argparse

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
        result = {
            "checkpoint": str(loaded.path),
            "data": source,
            "rows": len(y),
            "epoch": loaded.ckpt.get("epoch"),
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in metrics.items()},
        }
        text = json.dumps(result, indent=2) + "\n"
        if args.output:
            _write(args.output, text, "metrics file")
        sys.stdout.write(text)

    _run("mlptrain-eval", body)


def predict_main(argv: list[str] | None = None) -> None:
    """``mlptrain-predict CHECKPOINT input.csv [-o predictions.csv] [overrides]``"""
    args = _parser("mlptrain-predict", True).parse_intermixed_args(argv)

    def body():
        from mlptrain.predict import load, predict, read_csv_inputs  # torch: after argparse

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


def _delimiter(loaded) -> str:
    """New rows of a table are read with the training table's delimiter; others are plain CSV."""
    return getattr(loaded.run.dataset, "delimiter", ",") if loaded.meta.get("preprocess") else ","


def _cell(v):
    return repr(v) if isinstance(v, float) else v

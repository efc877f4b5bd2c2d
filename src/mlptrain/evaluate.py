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
import os
import re
import sys
from pathlib import Path

from mlptrain.data import load_dataset
from mlptrain.errors import BAD_INPUT, EXIT_BAD_INPUT, EXIT_FAILED, DataError, out_of_memory
from mlptrain.output_file import refuse_inputs, write_output
from mlptrain.quick_exit import console

OVERRIDE = re.compile(r"^[+~]?[A-Za-z_][\w.@/-]*=")  # key=value, as the training command takes them


def _parser(prog: str, predict_cmd: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Predict from a checkpoint: a CSV of raw inputs (or PNG/JPEG images for an image model) in, "
            "one row of predictions per input row out."
            if predict_cmd
            else "Evaluate a checkpoint on its test split, another split, another dataset config or a CSV."
        ),
        epilog="Overrides use the training command's syntax and apply to the checkpoint's own config, "
        "e.g. dataset.n_samples=5000, dataset=moons, trainer.device=cpu, trainer.eval_batch_size=1024.",
    )
    p.add_argument("checkpoint", help="a .pt file, or a run dir (its best.pt, else last.pt)")
    if predict_cmd:
        p.add_argument(
            "inputs",
            nargs="+",
            metavar="INPUT",
            help="a CSV of raw feature columns ('-': standard input; a header is optional, a target column is "
            "ignored), or for an image model PNG/JPEG files, a folder of them or a glob; then any overrides",
        )
        p.add_argument(
            "-o", "--output", default="-", help="predictions CSV to write (default: stdout); never one of the inputs"
        )
        p.add_argument("--id", help="a column of the input carried to the output first, to join predictions back")
        p.add_argument("--keep", default="", help="more input columns to carry to the output, comma-separated")
    else:
        p.add_argument(
            "--split", choices=("test", "val", "train"), default="test", help="split to evaluate (default: test)"
        )
        p.add_argument("--csv", help="evaluate on all rows of this CSV (raw features + target column) instead")
        p.add_argument("-o", "--output", help="also write the metrics JSON here")
        p.add_argument(
            "--importance",
            action="store_true",
            help="permutation importance of each input column (a categorical column as one), also as importance.csv",
        )
        p.add_argument("--repeats", type=int, default=5, help="permutations per column for --importance (default 5)")
        p.add_argument(
            "--importance-csv",
            help="where to write the importance table (default: importance.csv beside the checkpoint)",
        )
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
        write_output(Path(output), text.encode(), what)


def eval_main(argv: list[str] | None = None) -> None:
    """``mlptrain-eval CHECKPOINT [--split S | --csv FILE] [-o metrics.json] [--importance] [overrides]``"""
    args = _parser("mlptrain-eval", False).parse_intermixed_args(argv)

    def body():
        from mlptrain.predict import check_data_fits, checkpoint_path, evaluate, load, read_csv_inputs

        refuse_inputs(args.output, [checkpoint_path(args.checkpoint), args.csv])
        if args.importance:
            refuse_inputs(_importance_path(args), [checkpoint_path(args.checkpoint), args.csv], "--importance-csv")
            if args.repeats < 1:
                raise DataError(f"--repeats {args.repeats}: give 1 or more")
        loaded = load(args.checkpoint, args.overrides)
        dropped = 0
        if args.csv:
            rows = read_csv_inputs(args.csv, loaded, with_target=True)
            dropped = rows.dropped
            if len(rows.refused) > dropped:  # a bad feature cell is an error, as in training
                raise next(DataError(why) for why in rows.refused.values() if not why.endswith(": no target"))
            if dropped:
                print(f"mlptrain-eval: {dropped} row(s) without a target left out, as training does", file=sys.stderr)
            x, y, source = rows.x, rows.y, str(args.csv)
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
        if dropped:
            result["rows_without_target"] = dropped
        if args.importance:
            from mlptrain.importance import format_table, permutation_importance, table_csv

            result["importance"] = permutation_importance(loaded, x, y, args.repeats)
            write_output(_importance_path(args), table_csv(result["importance"]).encode(), "importance table")
            if len(loaded.meta.get("input_shape") or []) == 3:  # an image model: the picture too
                from mlptrain.importance import picture

                png = _importance_path(args).with_suffix(".png")
                write_output(png, picture(result["importance"], loaded.meta), "importance picture")
                print(f"wrote {png}", file=sys.stderr)
        text = json.dumps(result, indent=2) + "\n"
        if args.output:
            _write(args.output, text, "metrics file")
        if args.importance:
            sys.stdout.write(format_table(result["importance"]))
            print(f"wrote {_importance_path(args)}", file=sys.stderr)
        else:
            sys.stdout.write(text)

    _run("mlptrain-eval", body)


def _importance_path(args) -> Path:
    if args.importance_csv:
        return Path(args.importance_csv)
    from mlptrain.predict import checkpoint_path

    return checkpoint_path(args.checkpoint).parent / "importance.csv"


def split_inputs(items: list[str]) -> tuple[list[str], list[str]]:
    """Predict's positional arguments: input files first, then ``key=value`` overrides (an existing
    file whose name has a ``=`` is an input)."""
    inputs = [a for a in items if not OVERRIDE.match(a) or os.path.exists(a)]
    return inputs, [a for a in items if a not in inputs]


def predict_main(argv: list[str] | None = None) -> None:
    """``mlptrain-predict CHECKPOINT INPUT... [-o predictions.csv] [--id COL] [--keep A,B] [overrides]``"""
    args = _parser("mlptrain-predict", True).parse_intermixed_args(argv)

    def body():
        from mlptrain.image_files import image_paths, looks_like_images, read_images
        from mlptrain.predict import checkpoint_path, load, prediction_table, read_csv_inputs

        inputs, overrides = split_inputs(args.inputs)
        if not inputs:
            raise DataError("no input given: a CSV file, '-' for standard input, or image files")
        images = looks_like_images(inputs)
        paths = image_paths(inputs) if images else inputs
        refuse_inputs(args.output, [checkpoint_path(args.checkpoint), *paths])
        carry = [c for c in [args.id, *args.keep.split(",")] if c and c.strip()]
        loaded = load(args.checkpoint, overrides)
        if images:
            if carry:
                raise DataError("--id/--keep carry CSV columns; image predictions start with their file column")
            rows = read_images(paths, loaded.meta)
        else:
            rows = read_csv_inputs(inputs[0], loaded, with_target=False, carry=[c.strip() for c in carry])
        if not rows.accepted and rows.refused:
            raise DataError(f"{rows.first_refusal()}; no row could be predicted")
        cols, out = prediction_table(loaded, rows)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows([[_cell(v) for v in row] for row in out])
        _write(args.output, buf.getvalue(), "predictions file")
        if rows.refused:
            print(
                f"mlptrain-predict: {len(rows.refused)} of {rows.n} row(s) refused, their prediction cells left "
                f"empty (see the error column); the first: {rows.first_refusal()}",
                file=sys.stderr,
            )
        if args.output not in (None, "-"):
            print(f"wrote {len(out)} predictions to {args.output}", file=sys.stderr)

    _run("mlptrain-predict", body)


# the console scripts (mlptrain.quick_exit)
eval_command = console(eval_main)
predict_command = console(predict_main)


def _cell(v):
    return repr(v) if isinstance(v, float) else v

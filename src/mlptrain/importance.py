"""Permutation importance: how much a model's score drops when one input column is shuffled.

For each input column (a one-hot encoded table column as one: its indicator columns are shuffled
together, so the rows keep valid one-hot codes) the rows of that column are permuted, the rest
kept, and the task's main metric (accuracy, RMSE, or NLL for probabilistic heads) recomputed;
the importance is the loss of score, positive when the column helps.  ``repeats`` permutations
per column, seeded by the run's seed, give a mean and a standard deviation.
"""

from __future__ import annotations

import csv
import io
import math

import torch

from mlptrain.inputs import feature_names, is_table
from mlptrain.predict import Loaded, evaluate
from mlptrain.registry import MAXIMISE

# The score a user reads importance in: accuracy, RMSE, or NLL for probabilistic heads (not the monitor,
# which is a loss for every task).
SCORE = {"classification": "acc", "regression": "rmse", "probabilistic": "nll"}


def column_groups(meta: dict) -> list[tuple[str, list[int]]]:
    """Each raw input column and the model inputs it was encoded into."""
    if not is_table(meta):
        return [(name, [i]) for i, name in enumerate(feature_names(meta))]
    groups, start = [], 0
    for col in meta["preprocess"]["columns"]:
        width = 1 if col["kind"] == "numeric" else len(col["categories"])
        groups.append((col["name"], list(range(start, start + width))))
        start += width
    return groups


def permutation_importance(loaded: Loaded, x: torch.Tensor, y: torch.Tensor, repeats: int = 5) -> dict:
    """``{"metric", "baseline", "repeats", "rows", "columns": [{"column", "mean", "std"}, ...]}``, the
    columns sorted from the most important."""
    x = x.reshape(len(x), -1)  # images: (N, C, H, W) -> one column per pixel
    metric = SCORE[loaded.task.kind]
    sign = 1.0 if metric in MAXIMISE else -1.0  # importance = drop in score
    base = evaluate(loaded, x, y)[metric]
    g = torch.Generator().manual_seed(int(loaded.run.seed))
    perms = [torch.randperm(len(x), generator=g) for _ in range(repeats)]
    out = []
    for name, cols in column_groups(loaded.meta):
        drops = []
        for perm in perms:
            xp = x.clone()
            xp[:, cols] = x[perm][:, cols]
            drops.append(sign * (base - evaluate(loaded, xp, y)[metric]))
        mean = sum(drops) / repeats
        std = math.sqrt(sum((d - mean) ** 2 for d in drops) / (repeats - 1)) if repeats > 1 else 0.0
        out.append({"column": name, "mean": mean, "std": std})
    out.sort(key=lambda r: (-r["mean"] if math.isfinite(r["mean"]) else math.inf, r["column"]))
    return {"metric": metric, "baseline": base, "repeats": repeats, "rows": len(y), "columns": out}


def table_csv(result: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["column", f"importance_{result['metric']}_mean", f"importance_{result['metric']}_std"])
    w.writerows([[r["column"], repr(r["mean"]), repr(r["std"])] for r in result["columns"]])
    return buf.getvalue()


def format_table(result: dict, limit: int = 30) -> str:
    """The printed table: the most important columns first (``limit`` of them)."""
    rows = result["columns"]
    width = max([len("column")] + [len(r["column"]) for r in rows[:limit]])
    metric = result["metric"]
    lines = [
        f"permutation importance: drop in {metric} (baseline {result['baseline']:.4f}) when a column is shuffled, "
        f"mean ± std over {result['repeats']} repeats, {result['rows']} rows",
        f"{'column':<{width}}  {'mean':>10}  {'std':>10}",
    ]
    lines += [f"{r['column']:<{width}}  {r['mean']:>10.4f}  {r['std']:>10.4f}" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more column(s) in the CSV")
    return "\n".join(lines) + "\n"


def picture(result: dict, meta: dict, scale: int = 8) -> bytes:
    """An image model's importance per pixel as a grey PNG (white: most important; the channels of a
    colour image summed), ``scale`` times the training size."""
    from PIL import Image

    c, h, w = meta["input_shape"]
    index = {name: i for i, name in enumerate(feature_names(meta))}
    values = torch.zeros(c * h * w, dtype=torch.float64)
    for r in result["columns"]:
        values[index[r["column"]]] = max(r["mean"], 0.0) if math.isfinite(r["mean"]) else 0.0
    grid = values.view(c, h, w).sum(0)
    grid = (grid / grid.max() * 255 if grid.max() > 0 else grid).round().to(torch.uint8)
    img = Image.fromarray(grid.numpy(), mode="L").resize((w * scale, h * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()

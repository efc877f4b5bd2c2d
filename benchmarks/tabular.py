"""mlptrain's defaults against scikit-learn's MLP defaults on scikit-learn's bundled tables (no network).

For every table and seed, one stratified (classification) or plain 70/30 split is written as two CSV
files; both contenders get the same split. scikit-learn fits ``StandardScaler`` + ``MLPClassifier`` /
``MLPRegressor`` with their defaults (``random_state=seed``) on the 70%; mlptrain runs
``mlptrain dataset=csv dataset.path=train.csv dataset.test_path=test.csv dataset.target=y`` with its
defaults (it carves its validation split from the 70% itself). Test accuracy (classification) or R²
(regression) is reported as mean ± std over the seeds, with the median time per fit (in-process, so
start-up is excluded; ``--startup`` times whole processes from the shell, beside a scikit-learn script).

    .venv/bin/pip install -e '.[bench]'   # scikit-learn
    .venv/bin/python benchmarks/tabular.py --seeds 5 --startup

``--set key=value`` adds mlptrain overrides (to try a default before changing it).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

TABLES = {  # name -> (sklearn loader, task)
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "digits": ("load_digits", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}


def write_csv(path: Path, x, y) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*(f"x{i}" for i in range(x.shape[1])), "y"])
        for row, t in zip(x.tolist(), y.tolist()):
            w.writerow([*(repr(v) for v in row), t])


def split(name: str, seed: int, folder: Path):
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    loader, task = TABLES[name]
    x, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    parts = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y if task == "classification" else None)
    x_tr, x_te, y_tr, y_te = parts
    write_csv(folder / "train.csv", x_tr, y_tr)
    write_csv(folder / "test.csv", x_te, y_te)
    return task, x_tr, x_te, y_tr, y_te


def fit_sklearn(task: str, seed: int, x_tr, x_te, y_tr, y_te) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est = MLPClassifier if task == "classification" else MLPRegressor
    model = make_pipeline(StandardScaler(), est(random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_tr, y_tr)
    return float(model.score(x_te, y_te))  # accuracy / R²


def mlptrain_overrides(folder: Path, seed: int, extra: list[str]) -> list[str]:
    return [
        "dataset=csv",
        f"dataset.path={folder / 'train.csv'}",
        f"dataset.test_path={folder / 'test.csv'}",
        "dataset.target=y",
        f"seed={seed}",
        f"dataset.seed={seed}",
        "trainer.progress=none",
        *extra,
    ]


def fit_mlptrain(task: str, folder: Path, seed: int, extra: list[str]) -> float:
    from mlptrain.cli.train import run
    from mlptrain.compose import compose_config

    cfg = compose_config(mlptrain_overrides(folder, seed, extra))
    metrics = run(cfg, folder / f"run{seed}")
    return metrics["test"]["acc" if task == "classification" else "r2"]


def timed(fn, *args):
    t = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - t


def summary(values: list[float], scale: float) -> str:
    m = statistics.fmean(values) * scale
    s = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{m:.3f} ± {s:.3f}" if scale == 1 else f"{m:.1f} ± {s:.1f}"


SKLEARN_SCRIPT = """
import csv, sys, numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
rows = list(csv.reader(open(sys.argv[1])))[1:]
x = np.array([[float(v) for v in r[:-1]] for r in rows]); y = np.array([r[-1] for r in rows])
model = make_pipeline(StandardScaler(), MLPClassifier(random_state=0)).fit(x, y)
print(model.score(x, y))
"""


def startup(extra: list[str], repeats: int) -> None:
    """Whole processes from the shell on a 344-row table (the first 344 rows of breast_cancer)."""
    import sklearn.datasets

    x, y = sklearn.datasets.load_breast_cancer(return_X_y=True)
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        write_csv(folder / "t.csv", x[:344], y[:344])
        # Bytecode cached, as after an install: with PYTHONDONTWRITEBYTECODE set, an editable checkout
        # recompiles its ~60 modules in every process (~0.1 s), which no installed package does.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"OMP_NUM_THREADS": "1"}
        ours = [sys.executable, "-m", "mlptrain", "dataset=csv", f"dataset.path={folder / 't.csv'}", "dataset.target=y"]
        theirs = [sys.executable, "-c", SKLEARN_SCRIPT, str(folder / "t.csv")]
        times: dict[str, list[float]] = {"mlptrain": [], "scikit-learn": []}
        for i in range(repeats):
            run = [*ours, "trainer.progress=none", f"hydra.run.dir={folder / f'run{i}'}", *extra]
            for name, cmd in (("mlptrain", run), ("scikit-learn", theirs)):
                t = time.perf_counter()
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=folder)
                times[name].append(time.perf_counter() - t)
                if r.returncode:
                    sys.exit(f"{name} failed: {r.stderr.strip()[-2000:]}")
        m, s = (statistics.median(times[k]) for k in ("mlptrain", "scikit-learn"))
        print(
            f"\nstart-up, a 344-row table from the shell (median of {repeats}): mlptrain {m:.2f} s, "
            f"scikit-learn script {s:.2f} s, ratio {m / s:.2f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--tables", default=",".join(TABLES))
    p.add_argument("--set", action="append", default=[], help="an mlptrain override (repeatable)")
    p.add_argument("--startup", action="store_true", help="also time whole processes from the shell")
    p.add_argument("--repeats", type=int, default=5, help="--startup: processes per contender")
    args = p.parse_args()
    logging.disable(logging.WARNING)  # mlptrain's per-run info lines
    import torch

    torch.set_num_threads(1)
    extra = ["trainer.num_threads=1", *args.set]
    print(
        f"{'table':14} {'task':7} {'rows':>5}  {'mlptrain':>15} {'scikit-learn':>15}  {'diff':>6}"
        f"  {'s/fit ours':>10} {'s/fit sk':>8}"
    )
    for name in filter(None, args.tables.split(",")):  # --tables= : the start-up timing alone
        ours, theirs, t_ours, t_theirs = [], [], [], []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as d:
                task, *data = split(name, seed, Path(d))
                v, t = timed(fit_mlptrain, task, Path(d), seed, extra)
                ours.append(v)
                t_ours.append(t)
                v, t = timed(fit_sklearn, task, seed, *data)
                theirs.append(v)
                t_theirs.append(t)
        scale = 100.0 if task == "classification" else 1.0
        diff = (statistics.fmean(ours) - statistics.fmean(theirs)) * scale
        rows = len(data[0]) + len(data[1])
        print(
            f"{name:14} {task[:7]:7} {rows:5}  {summary(ours, scale):>15} {summary(theirs, scale):>15}  "
            f"{diff:+6.2f}  {statistics.median(t_ours):10.2f} {statistics.median(t_theirs):8.2f}",
            flush=True,
        )
    print(
        "accuracy in % (classification), R² (regression): mean ± std over seeds 0.."
        f"{args.seeds - 1}; diff = mlptrain - scikit-learn"
    )
    if args.startup:
        startup(args.set, args.repeats)


if __name__ == "__main__":
    main()

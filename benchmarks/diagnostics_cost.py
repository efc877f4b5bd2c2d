"""What the diagnostics (TensorBoard's pictures, histograms, gradient norms, dead ReLUs) cost a run
and an 8-job sweep, measured inside real runs at the default frequencies.

Each repeat is a fresh process that trains --jobs runs of a case one after the other (seeds 0, 1, ...),
as an in-process sweep does, with ``Trainer.fit``: the diagnostics time themselves
(``Diagnostics.seconds``, every call of theirs, the first-call imports included) against the run's
``fit`` wall time in the same process.  ``per run`` is the first job of a process (a run from the shell,
paying the one-off costs); ``per sweep`` is all of them.  Then, in this process, the parts: one
training epoch, one round of pictures, of histograms (with the scalars) and of the scalars alone, each
as a ratio of the epoch; and the counting hooks' cost to an epoch and its validation pass (armed for
the validation or not, interleaved).  Medians of --repeats.

    python benchmarks/diagnostics_cost.py [--repeats 3] [--jobs 8] [--threads 1] [--cases images]
    MLPTRAIN_DATA=/work/data python benchmarks/diagnostics_cost.py --cases MNIST   # genuine MNIST too

Point PYTHONPATH at another checkout's src/ to measure its code the same way (the "before").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _reference import median_s

CASES = {
    # name: overrides (the image case swaps in MNIST-sized synthetic images, see image_bundle)
    "spirals (default run)": [],
    "sine, gaussian_nll": ["dataset=sine", "loss=gaussian_nll"],
    "28x28 images, 5 epochs": ["model.hidden=[256,256]", "trainer.epochs=5"],
}
MNIST_RAW = Path(os.environ.get("MLPTRAIN_DATA", "~/.cache/mlptrain")).expanduser() / "MNIST" / "raw"
if MNIST_RAW.is_dir():  # genuine MNIST at hand ($MLPTRAIN_DATA): bench_mnist.py's short sweep job
    CASES["MNIST [64], 50 steps"] = [
        "dataset=mnist",
        "dataset.download=false",
        f"dataset.data_dir={MNIST_RAW.parent.parent}",
        "model.hidden=[64]",
        "trainer.max_steps=50",
    ]


def image_bundle(n_train: int = 6000, n_eval: int = 1000):
    """MNIST-shaped uint8 images with a learnable signal (class = brightest quadrant + noise)."""
    import torch

    from mlptrain.data import DataBundle
    from mlptrain.data.bundle import standardisation

    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.rand(n, 1, 28, 28, generator=g) * 120
        r, c = (y % 4) // 2 * 14, (y % 2) * 14
        for i in range(n):
            x[i, 0, r[i] : r[i] + 14, c[i] : c[i] + 14] += 40 + 10 * (y[i] // 4)
        return x.clamp(0, 255).to(torch.uint8), y

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(n_eval), split(n_eval)
    mean, std = standardisation(xt.flatten(1).float())
    names = [str(i) for i in range(10)]
    return DataBundle(
        "images", "classification", xt, yt, xv, yv, xs, ys, mean, std, class_names=names, input_shape=(1, 28, 28)
    )


def trainer_for(name: str, out: Path, extra=()):
    from hydra import compose, initialize_config_module

    from mlptrain.config import parse
    from mlptrain.training import Trainer

    with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*CASES[name], *extra, "trainer.progress=none"])
    return Trainer(parse(cfg), out, data=image_bundle() if "images" in name else None)


def child(name: str, jobs: int, threads: int) -> None:
    """One process: ``jobs`` runs of ``name``; prints their (diagnostics s, fit s) as one JSON line."""
    import torch

    torch.set_num_threads(threads)
    rows = []
    for seed in range(jobs):
        with tempfile.TemporaryDirectory() as tmp:
            trainer = trainer_for(name, Path(tmp), [f"seed={seed}", f"trainer.num_threads={threads}"])
            t0 = time.perf_counter()
            trainer.fit()
            fit = time.perf_counter() - t0
            diag = trainer.outputs.diagnostics
            rows.append((diag.seconds if diag else 0.0, fit))
    print("RESULT " + json.dumps(rows), flush=True)


def parts(name: str, repeats: int) -> dict:
    """Per-round costs in this process, and the hooks' cost to an epoch with its validation."""
    from mlptrain.diagnostics import Diagnostics
    from mlptrain.loggers.tensorboard import TensorBoard
    from mlptrain.progress import Progress

    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(name, Path(tmp))
        tb = TensorBoard(Path(tmp))
        diag = Diagnostics(trainer, tb)
        progress = Progress("none", 1)

        def epoch():
            trainer.train_epoch(progress)
            trainer.outputs_of(trainer.val[0])

        out = {"epoch": median_s(epoch, repeats, warmup=True)}
        out["pictures"] = median_s(lambda: diag.pictures(1), repeats, warmup=True)
        out["histograms"] = median_s(lambda: diag.inside(1), repeats, warmup=True)
        out["scalars"] = median_s(lambda: diag.inside(1, histograms=False), repeats, warmup=True)
        if hasattr(diag, "before_validation"):  # armed for the validation pass (or not), interleaved
            armed, bare = [], []

            def counted():
                trainer.train_epoch(progress)
                diag.before_validation()
                trainer.outputs_of(trainer.val[0])
                diag._disarm()

            for _ in range(repeats):
                armed.append(median_s(counted, 1))
                bare.append(median_s(epoch, 1))
            out["hooks"] = statistics.median(a / b for a, b in zip(armed, bare)) - 1
        tb.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=8, help="runs per process (the sweep)")
    ap.add_argument("--cases", default="", help="only the cases whose name contains this")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.jobs, args.threads)

    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), medians of {args.repeats}, {args.jobs}-job sweeps")
    print(
        f"{'case':24} {'fit s':>6} {'diag s/run':>10} {'per run':>8} {'diag s/sweep':>12} {'per sweep':>9}"
        f" | {'epoch ms':>8} {'pictures':>9} {'histograms':>10} {'scalars':>8} {'hooks':>6}"
    )
    for name in [c for c in CASES if args.cases in c]:
        runs, sweeps, first_s, sweep_s, fit_s = [], [], [], [], []
        for _ in range(args.repeats):
            cmd = [sys.executable, __file__, "--child", name, "--jobs", str(args.jobs), "--threads", str(args.threads)]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])
            (d1, f1), diag, fit = rows[0], sum(d for d, _ in rows), sum(f for _, f in rows)
            runs.append(d1 / f1)
            sweeps.append(diag / fit)
            first_s.append(d1)
            sweep_s.append(diag)
            fit_s.append(f1)
        p = parts(name, max(3, args.repeats))
        med = statistics.median
        e = p["epoch"]
        hooks = f"{p['hooks']:6.1%}" if "hooks" in p else f"{'-':>6}"
        print(
            f"{name:24} {med(fit_s):6.2f} {med(first_s):10.3f} {med(runs):8.1%} {med(sweep_s):12.3f} {med(sweeps):9.1%}"
            f" | {e * 1e3:8.1f} {p['pictures'] / e:8.2f}x {p['histograms'] / e:9.2f}x {p['scalars'] / e:7.2f}x {hooks}"
        )


if __name__ == "__main__":
    main()

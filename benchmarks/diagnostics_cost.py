"""What TensorBoard pictures and histograms cost, next to the training epoch they follow.

For a few representative runs, times (medians of --repeats) one training epoch, one round of
pictures (``trainer.image_every_n_epochs``), one round of the look inside the network with its
histograms (``trainer.histogram_every_n_epochs``) and one without them (the grad-norm and dead-ReLU
scalars, logged every epoch), and prints each as a ratio of the epoch time, plus the overhead those
add to a whole run's training time at the configured (or --every) frequency: ``scalars at 2`` as
before (the scalars with the histograms only), ``now`` with the scalars about 10 times a run, and the seconds that adds
per run and per 8-job sweep (8 such runs).

    python benchmarks/diagnostics_cost.py [--threads 1] [--repeats 5] [--every N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

CASES = {
    # name: overrides (the image case swaps in MNIST-sized synthetic images, see image_bundle)
    "spirals (default run)": [],
    "sine, gaussian_nll": ["dataset=sine", "loss=gaussian_nll"],
    "28x28 images, 10 classes": ["model.hidden=[256,256]"],
}


def image_bundle(n_train: int = 12000, n_eval: int = 2000):
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
    return DataBundle(
        "images",
        "classification",
        xt,
        yt,
        xv,
        yv,
        xs,
        ys,
        mean,
        std,
        class_names=[str(i) for i in range(10)],
        input_shape=(1, 28, 28),
    )


def rounds(every: int, epochs: int, extra: int) -> int:
    """How many times a diagnostic runs in a run of ``epochs`` (see mlptrain.diagnostics)."""
    if every < 0:
        return 0
    due = epochs // every + (epochs % every > 0) if every > 0 else 1
    return due + extra


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (first-call imports, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--every",
        type=int,
        default=None,
        help="frequency for the whole-run overhead (trainer.*_every_n_epochs); default: the config's",
    )
    args = ap.parse_args()

    import torch
    from hydra import compose, initialize_config_module

    from mlptrain.config import parse
    from mlptrain.diagnostics import Diagnostics
    from mlptrain.loggers.tensorboard import TensorBoard
    from mlptrain.progress import Progress
    from mlptrain.train import Trainer

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), medians of {args.repeats}")
    print(
        f"{'case':28} {'epoch s':>8} {'pictures s':>11} {'ratio':>6} {'inside s':>9} {'ratio':>6} {'scalars s':>10}"
        f" {'ratio':>6} {'scalars at 2':>13} {'now':>12} {'s/run':>7} {'s/8 jobs':>9}"
    )
    for name, overrides in CASES.items():
        with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*overrides, "trainer.progress=none"])
        run = parse(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            data = image_bundle() if "images" in name else None
            trainer = Trainer(run, Path(tmp), data=data)
            tb = TensorBoard(Path(tmp))
            diag = Diagnostics(trainer, tb)
            progress = Progress("none", 1)
            epoch = median_time(lambda: trainer.train_epoch(progress), args.repeats)
            pictures = median_time(lambda: diag.pictures(1), args.repeats)
            inside = median_time(lambda: diag.inside(1), args.repeats)
            scalars = median_time(lambda: diag.inside(1, histograms=False), args.repeats)
            tb.close()
        t = run.trainer
        every_pic = args.every if args.every is not None else t.image_every_n_epochs
        every_in = args.every if args.every is not None else t.histogram_every_n_epochs
        # Whole-run cost: pictures at each due epoch plus the test split's (counted as a full round),
        # the look inside at each due epoch plus once before training.
        pics = rounds(every_pic, t.epochs, 1) * pictures
        hist = rounds(every_in, t.epochs, 1)
        before = (pics + hist * inside) / (t.epochs * epoch)
        from mlptrain.diagnostics import SCALAR_POINTS

        scalar_rounds = rounds(max(1, t.epochs // SCALAR_POINTS), t.epochs, 1) if every_in >= 0 else 0
        added = max(0, scalar_rounds - hist) * scalars  # the scalars' rounds without histograms
        after = (pics + hist * inside + added) / (t.epochs * epoch)
        print(
            f"{name:28} {epoch:8.4f} {pictures:11.4f} {pictures / epoch:6.2f} {inside:9.4f} "
            f"{inside / epoch:6.2f} {scalars:10.4f} {scalars / epoch:6.2f} {before:12.1%} {after:11.1%}"
            f" {added:7.3f} {8 * added:9.3f}"
        )


if __name__ == "__main__":
    main()

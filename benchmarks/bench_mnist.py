"""mlptrain against hand-written PyTorch on MNIST: one command, interleaved rounds, medians and ratios.

Contenders, each run as its own process, in rotating order within every round (A B C, B C A, ...),
so that a machine whose load drifts hurts them alike:

  (a) bare        benchmarks/bare_loop.py: preloaded tensors, a hand-written loop
  (b) dataloader  benchmarks/dataloader_loop.py: torchvision ToTensor/Normalize + DataLoader (num_workers=0)
  (c) mlptrain    mlptrain dataset=mnist model.hidden=[512,512] trainer.batch_size=128 optim=adam ...
                  with its default logging (TensorBoard, checkpoints, metrics.json, an epoch line)

Task: MLP 784-512-512-10, ReLU, cross-entropy, Adam lr 1e-3, fp32, then one test evaluation.
Printed: per-epoch training time (normalised to 60 000 samples, as mlptrain holds 10% out for
validation), whole-process wall time, peak RSS, achieved GFLOP/s against a matmul peak measured in
the same rounds, and the paired per-round ratios c/a and c/b.  Also ``mlptrain --help`` and an
in-process multirun of 8 short jobs against one, and the issue's targets with PASS/MISS.

Uses genuine MNIST from --data-dir (default $MLPTRAIN_DATA, else ~/.cache/mlptrain) when its
four IDX files are in <data-dir>/MNIST/raw/, otherwise writes an MNIST-shaped synthetic set in the
same format to a temporary folder (it says which).  Nothing is downloaded.

    python benchmarks/bench_mnist.py                       # CPU, batch 128, 5 rounds
    python benchmarks/bench_mnist.py --device cuda         # GPU-resident data, batch 128 and 1024
    python benchmarks/bench_mnist.py --scaling             # epoch time vs width and batch size
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SAMPLES = 60_000  # per-epoch times are reported per 60 000 training samples
TARGETS = {"epoch": 0.9, "process": 1.0, "help_s": 1.0, "multirun": 1.5, "rss_mb": 150}


# ----------------------------------------------------------------------------- data
def find_mnist(data_dir: str) -> bool:
    raw = Path(data_dir) / "MNIST" / "raw"
    return all((raw / f).is_file() for f in MNIST_FILES)


def write_synthetic_mnist(root: Path, seed: int = 0) -> None:
    """60 000 + 10 000 28x28 uint8 images in MNIST's IDX files: ten blurred random prototypes plus
    noise, so the task is learnable and every loader reads it exactly as it reads MNIST."""
    import numpy as np

    rng = np.random.default_rng(seed)
    protos = rng.random((10, 28, 28)) ** 3
    for _ in range(2):  # a cheap blur: average with shifted copies
        protos = (protos + np.roll(protos, 1, 1) + np.roll(protos, 1, 2) + np.roll(protos, -1, 1)) / 4
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.clip(protos[labels] * 255 * 1.5 + rng.normal(0, 40, (n, 28, 28)), 0, 255).astype(np.uint8)
        for kind, arr, magic in (("images-idx3", images, 0x803), ("labels-idx1", labels, 0x801)):
            header = np.array([magic, *arr.shape], dtype=">i4").tobytes()
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(header + arr.tobytes())


# ----------------------------------------------------------------------------- measuring
def flops_per_sample(sizes: list[int]) -> float:
    """Matmul FLOPs of one training sample: forward 2mn per layer, backward twice that, except the
    input gradient of the first layer, which autograd skips."""
    layers = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 6 * sum(layers) - 2 * layers[0]


def matmul_peak(device: str) -> float:
    """Best-of fp32 GFLOP/s of one large square ``torch.mm`` on ``device``, with torch's default threads."""
    import torch

    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = math.inf
    for _ in range(4):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_process(cmd: list[str], cwd: Path, timeout: float = 1800) -> dict:
    """Run ``cmd``; its wall time, CPU time and peak RSS (from wait4) and its output.  On a shared
    machine CPU time is the steadier measure of work done; wall time is what a user waits."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.kill()
            raise
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "stdout": stdout,
        "stderr": stderr,
    }


def mlptrain_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("mlptrain")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "mlptrain"]


class Contender:
    """One way of doing the task: how to run it and where its epoch times come from."""

    def __init__(self, key: str, label: str, kind: str, extra: tuple[str, ...] = ()):
        self.key, self.label, self.kind, self.extra = key, label, kind, extra
        self.runs: list[dict] = []

    def command(self, args, batch: int, run_dir: Path) -> list[str]:
        if self.kind == "mlptrain":
            return [
                *mlptrain_cmd(),
                "dataset=mnist",
                f"dataset.data_dir={args.data_dir}",
                "dataset.download=false",
                f"model.hidden=[{args.hidden}]",
                f"trainer.batch_size={batch}",
                "optim=adam",
                "optim.lr=0.001",
                "scheduler=none",  # the bare loop's constant lr
                f"trainer.epochs={args.epochs}",
                f"trainer.device={args.device}",
                f"hydra.run.dir={run_dir}",
                *self.extra,
            ]
        script = HERE / ("bare_loop.py" if self.kind == "bare" else "dataloader_loop.py")
        return [
            sys.executable,
            str(script),
            "--data-dir",
            args.data_dir,
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(batch),
            "--hidden",
            args.hidden,
            "--device",
            args.device,
        ]

    def run(self, args, batch: int, work: Path) -> None:
        run_dir = work / f"{self.key}-{batch}-{len(self.runs)}"
        r = run_process(self.command(args, batch, run_dir), cwd=work)
        if self.kind == "mlptrain":
            m = json.loads((run_dir / "metrics.json").read_text())
            times = [row["time_s"] for row in m["history"]]
            samples = [row["samples_per_s"] * row["time_s"] for row in m["history"]]
            acc = m["test"].get("acc")
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            line = next(ln for ln in reversed(r["stdout"].splitlines()) if ln.startswith("RESULT "))
            res = json.loads(line[7:])
            times, samples, acc = res["epoch_times"], res["epoch_samples"], res["test_acc"]
        # Steady state: with several epochs the first (warm-up) is left out of the per-epoch figure.
        keep = slice(1, None) if len(times) > 1 else slice(None)
        per_60k = [t / s * SAMPLES for t, s in zip(times[keep], samples[keep])]
        self.runs.append(
            {
                "wall": r["wall"],
                "cpu": r["cpu"],
                "rss_mb": r["rss_mb"],
                "epoch": statistics.median(per_60k),
                "acc": acc,
                "train_s": sum(times),
            }
        )


# ----------------------------------------------------------------------------- reporting
def fmt_stats(xs: list[float], digits: int = 2) -> str:
    return f"{statistics.median(xs):.{digits}f} [{min(xs):.{digits}f}-{max(xs):.{digits}f}]"


def paired(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b)]


def verdict(value: float, limit: float, lower_is_better: bool = True) -> str:
    ok = value <= limit if lower_is_better else value >= limit
    return "PASS" if ok else f"MISS by {100 * (value / limit - 1):.0f}%"


def report_main(contenders: list[Contender], args, batch: int, peak: list[float]) -> dict:
    fps = flops_per_sample([784, *map(int, args.hidden.split(",")), 10])
    pk = statistics.median(peak)
    print(
        f"\n== batch {batch}: {args.rounds} rounds, {args.epochs} epoch(s) per process "
        f"({'epochs 2+ per process' if args.epochs > 1 else 'epoch 1'} for the per-epoch figure)"
    )
    print(
        f"{'':22} {'epoch s/60k samples':>24} {'GFLOP/s':>8} {'%peak':>6}   {'process wall s':>22}"
        f" {'CPU s':>6} {'overhead s':>10} {'peak RSS MB':>12} {'test acc':>8}"
    )
    for c in contenders:
        ep = [r["epoch"] for r in c.runs]
        gf = fps * SAMPLES / statistics.median(ep) / 1e9
        walls = [r["wall"] for r in c.runs]
        over = statistics.median([r["wall"] - r["train_s"] for r in c.runs])
        rss = statistics.median([r["rss_mb"] for r in c.runs])
        acc = statistics.median([r["acc"] for r in c.runs if r["acc"] is not None] or [math.nan])
        cpu = statistics.median([r["cpu"] for r in c.runs])
        print(
            f"{'(' + c.key + ')':8} {c.label:13} {fmt_stats(ep):>24} {gf:8.1f} {100 * gf / pk:5.0f}%"
            f"   {fmt_stats(walls):>22} {cpu:6.1f} {over:10.2f} {rss:12.0f} {acc:8.4f}"
        )
    by = {c.key: c for c in contenders}
    out = {}
    print("ratios (median [min-max] of the per-round ratios):")
    for num in [k for k in by if k.startswith("c")]:
        for den in [k for k in ("a", "b") if k in by]:  # b is absent with --skip dataloader
            for what, name in (("epoch", "per epoch"), ("wall", "whole process"), ("cpu", "process CPU")):
                r = paired([x[what] for x in by[num].runs], [x[what] for x in by[den].runs])
                out[f"{num}/{den} {what}"] = statistics.median(r)
                print(f"  {num}/{den} {name:14} {fmt_stats(r)}")
    out["rss_delta"] = statistics.median([r["rss_mb"] for r in by["c"].runs]) - statistics.median(
        [r["rss_mb"] for r in by["a"].runs]
    )
    return out


# ----------------------------------------------------------------------------- extras
def time_help(args, work: Path) -> tuple[list[float], list[float]]:
    runs = [run_process([*mlptrain_cmd(), "--help"], cwd=work) for _ in range(args.rounds)]
    return [r["wall"] for r in runs], [r["cpu"] for r in runs]


SHORT_JOBS = {
    # MNIST from the data dir (the dataset is loaded once per process), a small model, 50 steps + val/test
    "mnist": ["dataset=mnist", "dataset.download=false", "model.hidden=[64]", "trainer.max_steps=50"],
    # the default toy set and model, 10 steps: almost nothing but the per-job cost of a sweep
    "tiny": ["trainer.max_steps=10"],
}


def time_multirun(args, work: Path, kind: str) -> dict[str, list[float]]:
    """One short job as a process, against a multirun of 8 such jobs in one process (Hydra's basic
    launcher runs them in-process: torch, the CLI and the dataset are loaded once)."""
    short = [*SHORT_JOBS[kind], "trainer.progress=none", f"trainer.device={args.device}", *args.multirun_extra.split()]
    if kind == "mnist":
        short.append(f"dataset.data_dir={args.data_dir}")
    out: dict[str, list[float]] = {"one": [], "eight": [], "one_cpu": [], "eight_cpu": []}
    for r in range(args.rounds):
        d = work / f"mr{r}"
        runs = [
            ("one", [*short, f"hydra.run.dir={d}/one"]),
            ("eight", ["-m", *short, "seed=0,1,2,3,4,5,6,7", f"hydra.sweep.dir={d}/eight"]),
        ]
        for key, extra in runs if r % 2 == 0 else runs[::-1]:
            res = run_process([*mlptrain_cmd(), *extra], work)
            out[key].append(res["wall"])
            out[key + "_cpu"].append(res["cpu"])
        shutil.rmtree(d, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------- scaling
def scaling(args, work: Path) -> None:
    """In-process epoch-fraction timings: mlptrain's training step against the bare loop's, across
    widths (784-w-w-10, batch 128) and batch sizes (width 512), each point a fixed FLOP budget."""
    import torch

    sys.path.insert(0, str(HERE))
    from hydra import compose, initialize_config_module

    from _reference import mlp
    from bare_loop import train_steps
    from mlptrain.config import parse
    from mlptrain.data import load_dataset
    from mlptrain.progress import Progress
    from mlptrain.training import Trainer

    device = args.device
    overrides = [
        "dataset=mnist",
        f"dataset.data_dir={args.data_dir}",
        "dataset.download=false",
        "optim=adam",
        "optim.lr=0.001",
        "scheduler=none",
        "trainer.progress=none",
        "trainer.checkpoint=false",
        f"trainer.device={device}",
    ]
    with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
        data = load_dataset(parse(compose(config_name="config", overrides=overrides)).dataset)
    x = data.x_train.flatten(1).float().sub_(data.x_mean.flatten()).div_(data.x_std.flatten()).to(device)
    y = data.y_train.to(device)
    peak = matmul_peak(device)
    print(
        f"\n== scaling: mlptrain's train_epoch vs the bare loop, in-process, {args.budget:g} GFLOP per timing "
        f"(min 4 steps); times: medians of {args.rounds} interleaved pairs; c/a: median of the pairs' ratios, "
        f"best/best: fastest against fastest; matmul peak {peak:.0f} GFLOP/s"
    )
    print(
        f"{'width':>6} {'batch':>6} {'steps':>6} {'bare ms/step':>13} {'mlptrain ms/step':>17} {'c/a':>6}"
        f" {'best/best':>9} {'bare GFLOP/s':>13} {'%peak':>6}"
    )
    points = [(w, 128) for w in (256, 512, 1024, 2048, 4096)] + [(512, b) for b in (32, 64, 256, 512, 1024, 2048, 4096)]
    for width, batch in points:
        fps = flops_per_sample([784, width, width, 10])
        steps = max(4, min(len(x) // batch, round(args.budget * 1e9 / fps / batch)))
        with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
            cfg = compose(
                config_name="config",
                overrides=[
                    *overrides,
                    f"model.hidden=[{width},{width}]",
                    f"trainer.batch_size={batch}",
                    f"trainer.max_steps={steps}",
                ],
            )
        trainer = Trainer(parse(cfg), work, data=data)
        torch.manual_seed(0)
        model = mlp(f"{width},{width}").to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        progress = Progress("none", 1)

        def bare():
            order = torch.randperm(len(x), device=device)[: steps * batch]
            _sync(device)
            t = time.perf_counter()
            train_steps(model, opt, x, y, order, batch)
            _sync(device)
            return time.perf_counter() - t

        def ours():
            trainer.state.step = 0
            _sync(device)
            t = time.perf_counter()
            trainer.train_epoch(progress)  # ends by reading its loss back: synchronised
            return time.perf_counter() - t

        bare(), ours()  # warm-up
        a, c = [], []
        for r in range(args.rounds):
            for f, acc in ((bare, a), (ours, c)) if r % 2 == 0 else ((ours, c), (bare, a)):
                acc.append(f())
        ma, mc = statistics.median(a), statistics.median(c)
        gf = fps * steps * batch / ma / 1e9
        print(
            f"{width:6} {batch:6} {steps:6} {1e3 * ma / steps:13.2f} {1e3 * mc / steps:17.2f}"
            f" {statistics.median(paired(c, a)):6.2f} {min(c) / min(a):9.2f} {gf:13.1f} {100 * gf / peak:5.0f}%",
            flush=True,
        )


# ----------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", default=os.environ.get("MLPTRAIN_DATA", os.path.expanduser("~/.cache/mlptrain")))
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", default=None, help="comma-separated (default: 128 on cpu, 128,1024 on cuda)")
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--epochs", type=int, default=1, help="epochs per process (the whole-process target is for 1)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="OMP_NUM_THREADS for every contender (default: torch's choice, one per core); 1 behaves "
        "far better on a machine shared with other jobs",
    )
    p.add_argument("--variants", default="", help="extra mlptrain contenders: bf16, fp16, compile (comma-separated)")
    p.add_argument("--skip", default="", help="skip parts: main, dataloader, help, multirun (comma-separated)")
    p.add_argument(
        "--multirun-extra",
        default="",
        help="overrides added to both multirun short jobs (space-separated), e.g. to see what the pictures cost: "
        "'trainer.image_every_n_epochs=-1 trainer.histogram_every_n_epochs=-1'",
    )
    p.add_argument("--scaling", action="store_true", help="only the width and batch-size scaling curve")
    p.add_argument("--budget", type=float, default=15.0, help="--scaling: GFLOP per timing (default 15)")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by every contender, read by torch at import

    import torch

    work = Path(tempfile.mkdtemp(prefix="mlptrain-bench-"))
    try:
        if find_mnist(args.data_dir):
            source = f"genuine MNIST from {Path(args.data_dir) / 'MNIST' / 'raw'}"
        else:
            source = f"SYNTHETIC MNIST-shaped set (no MNIST IDX files in {Path(args.data_dir) / 'MNIST' / 'raw'})"
            args.data_dir = str(work / "data")
            write_synthetic_mnist(Path(args.data_dir))
        print(f"mlptrain benchmark: MLP 784-{args.hidden.replace(',', '-')}-10, Adam lr 1e-3, fp32 | data: {source}")
        print(
            f"torch {torch.__version__} on {args.device} | {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
            + (f" | {torch.cuda.get_device_name(args.device)}" if args.device.startswith("cuda") else "")
            + f" | load average {os.getloadavg()[0]:.1f} at start"
        )
        if args.scaling:
            scaling(args, work)
            return
        batches = [int(b) for b in (args.batch_size or ("128" if args.device == "cpu" else "128,1024")).split(",")]
        results = {}
        if "main" not in skip:
            for batch in batches:
                contenders = [Contender("a", "bare loop", "bare"), Contender("c", "mlptrain", "mlptrain")]
                if "dataloader" not in skip:
                    contenders.insert(1, Contender("b", "DataLoader loop", "dataloader"))
                for v in filter(None, args.variants.split(",")):
                    extra = ("trainer.compile=true",) if v == "compile" else (f"trainer.precision={v}",)
                    contenders.append(Contender(f"c_{v}", f"mlptrain {v}", "mlptrain", extra))
                peak = []
                for r in range(args.rounds):
                    peak.append(matmul_peak(args.device))
                    k = r % len(contenders)
                    for c in contenders[k:] + contenders[:k]:
                        c.run(args, batch, work)
                    print(f"  round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.1f})", flush=True)
                print(f"matmul peak (fp32 torch.mm, median of rounds): {statistics.median(peak):.0f} GFLOP/s")
                results[batch] = report_main(contenders, args, batch, peak)
        print()
        if "help" not in skip:
            wall, cpu = time_help(args, work)
            results["help"] = statistics.median(wall)
            print(f"mlptrain --help: wall {fmt_stats(wall)} s, CPU {fmt_stats(cpu)} s")
        if "multirun" not in skip:
            for kind in SHORT_JOBS:
                m = time_multirun(args, work, kind)
                ratio, cpu_ratio = paired(m["eight"], m["one"]), paired(m["eight_cpu"], m["one_cpu"])
                extra = [(e - o) / 7 for e, o in zip(m["eight"], m["one"])]  # what each further job adds
                results[f"multirun {kind}"] = statistics.median(ratio)
                print(
                    f"multirun, {kind} short job ({' '.join(SHORT_JOBS[kind])}): one job {fmt_stats(m['one'])} s, "
                    f"-m seed=0..7 (8 jobs, one process) {fmt_stats(m['eight'])} s; ratio wall "
                    f"{fmt_stats(ratio)}, CPU {fmt_stats(cpu_ratio)}; each extra job {fmt_stats(extra)} s"
                )
        print_targets(results, batches[0], args.epochs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_targets(results: dict, batch: int, epochs: int) -> None:
    print("\ntargets (issue 9):")
    main = results.get(batch)
    if main:
        print(
            f"  per-epoch time c/a <= {TARGETS['epoch']}: {main['c/a epoch']:.2f}  "
            f"{verdict(main['c/a epoch'], TARGETS['epoch'])}"
        )
        note = "" if epochs == 1 else f" (measured with {epochs} epochs; the target is for 1)"
        print(
            f"  whole process c/a <= {TARGETS['process']}: {main['c/a wall']:.2f}  "
            f"{verdict(main['c/a wall'], TARGETS['process'])}{note} (CPU time c/a {main['c/a cpu']:.2f})"
        )
        print(
            f"  peak RSS <= bare + {TARGETS['rss_mb']} MB: {main['rss_delta']:+.0f} MB  "
            f"{verdict(main['rss_delta'], TARGETS['rss_mb'])}"
        )
    if "help" in results:
        print(
            f"  mlptrain --help < {TARGETS['help_s']} s: {results['help']:.2f} s  "
            f"{verdict(results['help'], TARGETS['help_s'])}"
        )
    for kind in SHORT_JOBS:
        if f"multirun {kind}" in results:
            r = results[f"multirun {kind}"]
            print(
                f"  8-job multirun ({kind}) <= {TARGETS['multirun']}x one job: {r:.2f}x  "
                f"{verdict(r, TARGETS['multirun'])}"
            )


if __name__ == "__main__":
    main()

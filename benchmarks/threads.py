"""trainer.num_threads=auto against fixed thread counts, on a quiet machine and under background load.

Each setting trains the same run (MNIST 784-256-256-10 with $MLPTRAIN_DATA, else 2-D spirals through the
same-sized MLP) for --steps optimizer steps in a fresh `mlptrain` process and reads its training time from
metrics.json (start-up excluded).  Background load: one busy-looping process per usable core.  Reported
per load: the median training time of each setting and its ratio to one thread (lower is better), and
the count auto chose.  Run it on a machine of its own:  /work/heavy --exclusive .venv/bin/python
benchmarks/threads.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train(threads: str, steps: int, data: list[str], out: Path) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    args = [
        *data,
        "model.hidden=[256,256]",
        f"trainer.num_threads={threads}",
        f"trainer.max_steps={steps}",
        "trainer.loggers=[]",
        "trainer.checkpoint=false",
        "trainer.progress=none",
        f"hydra.run.dir={out}",
    ]
    subprocess.run([sys.executable, "-m", "mlptrain", *args], env=env, check=True, capture_output=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics["train_time_s"], metrics["runtime"]["torch_threads"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    data_dir = os.environ.get("MLPTRAIN_DATA")
    data = (
        ["dataset=mnist", "dataset.download=false"]
        if data_dir and Path(data_dir, "MNIST", "raw").is_dir()
        else ["dataset=spirals", "dataset.n_samples=20000"]
    )
    settings = ["1", str(cores), "auto"] if cores > 1 else ["1", "auto"]
    print(f"{data[0]}, {a.steps} steps, {cores} usable cores, median of {a.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        for load in ("quiet", "loaded"):
            busy = []
            if load == "loaded":
                loop = [sys.executable, "-c", "while True: pass"]
                busy = [subprocess.Popen(loop) for _ in range(cores)]
            try:
                times: dict[str, list[float]] = {s: [] for s in settings}
                chosen = {}
                for r in range(a.repeats):
                    for s in settings:  # interleaved: a drift in the machine's speed hits each setting alike
                        t, chosen[s] = train(s, a.steps, data, Path(tmp, f"{load}-{s}-{r}"))
                        times[s].append(t)
            finally:
                for b in busy:
                    b.kill()
                    b.wait()
            ref = statistics.median(times["1"])
            for s in settings:
                m = statistics.median(times[s])
                print(
                    f"{load:7s} num_threads={s:5s} ({chosen[s]} threads): median {m:6.2f} s, {m / ref:5.2f}x one thread"
                )


if __name__ == "__main__":
    main()

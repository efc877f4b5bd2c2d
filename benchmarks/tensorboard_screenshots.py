"""Screenshots of TensorBoard as a user opens it: a 6-job sweep, a Gaussian-NLL regression and an
MNIST run under one ``--logdir outputs``, taken with headless Chromium (``apt-get install chromium``).

    MLPTRAIN_DATA=/work/data python benchmarks/tensorboard_screenshots.py [--out DIR] [--skip-runs]

Trains the three kinds of run in ``DIR/work`` (tiny: 1-2 epochs, one thread), starts ``tensorboard``
on a free port of 127.0.0.1 and writes ``DIR/*.png``: the HParams table, Time Series (scalars), and the
pictures (images) of each run.  Without MLPTRAIN_DATA (genuine MNIST files), the MNIST run is skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

COMMON = ["trainer.num_threads=1", "trainer.progress=none"]
# The single runs are named (``name=``: their folder is ``<time>_<name>``), so the pages below can pick
# their run by that name, whatever their dataset or overrides.
RUNS = {
    "sweep": ["-m", "optim=sgd,adam,momentum", "seed=0,1", "trainer.epochs=2", *COMMON],
    "regression": ["dataset=sine", "loss=gaussian_nll", "trainer.epochs=2", "name=regression", *COMMON],
    "mnist": ["dataset=mnist", "model.hidden=[128]", "trainer.epochs=1", "name=mnist", *COMMON],
}
PAGES = {
    "hparams": "#hparams",
    "timeseries": "#timeseries",
    "scalars": "#scalars",
    "images": "#images",
    "images_regression": "#images&regexInput=_regression",
    "images_mnist": "#images&regexInput=_mnist",
}


def train(work: Path) -> None:
    for name, args in RUNS.items():
        if name == "mnist" and not os.environ.get("MLPTRAIN_DATA"):
            print("skipping the MNIST run: set MLPTRAIN_DATA to a folder with MNIST/raw")
            continue
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mlptrain", *args], cwd=work, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"{name} failed: {r.stderr[-2000:]}")
        print(f"{name}: trained in {time.perf_counter() - t0:.1f}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tensorboard-screenshots"))
    ap.add_argument("--skip-runs", action="store_true", help="reuse DIR/work/outputs")
    ap.add_argument("--wait-ms", type=int, default=12000, help="Chromium's virtual time for a page to load")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium: apt-get install -y chromium")
    work = args.out / "work"
    if not args.skip_runs:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        train(work)
    port = free_port()
    tb = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", "outputs", "--host", "127.0.0.1", "--port", str(port)],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "data/runs", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(3)  # the first scan of the event files
        for name, fragment in PAGES.items():
            png = (args.out / f"{name}.png").resolve()
            cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
            cmd += ["--window-size=1600,1100", f"--virtual-time-budget={args.wait_ms}", f"--screenshot={png}"]
            subprocess.run([*cmd, base + fragment], capture_output=True, timeout=120)
            print(f"{png}: {'ok' if png.is_file() else 'missing'}")
    finally:
        tb.terminate()
        tb.wait(timeout=30)


if __name__ == "__main__":
    main()

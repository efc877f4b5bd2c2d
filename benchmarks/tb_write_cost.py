"""What writing TensorBoard data costs, in the same run: the records' CRC-32C (mlptrain's numpy one
against TensorBoard's pure-Python one), each real picture per PNG level (encode + CRC + write), the
HParams ``record()`` with N other runs under ``outputs/``, creating the TensorBoard logger, and the
jobs of an in-process sweep with either CRC.

The pictures are a run's own: a short moons run (decision boundary, confusion matrix) and, with
--data-dir, a short MNIST run (confusion matrix of 10 classes, misclassified grid), read back from
their event files.  Medians of --repeats.

    python benchmarks/tb_write_cost.py [--data-dir /work/data] [--runs 200] [--repeats 15]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _reference import median_s

LEVELS = (1, 3, 6)


def crc_table(repeats: int) -> None:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as theirs

    from mlptrain.loggers import crc32c

    print("CRC-32C per record (ms): ours | TensorBoard's | ratio")
    for kb in (0.05, 1, 10, 100, 300):
        data = os.urandom(int(kb * 1000))
        ours_s = median_s(lambda d=data: crc32c.masked_crc32c(d), repeats, warmup=True)
        theirs_s = median_s(lambda d=data: theirs(d), max(3, repeats // 3))
        print(f"  {kb:>6g} KB  {ours_s * 1e3:8.3f} | {theirs_s * 1e3:8.3f} | {theirs_s / ours_s:6.1f}x")


def run_pictures(data_dir: str | None, work: Path) -> dict[str, object]:
    """{tag: HxWx3 uint8 array} of the pictures real short runs write."""
    import numpy as np
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = [("moons", ["dataset=moons"], {})]
    if data_dir:
        runs.append(("mnist", ["dataset=mnist", "trainer.max_steps=10"], {"MLPTRAIN_DATA": data_dir}))
    out = {}
    for name, overrides, env in runs:
        run_dir = work / name
        argv = [str(Path(sys.executable).parent / "mlptrain"), *overrides, "trainer.progress=none"]
        argv.append(f"hydra.run.dir={run_dir}")
        subprocess.run(argv, check=True, cwd=work, env={**os.environ, **env}, capture_output=True)
        acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
        acc.Reload()
        for tag in acc.Tags()["images"]:
            if tag.startswith("val/"):
                continue  # the same kinds of picture as test/
            png = acc.Images(tag)[-1].encoded_image_string
            out[f"{name} {tag}"] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return out


def png_table(pictures: dict, repeats: int, work: Path) -> None:
    from PIL import Image
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as theirs

    from mlptrain.loggers import crc32c

    print("PNG per picture (ms): encode + CRC + write = total (KB) | total with TensorBoard's CRC")
    sink = open(work / "sink.bin", "wb")  # noqa: SIM115 - one file for every write below
    for tag, arr in pictures.items():
        print(f"  {tag} {arr.shape[1]}x{arr.shape[0]}")
        for level in LEVELS:
            pil = Image.fromarray(arr)

            def encode(pil=pil, level=level):
                buf = io.BytesIO()
                pil.save(buf, format="PNG", compress_level=level)
                return buf.getvalue()

            png = encode()
            enc = median_s(encode, repeats, warmup=True)
            ours = median_s(lambda p=png: crc32c.masked_crc32c(p), repeats)
            slow = median_s(lambda p=png: theirs(p), max(3, repeats // 3))
            write = median_s(lambda p=png: (sink.write(p), sink.flush()), repeats)
            total = enc + ours + write
            print(
                f"    level {level}: {enc * 1e3:6.2f} + {ours * 1e3:5.2f} + {write * 1e3:5.2f} = {total * 1e3:6.2f}"
                f" ({len(png) / 1000:6.1f} KB) | {(enc + slow + write) * 1e3:6.2f}"
            )
    sink.close()


def fake_runs(top: Path, n: int) -> None:
    """``n`` finished runs of a sweep layout under ``top``: a record and the files a run has."""
    for i in range(n):
        run = top / "multirun" / f"2026-01-{1 + i // 50:02d}" / f"12-00-{i % 50:02d}" / str(i)
        (run / ".hydra").mkdir(parents=True)
        rec = {"hparams": {"optim": "adam", "optim.lr": 10.0 ** -(i % 4), "seed": str(i)}, "metrics": []}
        rec["metrics"] = ["hparam/best_val_acc", "hparam/test_acc", "hparam/test_loss", "hparam/train_time_s"]
        (run / "hparams.json").write_text(json.dumps(rec))
        for name in ("metrics.json", "best.pt", "last.pt", "mlptrain.log", "events.out.tfevents.1.host.1.0"):
            (run / name).write_bytes(b"x" * 100)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            (run / ".hydra" / name).write_text("x")


def record_table(runs: int, repeats: int, work: Path) -> None:
    """A job's three calls: its start, its first epoch (the same columns, the duplicate decided), its
    end (a column fewer).  The other runs are an hour old, as those of earlier sweeps are."""
    from mlptrain.loggers import hparams

    print("HParams record() per call (ms) with N other runs under outputs/")
    print("  N     | start, cold (a process's first) | start | first epoch | end")
    old = os.getcwd()
    for n in (0, runs):
        base = work / f"rec{n}"
        (base / "outputs").mkdir(parents=True)
        fake_runs(base / "outputs", n)
        hour_ago = time.time() - 3600
        for folder, _, files in os.walk(base):
            for name in [*files, "."]:
                os.utime(os.path.join(folder, name), (hour_ago, hour_ago))
        os.chdir(base)
        jobs = iter(range(10**6))

        def job(cold: bool):
            run = base / "outputs" / "2026-02-01" / f"job{next(jobs)}"
            run.mkdir(parents=True)
            hp = {"optim": "sgd", "optim.lr": 0.1, "seed": "0"}
            tags = ["hparam/best_val_acc", "hparam/test_acc", "hparam/test_nll", "hparam/train_time_s"]
            if cold and hasattr(hparams, "_listings"):
                hparams._listings.clear()
                hparams._parsed.clear()
            t = [time.perf_counter()]
            hparams.record(run, hp, tags)
            t.append(time.perf_counter())
            hparams.record(run, hp, tags, "nll")
            t.append(time.perf_counter())
            hparams.record(run, hp, tags[:2] + tags[3:], "nll")
            t.append(time.perf_counter())
            return [b - a for a, b in zip(t, t[1:])]

        try:
            job(False)
            cold = statistics.median(job(True)[0] for _ in range(repeats))
            calls = [job(False) for _ in range(repeats)]
        finally:
            os.chdir(old)
        start, epoch, end = (statistics.median(c[i] for c in calls) for i in range(3))
        print(f"  {n:5d} | {cold * 1e3:7.2f} | {start * 1e3:7.2f} | {epoch * 1e3:7.2f} | {end * 1e3:7.2f}")


def logger_table(repeats: int, work: Path) -> None:
    from mlptrain.loggers.tensorboard import TensorBoard

    print("TensorBoard logger (ms): open (SummaryWriter, its file and thread) | close")
    opens, closes = [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        tb = TensorBoard.open(work / "tb" / str(i), None)
        t1 = time.perf_counter()
        tb.close()
        opens.append(t1 - t0)
        closes.append(time.perf_counter() - t1)
    opens, closes = sorted(opens[1:]), sorted(closes[1:])  # the first: imports
    print(f"  {opens[len(opens) // 2] * 1e3:.2f} | {closes[len(closes) // 2] * 1e3:.2f}")


def job_table(jobs: int, data_dir: str | None, work: Path) -> None:
    """Jobs of an in-process sweep (``mlptrain.cli.run``, as the basic launcher runs them), alternately
    with mlptrain's CRC and with TensorBoard's put back, medians of the jobs after the first two."""
    import logging

    from hydra import compose, initialize_config_module
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as theirs
    from tensorboard.summary.writer import record_writer

    from mlptrain.cli import run
    from mlptrain.loggers import crc32c

    logging.disable(logging.CRITICAL)
    print("Per job of an in-process sweep (ms, max_steps=10): with our CRC | with TensorBoard's | saved")
    kinds = [("moons", [])] + ([("mnist", ["dataset=mnist"])] if data_dir else [])
    if data_dir:
        os.environ["MLPTRAIN_DATA"] = data_dir
    install, old = crc32c.install, os.getcwd()
    os.chdir(work)
    try:
        for name, overrides in kinds:
            with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
                base = ["trainer.max_steps=10", "trainer.progress=none", "trainer.num_threads=1"]
                cfg = compose(config_name="config", overrides=[*base, *overrides])
            times: dict[str, list[float]] = {"ours": [], "theirs": []}
            for i in range(2 * jobs + 2):
                which = "ours" if i % 2 else "theirs"
                crc32c.install = install if which == "ours" else lambda: None
                record_writer.masked_crc32c = crc32c.masked_crc32c if which == "ours" else theirs
                t0 = time.perf_counter()
                run(cfg, work / "outputs" / "multirun" / name / str(i))
                times[which].append(time.perf_counter() - t0)
            ours, slow = (statistics.median(times[k][1:]) for k in ("ours", "theirs"))
            print(f"  {name}: {ours * 1e3:7.1f} | {slow * 1e3:7.1f} | {(slow - ours) * 1e3:6.1f}")
    finally:
        crc32c.install = install
        os.chdir(old)
        logging.disable(logging.NOTSET)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (for the MNIST pictures)")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--jobs", type=int, default=8, help="jobs of the in-process sweep, per CRC")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        crc_table(args.repeats)
        png_table(run_pictures(args.data_dir, work), args.repeats, work)
        record_table(args.runs, args.repeats, work)
        logger_table(args.repeats, work)
        job_table(args.jobs, args.data_dir, work)


if __name__ == "__main__":
    main()

"""Peak resident memory and parse time of loading a CSV table (``dataset=csv``), against the file's size.

    python benchmarks/csv_memory.py [--mb 50] [--repeats 3] [--kind mixed|numeric]

Writes a table of about ``--mb`` MB to a temporary folder (``mixed``: eight decimal columns, an
integer column, two text columns and an integer class target; ``numeric``: decimals only, with a
decimal target) and loads it ``--repeats`` times, each in a fresh process.  Each child reports
its peak resident memory above its resident memory just before loading (``ru_maxrss``, torch and
mlptrain already imported) and the load's wall time.  The reference, measured in the same child,
is ``csv.reader`` alone over the same file (reading every cell, holding nothing): the output gives
peak / file size and load time / reference time, as medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import csv, json, resource, sys, time
def rss_mb(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
import torch
from mlptrain.dataset_config import CsvConfig
from mlptrain.data.tabular import load_csv
path, target = sys.argv[1], sys.argv[2]
t = time.perf_counter()
with open(path, newline='') as f:
    for row in csv.reader(f):
        pass
reference_s = time.perf_counter() - t
base = max(rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
t = time.perf_counter()
b = load_csv(CsvConfig(path=path, target=target))
load_s = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
rows = len(b.x_train) + len(b.x_val) + len(b.x_test)
print(json.dumps({'peak_mb': peak, 'load_s': load_s, 'reference_s': reference_s, 'rows': rows}))
"""


def write_table(path: str, mb: float, kind: str) -> str:
    """A table of about ``mb`` MB; returns its target column."""
    rng = random.Random(0)
    colours, sizes = ["red", "green", "blue", "amber"], ["S", "M", "L", "XL", "XXL"]
    with open(path, "w") as f:
        if kind == "numeric":
            f.write(",".join(f"x{i}" for i in range(10)) + ",y\n")
        else:
            f.write(",".join(f"x{i}" for i in range(8)) + ",count,colour,size,label\n")
        while f.tell() < mb * 2**20:
            lines = []
            for _ in range(1000):
                xs = [f"{rng.gauss(0, 10):.4f}" for _ in range(10 if kind == "numeric" else 8)]
                if kind == "numeric":
                    cells = [*xs, f"{sum(map(float, xs)):.4f}"]
                else:
                    extra = [str(rng.randrange(100)), rng.choice(colours), rng.choice(sizes), str(rng.randrange(3))]
                    cells = [*xs, *extra]
                lines.append(",".join(cells))
            f.write("\n".join(lines) + "\n")
    return "y" if kind == "numeric" else "label"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=50.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kind", choices=["mixed", "numeric"], default="mixed")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "table.csv")
        target = write_table(path, args.mb, args.kind)
        size_mb = os.path.getsize(path) / 2**20
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", CHILD, path, target], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    peak = statistics.median(r["peak_mb"] for r in runs)
    load = statistics.median(r["load_s"] for r in runs)
    ref = statistics.median(r["reference_s"] for r in runs)
    print(
        f"{args.kind} table, {size_mb:.1f} MB, {runs[0]['rows']} rows: peak +{peak:.0f} MB while loading "
        f"({peak / size_mb:.2f}x the file); load {load:.2f} s = {load / ref:.1f}x csv.reader alone ({ref:.2f} s); "
        f"medians of {len(runs)}"
    )


if __name__ == "__main__":
    main()

"""Resident memory a torchvision dataset adds to a process, against the size of its uint8 arrays.

    python benchmarks/data_memory.py [--data-dir DIR] [--datasets mnist,cifar10]

Each dataset is loaded in a fresh process: RSS is read after ``import torchvision`` (the baseline)
and after ``load_dataset``; the reference is the bytes of its train/val/test image and label
tensors.  Genuine files are used when ``DIR`` (default ``$MLPTRAIN_DATA``) has them; otherwise
random files of the real size and format are written to a temporary folder (said in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import hashlib, json, os, resource, sys
def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
import torch, torchvision.datasets as tvd
name, root = sys.argv[1], sys.argv[2]
if name == 'cifar10' and sys.argv[3] == 'synthetic':  # torchvision checks md5s: list those of our files
    c, folder = tvd.CIFAR10, os.path.join(root, 'cifar-10-batches-py')
    md5 = lambda f: hashlib.md5(open(os.path.join(folder, f), 'rb').read()).hexdigest()
    c.train_list = [[f, md5(f)] for f, _ in c.train_list]
    c.test_list = [[f, md5(f)] for f, _ in c.test_list]
    c.meta = {**c.meta, 'md5': md5(c.meta['filename'])}
from mlptrain.config import VisionConfig
from mlptrain.data import load_dataset
base = rss()
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
b = load_dataset(VisionConfig(name=name, data_dir=root, download=False))
arrays = {id(t.untyped_storage()): t.untyped_storage().nbytes()
          for t in (b.x_train, b.x_val, b.x_test, b.y_train, b.y_val, b.y_test)}
print(json.dumps({'added_mb': rss() - base, 'arrays_mb': sum(arrays.values()) / 2**20,
                  'peak_added_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - max(base, peak_before)}))
"""


def _write_synthetic(name: str, root: str) -> None:
    """Random images of the real count and shape, in the real on-disk format."""
    import pickle
    import struct

    import numpy as np

    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder)
        for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            entry = {
                "data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8),
                "labels": rng.integers(0, 10, 10000).tolist(),
            }
            with open(os.path.join(folder, f), "wb") as fh:
                pickle.dump(entry, fh, protocol=2)
        with open(os.path.join(folder, "batches.meta"), "wb") as fh:
            pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh, protocol=2)
        return
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw)
    for split, n in (("train", 60000), ("t10k", 10000)):
        for kind, shape in (("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))):
            a = rng.integers(0, 256 if kind.startswith("images") else 10, shape, dtype=np.uint8)
            with open(os.path.join(raw, f"{split}-{kind}-ubyte"), "wb") as fh:
                fh.write(struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())


def _has_files(name: str, root: str) -> bool:
    probe = {"cifar10": "cifar-10-batches-py/data_batch_1"}.get(name, "MNIST/raw/train-images-idx3-ubyte")
    return bool(root) and os.path.isfile(os.path.join(root, probe))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("MLPTRAIN_DATA", ""))
    p.add_argument("--datasets", default="mnist,cifar10")
    args = p.parse_args()
    for name in args.datasets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            root, source = args.data_dir, "genuine"
            if not _has_files(name, root):
                root, source = tmp, "synthetic"
                _write_synthetic(name, root)
            out = subprocess.run([sys.executable, "-c", CHILD, name, root, source], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{name:8s} ({source} files): resident +{r['added_mb']:.0f} MB for {r['arrays_mb']:.0f} MB of "
                f"arrays (ratio {r['added_mb'] / r['arrays_mb']:.2f}); "
                f"peak while loading +{r['peak_added_mb']:.0f} MB"
            )


if __name__ == "__main__":
    main()

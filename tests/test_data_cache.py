"""The on-disk cache of decoded image sets: later runs skip torchvision, stale caches are rebuilt."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mlptrain.config import VisionConfig
from mlptrain.data import load_uncached
from mlptrain.data.processed import cache_file
from test_data_vision import write_mnist

FIELDS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "x_mean", "x_std")

PROBE = """
import json, sys
from mlptrain.config import VisionConfig
from mlptrain.data import load_dataset
b = load_dataset(VisionConfig(name="mnist", data_dir=sys.argv[1], download=False))
print(json.dumps({"torchvision": "torchvision" in sys.modules, "train": len(b.y_train), "sum": int(b.x_train.sum())}))
"""


def cfg(root, **kw) -> VisionConfig:
    return VisionConfig(name="mnist", data_dir=str(root), download=False, **kw)


def same(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS) and a.meta() == b.meta()


def test_second_process_loads_the_cache_without_torchvision(tmp_path):
    write_mnist(tmp_path)
    runs = [
        subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=120)
        for _ in range(2)
    ]
    first, second = (json.loads(r.stdout) for r in runs)
    assert first["torchvision"] and not second["torchvision"]
    assert first["train"] == second["train"] == 180 and first["sum"] == second["sum"]
    assert cache_file(cfg(tmp_path)).is_file()


def test_cached_bundle_equals_a_fresh_load(tmp_path):
    write_mnist(tmp_path)
    fresh = load_uncached(cfg(tmp_path))
    again = load_uncached(cfg(tmp_path))  # from the file
    assert same(fresh, again)
    assert load_uncached(cfg(tmp_path, val_fraction=0.2)).x_val.shape[0] == 40  # another split: rebuilt, not reused


def test_changed_source_files_rebuild_the_cache(tmp_path):
    write_mnist(tmp_path)
    before = load_uncached(cfg(tmp_path))
    raw = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = bytearray(raw.read_bytes())
    data[-1] ^= 0xFF  # same size, new content and mtime
    raw.write_bytes(bytes(data))
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))
    after = load_uncached(cfg(tmp_path))
    assert not same(before, after)


def test_missing_sources_are_an_error_even_with_a_cache(tmp_path):
    from mlptrain.data import DataError

    write_mnist(tmp_path)
    load_uncached(cfg(tmp_path))
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_uncached(cfg(tmp_path))


def test_a_corrupt_cache_is_rebuilt(tmp_path):
    write_mnist(tmp_path)
    fresh = load_uncached(cfg(tmp_path))
    cache_file(cfg(tmp_path)).write_bytes(b"not a tensor file")
    assert same(fresh, load_uncached(cfg(tmp_path)))
    assert torch.load(cache_file(cfg(tmp_path)), weights_only=True)["key"]["name"] == "mnist"


def test_an_unwritable_cache_folder_just_means_no_cache(tmp_path):
    write_mnist(tmp_path)
    cache_file(cfg(tmp_path)).parent.write_text("a file where the cache folder would go")  # mkdir fails, even as root
    assert len(load_uncached(cfg(tmp_path)).y_train) == 180
    assert len(load_uncached(cfg(tmp_path)).y_train) == 180

"""Decoded image sets kept as one tensor file beside the data, so later runs skip torchvision.

``import torchvision`` takes ~1.5 s here (it imports torch._dynamo), about as long as a whole
MNIST epoch's worth of start-up savings elsewhere, and decoding CIFAR-10's pickles adds ~0.5 s.
After a load through torchvision, the ready bundle (splits, statistics, class names) is saved to
``<data_dir>/mlptrain-cache/<name>.pt`` together with the size and modification time of every
source file.  The next load memory-maps that file when the config and the sources are unchanged;
otherwise it loads from the sources again and replaces the file.  A folder that cannot be
written just means no cache.  One file per dataset: the last split asked for.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from mlptrain.data.bundle import DataBundle
from mlptrain.files import atomic_write

log = logging.getLogger("mlptrain")

# Bump whenever a loader's output changes, so files written by an older mlptrain are rebuilt.
FORMAT = 1
FOLDER = "mlptrain-cache"


def cache_file(cfg) -> Path:
    return Path(os.path.expanduser(cfg.data_dir)) / FOLDER / f"{cfg.name}.pt"


def _key(cfg) -> dict:
    """The settings that change the bundle (not ``download``, which only says where files may come from)."""
    return {"format": FORMAT, "name": cfg.name, "val_fraction": float(cfg.val_fraction), "seed": int(cfg.seed)}


def _fingerprint(paths: list[str]) -> list[list]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return out


def _read(path: Path, key: dict) -> DataBundle | None:
    try:
        blob = torch.load(path, mmap=True, weights_only=True)
        if blob.get("key") != key or _fingerprint([p for p, _, _ in blob["sources"]]) != blob["sources"]:
            return None
        return DataBundle(**blob["bundle"])
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: rebuild it
        log.debug("ignoring dataset cache %s: %s", path, e)
        return None


def _write(path: Path, key: dict, sources: list[str], bundle: DataBundle) -> None:
    blob = {
        "key": key,
        "sources": _fingerprint(sources),
        "bundle": {f.name: getattr(bundle, f.name) for f in dataclasses.fields(bundle)},
    }
    try:
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, lambda f: torch.save(blob, f))
    except OSError as e:  # read-only data folder, full disk: run without the cache
        log.debug("not caching the dataset at %s: %s", path, e)


def cached(cfg, load: Callable[[], tuple[DataBundle, list[str]]]) -> DataBundle:
    """The bundle for ``cfg`` from its cache file if still valid, else ``load()`` -> (bundle, the source
    files it read), which is then cached."""
    path, key = cache_file(cfg), _key(cfg)
    bundle = _read(path, key)
    if bundle is None:
        bundle, sources = load()
        _write(path, key, sources, bundle)
    return bundle


def vision_sources(cfg) -> list[str]:
    """The files torchvision read for ``cfg`` (call after loading: it imports torchvision)."""
    import torchvision.datasets as tvd

    from mlptrain.data.vision import CLASSES, expected_files  # torchvision: only on a cache miss

    sub, files = expected_files(getattr(tvd, CLASSES[cfg.name]))
    return [os.path.join(os.path.expanduser(cfg.data_dir), sub, name) for name, _ in files]

"""Datasets: each loader returns a :class:`DataBundle` of train/val/test tensors plus metadata.

Which loader a dataset name uses is :data:`mlptrain.registry.DATASETS`.  This module is torch-free
(the loaders, and torch, are imported on the first load), so the torch-free config layer can sit
beside it.
"""

from __future__ import annotations

import os

from mlptrain.errors import DataError
from mlptrain.registry import DATASETS, resolve

__all__ = ["DataBundle", "DataError", "load_dataset"]


def __getattr__(name: str):
    if name == "DataBundle":  # torch-free: the bundle (a torch module) is imported when asked for
        from mlptrain.data.bundle import DataBundle

        return DataBundle
    raise AttributeError(name)


# The last dataset loaded, keyed by its config: the jobs of an in-process multirun share one copy.
# Only one is held, so a sweep over datasets does not accumulate them.
_cache: dict = {}


def load_dataset(cfg):
    """The dataset named by ``cfg.name`` (a typed config from :mod:`mlptrain.dataset_config`), loaded
    once per process for a given config."""
    key = _cache_key(cfg)
    if key not in _cache:
        _cache.clear()  # free the previous dataset before loading the next
        _cache[key] = load_uncached(cfg)
    return _cache[key]


def _cache_key(cfg) -> str:
    # A table edited between jobs must be read again: its files' size and mtime are part of the key.
    paths = [os.path.expanduser(p) for p in (getattr(cfg, "path", None), getattr(cfg, "test_path", None)) if p]
    stats = [(p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths if os.path.isfile(p)]
    return repr((cfg, stats))


def load_uncached(cfg):
    spec = DATASETS.get(cfg.name)
    if spec is None or not isinstance(cfg, spec.schema):
        raise DataError(f"dataset.name: unknown dataset {cfg.name!r}")
    load = resolve(spec.loader)
    if spec.cached:  # later runs skip torchvision: the decoded tensors are memory-mapped from a cache
        from mlptrain.data.processed import cached, vision_sources  # torch-free until a set is loaded

        return cached(cfg, lambda: (load(cfg), vision_sources(cfg)))
    return load(cfg)

"""Datasets: each loader returns a :class:`DataBundle` of train/val/test tensors plus metadata."""

from __future__ import annotations

from mlptrain.data.bundle import DataBundle, DataError

__all__ = ["DataBundle", "DataError", "load_dataset"]


# The last dataset loaded, keyed by its config: the jobs of an in-process multirun share one copy.
# Only one is held, so a sweep over datasets does not accumulate them.
_cache: dict[str, DataBundle] = {}


def load_dataset(cfg) -> DataBundle:
    """The dataset named by ``cfg.name`` (a typed config from :mod:`mlptrain.config`), loaded once per
    process for a given config."""
    key = _cache_key(cfg)
    if key not in _cache:
        _cache.clear()  # free the previous dataset before loading the next
        _cache[key] = _load(cfg)
    return _cache[key]


def _cache_key(cfg) -> str:
    import os

    # A table edited between jobs must be read again: its files' size and mtime are part of the key.
    paths = [os.path.expanduser(p) for p in (getattr(cfg, "path", None), getattr(cfg, "test_path", None)) if p]
    stats = [(p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths if os.path.isfile(p)]
    return repr((cfg, stats))


def _load(cfg) -> DataBundle:
    from mlptrain import config as C

    if cfg.name in C.SYNTHETIC_CLASSIFICATION + C.SYNTHETIC_REGRESSION:
        from mlptrain.data.synthetic import load_synthetic

        return load_synthetic(cfg)
    if cfg.name in C.VISION:
        from mlptrain.data.processed import cached, vision_sources
        from mlptrain.data.vision import load_vision

        return cached(cfg, lambda: (load_vision(cfg), vision_sources(cfg)))  # later runs skip torchvision
    if cfg.name == "csv":
        from mlptrain.data.tabular import load_csv

        return load_csv(cfg)
    raise DataError(f"dataset.name: unknown dataset {cfg.name!r}")

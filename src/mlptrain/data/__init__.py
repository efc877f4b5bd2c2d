"""Datasets: each loader returns a :class:`DataBundle` of train/val/test tensors plus metadata."""

from __future__ import annotations

from mlptrain.data.bundle import DataBundle, DataError

__all__ = ["DataBundle", "DataError", "load_dataset"]


def load_dataset(cfg) -> DataBundle:
    """Build the dataset named by ``cfg.name`` (a typed config from :mod:`mlptrain.config`)."""
    from mlptrain import config as C

    if cfg.name in C.SYNTHETIC_CLASSIFICATION + C.SYNTHETIC_REGRESSION:
        from mlptrain.data.synthetic import load_synthetic

        return load_synthetic(cfg)
    if cfg.name in C.VISION:
        from mlptrain.data.vision import load_vision

        return load_vision(cfg)
    if cfg.name == "csv":
        from mlptrain.data.tabular import load_csv

        return load_csv(cfg)
    raise DataError(f"dataset.name: unknown dataset {cfg.name!r}")

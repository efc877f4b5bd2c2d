"""Self-describing checkpoints, written atomically and loaded with ``weights_only=True``.

A checkpoint holds the model and optimizer state, the epoch and step, the best
metric, the full resolved config, the dataset metadata and the library
versions: resume, eval and predict need nothing else.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

FORMAT = "mlptrain-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read: the message is one line for the user."""


def versions() -> dict:
    import platform

    import hydra
    import torchvision

    return {"mlptrain": __import__("mlptrain").__version__, "torch": str(torch.__version__),
            "torchvision": torchvision.__version__, "hydra": hydra.__version__, "python": platform.python_version()}


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file in the same folder, fsync, then rename over ``path``.

    A crash or a full disk leaves the previous file intact; the temp file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save(path: Path, payload: dict) -> None:
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}; the previous one is kept") from None


def load(path: str | Path, map_location="cpu") -> dict:
    """Load and check a checkpoint; any problem becomes one clear CheckpointError."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable mlptrain checkpoint (truncated or corrupt?): {first[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mlptrain checkpoint (no '{FORMAT}' header)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer mlptrain (format {ckpt['format_version']})")
    return ckpt

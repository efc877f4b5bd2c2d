"""``mlptrain --version``: mlptrain's version, torch's, and the device a run would use (not Hydra's, which
Hydra's own flag would print)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def version_text() -> str:
    import torch  # only now: the device needs it

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)})"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = f"cpu ({torch.get_num_threads()} threads)"
    return (
        f"mlptrain {_version('mlptrain')}\n"
        f"torch {torch.__version__}, hydra {_version('hydra-core')}, python {platform.python_version()}\n"
        f"device: {device}"
    )

"""Run names from overrides, and which keys say how a run executes rather than what it trains.

A single run's folder (``outputs/<date>/<time>_<name>``) is named after the command line's overrides,
or ``name=...`` when given, so two runs can be told apart in TensorBoard's run list.  Execution-only
keys (threads, device, progress, loggers, checkpoints, paths...) change neither the numbers of a CPU
run nor what it learns, so they name no run and are no HParams column.  Torch-free.
"""

from __future__ import annotations

import hashlib
import re

# Keys that change how a run executes, not what it trains (nor, on CPU, its numbers).
EXECUTION_KEYS = frozenset(
    {
        "name",
        "trainer.num_threads",
        "trainer.device",
        "trainer.devices",
        "trainer.progress",
        "trainer.resume",
        "trainer.loggers",
        "trainer.checkpoint",
        "trainer.checkpoint_every_n_steps",
        "trainer.eval_batch_size",
        "trainer.compile",
        "trainer.compile_backend",
        "trainer.compile_mode",
        "trainer.histogram_every_n_epochs",
        "trainer.image_every_n_epochs",
        "trainer.init_from",
        "dataset.data_dir",
        "dataset.path",
        "dataset.test_path",
        "dataset.download",
        "dataset.cache",
    }
)
MAX_NAME = 64  # characters of a run name (a longer one is cut and ends in a hash of the whole)
# Letters, digits, '.', '-' and '_' only: a run dir is typed back in shells and in Hydra overrides
# (trainer.resume=...), where '=', ',', brackets and quotes mean something.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def override_key(override: str) -> str:
    """``+optim.lr=0.1`` -> ``optim.lr``."""
    return override.split("=", 1)[0].lstrip("+~")


def is_execution_key(key: str) -> bool:
    return key in EXECUTION_KEYS or key.startswith("hydra.")


def run_name(overrides, name: str | None = None) -> str:
    """``name`` (when set), else the overrides that change what is trained as ``key-value`` pairs
    joined by ``_`` (``optim=sgd optim.lr=0.1 model.hidden=[64,64]`` -> ``optim-sgd_lr-0.1_hidden-64-64``):
    safe in a path, a shell and an override, at most :data:`MAX_NAME` characters (a longer one ends in
    a hash of the whole); ``""`` for a run of the defaults."""
    if name:
        safe = _UNSAFE.sub("-", str(name))
    else:
        pairs = []
        for o in overrides or ():
            key = override_key(str(o))
            if "=" in str(o) and not is_execution_key(key):
                value = _UNSAFE.sub("-", str(o).split("=", 1)[1]).strip("-")
                pairs.append(f"{key.rsplit('.', 1)[-1]}-{value}")  # the key's last part: the value tells the rest
        safe = "_".join(pairs)
    safe = safe.strip("-_.")
    if len(safe) > MAX_NAME:
        digest = hashlib.sha1(safe.encode()).hexdigest()[:6]
        safe = safe[: MAX_NAME - 7].rstrip("-_.") + "-" + digest
    return safe


def name_of(overrides) -> str | None:
    """The value of a ``name=...`` override, if any."""
    for o in overrides or ():
        if override_key(str(o)) == "name" and "=" in str(o):
            return str(o).split("=", 1)[1] or None
    return None


def run_suffix(overrides) -> str:
    """``_<run name>`` for a run dir after its time (``${mlptrain.run_suffix:${hydra.overrides.task}}``
    in configs/config.yaml), ``""`` for a run of the defaults."""
    overrides = [str(o) for o in overrides or ()]
    name = run_name(overrides, name_of(overrides))
    return f"_{name}" if name else ""

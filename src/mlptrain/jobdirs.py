"""Sweep job folder names: the job number and what this job's sweep varies, readable and bounded.

Hydra names a job folder after every override (``hydra.job.override_dirname``), so a sweep with a
couple of dozen fixed overrides, or an Optuna search with a few, fails with ``File name too long``,
and a ``/`` in a value (``trainer.monitor=val/loss``) nests the folders.  Here:

* :func:`fixed_keys_override` (called by ``mlptrain`` before Hydra starts) adds the command line's
  fixed (unswept) keys to ``hydra.job.config.override_dirname.exclude_keys``, so only what varies
  between jobs names them: the command-line sweeps and the sweeper's ``params`` (Optuna's included);
* ``${mlptrain.job_dirname:}`` (``hydra.sweep.subdir`` in config.yaml) builds the name from the job's
  number and those overrides: keys shortened to their last part (``optim.lr`` -> ``lr``) unless that
  is ambiguous, long floats to 4 significant digits, ``/`` escaped as ``%2F``, at most
  :data:`MAX_NAME` characters (the job number keeps it unique; the whole story is in ``.hydra/``).

Torch-free: the resolver runs wherever Hydra resolves a job's folder (joblib and submitit workers
import it with the CLI).
"""

from __future__ import annotations

from importlib import resources

import yaml
from omegaconf import OmegaConf

MAX_NAME = 96  # characters after the job number: far below the 255 bytes of a file name
EXCLUDE_KEY = "hydra.job.config.override_dirname.exclude_keys"


def _value(text: str) -> str:
    try:
        f = float(text)
    except ValueError:
        return text
    return f"{f:.4g}" if len(text) > 8 and not text.lstrip("-").isdigit() else text


def job_dirname(num, overrides, exclude=()) -> str:
    """``<num>_<key>=<value>,...`` over ``overrides`` (Hydra override strings) minus ``exclude``."""
    pairs = []
    for o in overrides:
        key, _, value = str(o).partition("=")
        if key.lstrip("+~") in exclude or key.startswith("hydra."):
            continue
        pairs.append((key.lstrip("+"), value))
    pairs.sort()  # as Hydra's override_dirname: the same name whatever the order on the command line
    tails = [k.rsplit(".", 1)[-1] for k, _ in pairs]
    shown = [f"{tail if tails.count(tail) == 1 else key}={_value(value)}" for (key, value), tail in zip(pairs, tails)]
    name = ",".join(shown).replace("%", "%25").replace("/", "%2F").replace("\0", "")
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 3] + "..."
    return f"{num}_{name}" if name else str(num)


def _resolve(*, _root_) -> str:
    hydra = _root_.hydra
    exclude = set(OmegaConf.select(hydra, "job.config.override_dirname.exclude_keys", default=[]) or [])
    return job_dirname(hydra.job.num, list(hydra.overrides.task), exclude)


def register_resolver() -> None:
    if not OmegaConf.has_resolver("mlptrain.job_dirname"):
        OmegaConf.register_new_resolver("mlptrain.job_dirname", _resolve)


def default_excluded() -> list[str]:
    """``exclude_keys`` as configs/config.yaml sets it (execution-only keys: resume, device, data paths)."""
    text = resources.files("mlptrain.configs").joinpath("config.yaml").read_text()
    conf = yaml.safe_load(text)["hydra"]["job"]["config"]["override_dirname"]
    return list(conf.get("exclude_keys") or [])


def fixed_keys_override(overrides) -> list[str]:
    """The override that keeps a sweep's fixed command-line keys out of its job folder names
    (``overrides``: the parsed command line).  Empty when there is nothing to add or the user
    sets ``exclude_keys`` themselves."""
    if any(o.key_or_group == EXCLUDE_KEY for o in overrides):
        return []
    swept = {o.key_or_group.lstrip("+~") for o in overrides if o.is_sweep_override()}
    task = [o.key_or_group.lstrip("+~") for o in overrides if not o.is_hydra_override()]
    fixed = [k for k in task if k not in swept]
    if not fixed:
        return []
    keys = list(dict.fromkeys([*default_excluded(), *fixed]))
    return [f"{EXCLUDE_KEY}=[{','.join(_quoted(k) for k in keys)}]"]


def with_fixed_keys(argv: list[str]) -> list[str]:
    """``argv`` plus :func:`fixed_keys_override` for a sweep (``-m``); unchanged otherwise."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mlptrain.compose import parse_args

    args = parse_args(argv)
    if not args.multirun:
        return argv
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except Exception:  # a malformed override: precompose has reported it
        return argv
    return argv + fixed_keys_override(parsed)


def _quoted(key: str) -> str:
    return key if all(c.isalnum() or c in "._-" for c in key) else "'" + key.replace("'", "\\'") + "'"

"""Typed run configuration: the one place where Hydra's DictConfig becomes plain objects.

Every group is merged onto a dataclass schema (:mod:`mlptrain.schemas`, :mod:`mlptrain.dataset_config`;
unknown keys and wrong types are caught by OmegaConf), then range-checked in ``__post_init__``.  Any problem is
raised as :class:`ConfigError`, whose message names the key and what is allowed.
Nothing here imports torch, so ``mlptrain --help`` and validation stay fast.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mlptrain.checks import check
from mlptrain.dataset_config import CsvConfig, SyntheticConfig, VisionConfig
from mlptrain.errors import ConfigError
from mlptrain.registry import DATASETS, LOSS_TASKS, dataset_task, datasets, loss_misfit
from mlptrain.schemas import (
    EarlyStoppingConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SchedulerConfig,
    TrainerConfig,
)

__all__ = [
    "ConfigError",
    "CsvConfig",
    "EarlyStoppingConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SchedulerConfig",
    "SyntheticConfig",
    "TrainerConfig",
    "VisionConfig",
    "parse",
]

SYNTHETIC_CLASSIFICATION = datasets(SyntheticConfig, "classification")
SYNTHETIC_REGRESSION = datasets(SyntheticConfig, "regression")
VISION = datasets(VisionConfig)
LOSSES = tuple(LOSS_TASKS)  # the loss names (the table itself is registry.LOSSES)


# ----------------------------------------------------------------------------- run
@dataclass
class RunConfig:
    dataset: Any
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig
    scheduler: SchedulerConfig
    trainer: TrainerConfig
    seed: int
    raw: dict  # the resolved config as plain containers, for checkpoints and logs


# Groups already typed, by schema and values: the configs of a sweep differ in a key or two, so most of
# their groups are the same (a structured merge costs ~5-15 ms a group; check_swept_values types each value).
_groups: dict[tuple[type, str], Any] = {}


def _typed(schema: type, node: Any, key: str):
    """Merge ``node`` onto ``schema`` and build the dataclass (which range-checks itself)."""
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{key}: expected a group of settings, got {node!r}")
    cache_key = (schema, repr(OmegaConf.to_container(node)))
    if cache_key not in _groups:
        try:
            merged = OmegaConf.merge(OmegaConf.structured(schema), node)
            typed = OmegaConf.to_object(merged)
        except OmegaConfBaseException as e:
            raise ConfigError(_omegaconf_message(e, key, schema)) from None
        if len(_groups) >= 1024:  # a long sweep: keep the memory bounded
            _groups.clear()
        _groups[cache_key] = typed
    # shared by the RunConfigs kept in _parsed, which are never handed out: parse() returns copies
    return _groups[cache_key]


def _omegaconf_message(e: OmegaConfBaseException, group: str, schema: type) -> str:
    full_key = getattr(e, "full_key", None) or ""
    path = f"{group}.{full_key}" if full_key else group
    first = str(e).splitlines()[0]
    if type(e).__name__ == "ConfigKeyError" or "not in" in first:
        bad = str(full_key).split(".")[-1] or first
        names = [f.name for f in dataclasses.fields(schema)]
        close = difflib.get_close_matches(bad, names, n=1, cutoff=0.7)
        hint = f"did you mean {path.rsplit('.', 1)[0]}.{close[0]}? " if close else ""
        return f"{path}: unknown key {bad!r}; {hint}valid keys: {', '.join(names)}"
    if type(e).__name__ == "MissingMandatoryValue":
        return f"{path}: is required but missing (set {path}=...)"
    return f"{path}: {first}"


def _resolve(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or "config"
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from None


TOP_LEVEL = ("dataset", "model", "loss", "optim", "scheduler", "trainer", "seed", "hparams_search")


# Configs already parsed, by their resolved values: precompose validates every job of a sweep, and
# each job of an in-process sweep then parses the same config again (~30 ms of OmegaConf merges a job).
_parsed: dict[str, RunConfig] = {}


def parse(cfg: DictConfig) -> RunConfig:
    """Validate the composed config and return typed objects, or raise ConfigError."""
    plain = _resolve(cfg)
    key = repr(plain)  # plain containers: 1, 1.0 and True differ in their repr
    if key not in _parsed:
        if len(_parsed) >= 256:  # a long sweep: keep the memory bounded
            _parsed.clear()
        _parsed[key] = _parse(plain)
    return copy.deepcopy(_parsed[key])  # the caller may change its copy (threads per rank, auto sizes)


def _parse(plain: dict) -> RunConfig:
    cfg = OmegaConf.create(plain)
    unknown = [k for k in cfg.keys() if k not in TOP_LEVEL and k != "name"]  # name: the run dir's (naming.py)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown top-level key; valid keys: {', '.join(TOP_LEVEL[:-1])}")
    for k in TOP_LEVEL[:-2]:
        if k not in cfg or cfg[k] is None:
            raise ConfigError(f"{k}: missing config group; choose one with {k}=<option>")

    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    check(0 <= seed < 2**63, "seed", f"must be in [0, 2**63), got {seed}")

    ds_name = cfg.dataset.get("name")
    if ds_name not in DATASETS:
        raise ConfigError(f"dataset.name: unknown dataset {ds_name!r}; valid choices: {', '.join(DATASETS)}")
    dataset = _typed(DATASETS[ds_name].schema, cfg.dataset, "dataset")
    ds_seed = getattr(dataset, "seed", 0)
    check(0 <= ds_seed < 2**63, "dataset.seed", f"must be in [0, 2**63), got {ds_seed}")
    run = RunConfig(
        dataset=dataset,
        model=_typed(ModelConfig, cfg.model, "model"),
        loss=_typed(LossConfig, cfg.loss, "loss"),
        optim=_parse_optim(cfg.optim),
        scheduler=_typed(SchedulerConfig, cfg.scheduler, "scheduler"),
        trainer=_typed(TrainerConfig, cfg.trainer, "trainer"),
        seed=seed,
        raw=OmegaConf.to_container(cfg),
    )
    check(
        not (run.trainer.refit and getattr(run.dataset, "fold", None) is not None),
        "trainer.refit",
        "a cross-validation fold is scored on its held-out fold; refit the chosen setting in a run without "
        "dataset.folds",
    )
    known = dataset_task(run.dataset)
    if known:  # a loss that cannot fit fails here, before any data is loaded or downloaded
        problem = loss_misfit(run.loss.name, ds_name, *known)
        if problem:
            raise ConfigError(problem)
    return run


def _parse_optim(node: Any) -> OptimConfig:
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError("optim: expected an optimizer config with _target_ (e.g. optim=adam)")
    d = OmegaConf.to_container(node)
    target = d.pop("_target_")
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"optim._target_: expected the dotted name of a torch.optim class, got {target!r}")
    d.pop("_partial_", None)
    exclude = d.pop("decay_exclude_bias_norm", False)
    if not isinstance(exclude, bool):
        raise ConfigError(f"optim.decay_exclude_bias_norm: expected true or false, got {exclude!r}")
    if "lr" not in d:
        raise ConfigError("optim.lr: is required but missing (set optim.lr=...)")
    lr = d.pop("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise ConfigError(f"optim.lr: expected a number, got {lr!r}")
    for k, v in d.items():
        if k != "betas" and isinstance(v, str):
            raise ConfigError(f"optim.{k}: expected a number or boolean, got {v!r}")
    return OptimConfig(target=target, lr=float(lr), kwargs=d, decay_exclude_bias_norm=exclude)

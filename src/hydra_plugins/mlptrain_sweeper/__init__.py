"""mlptrain's sweeper: Hydra's basic sweeper, without its second composition of every job.

Before it launches a batch, Hydra's basic sweeper composes the config of every job in it, so that
a job that cannot be composed fails the sweep before any job runs; the basic launcher then
composes each job again to run it.  A composition costs ~0.1 s of CPU, and those two are the
largest per-job cost of a sweep of short jobs run in one process.

``mlptrain`` has already done that check for the whole sweep (command line and
``hydra.sweeper.params``), once per distinct config structure rather than once per job, with
one-line errors (``mlptrain.compose.precompose``): whether a config composes depends only on its
config-group choices and Hydra settings, never on a plain value such as ``seed=3``.  So this
sweeper skips the per-batch composition; everything else is the basic sweeper.

:func:`register` makes it what ``hydra/sweeper=basic`` (Hydra's default) means inside the
``mlptrain`` command.  ``hydra/sweeper=optuna`` (``hparams_search=optuna``), when its extra is
installed, is mlptrain's own Optuna sweeper (see ``_optuna``).  Hydra only accepts
sweepers from the ``hydra_plugins`` namespace, hence this package's place, and its scan of that
namespace misses what an editable install provides, hence the registration by hand.

The launcher's own composition of each job is cut the same way when it runs jobs in this process
(Hydra's basic launcher): :class:`SweepConfigs` composes once per structure and sets the plain
values of each further job on a copy (``tests/test_sweep.py`` checks it against Hydra's composition).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from omegaconf import DictConfig, OmegaConf, open_dict

from mlptrain.continuation import ContinuingLauncher

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


class MlptrainSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Done before Hydra started, by ``mlptrain.compose.precompose``."""

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        if config.hydra.launcher.get("_target_") == BASIC_LAUNCHER:  # jobs in this process share the cache
            hydra_context = dataclasses.replace(hydra_context, config_loader=SweepConfigs(hydra_context.config_loader))
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # skips finished jobs, retries transient failures
        self.launcher = ContinuingLauncher.around(self.launcher, config)


class SweepConfigs:
    """Hydra's config loader, except that ``load_sweep_config`` composes a job's config (~0.1 s) only
    for the first job of each structure: the same overrides, up to the values of plain keys.  A later
    job of that structure is a copy of the first one's config with its own values set as Hydra sets
    them (``OmegaConf.update(..., merge=True)``, in order), and its own ``hydra.overrides.task`` and
    ``hydra.job.override_dirname``.  Config groups, ``+``/``~``/``++`` overrides, packages and dict
    values keep the full composition."""

    def __init__(self, loader: Any):
        self._loader = loader
        self._first: dict[tuple, DictConfig] = {}  # structure -> the first job's config, as composed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(sweep_overrides))
        plain = [_plain_value(o, master_config) for o in parsed]
        structure = tuple(("<value>", o.key_or_group) if v else o.input_line for o, v in zip(parsed, plain))
        first = self._first.get(structure)
        if first is None:
            cfg = self._loader.load_sweep_config(master_config, list(sweep_overrides))
            self._first[structure] = copy.deepcopy(cfg)  # before the launcher and the job write to it
            return cfg
        cfg = copy.deepcopy(first)
        for o, v in zip(parsed, plain):
            if v:
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        task = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in task]
            cfg.hydra.job.override_dirname = _overrides_dirname(task, cfg.hydra.job.config.override_dirname)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg


def _plain_value(o: Any, master: DictConfig) -> bool:
    """An override that sets a value (not a group, not an addition or deletion) of a key the config has."""
    from hydra.core.override_parser.types import OverrideType

    from mlptrain.compose import names_a_value

    if o.package is not None or o.type != OverrideType.CHANGE or o.is_hydra_override() or "/" in o.key_or_group:
        return False
    if not names_a_value(o.key_or_group, master):
        return False
    value = o.value()
    return not isinstance(value, dict) and not (
        isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)
    )


def _overrides_dirname(overrides: list, conf: DictConfig) -> str:
    from hydra._internal.config_loader_impl import get_overrides_dirname

    return get_overrides_dirname(
        overrides=overrides, kv_sep=conf.kv_sep, item_sep=conf.item_sep, exclude_keys=conf.exclude_keys
    )


def register() -> None:
    """Call after ``precompose`` has checked the sweep, before Hydra composes its config."""
    from dataclasses import dataclass

    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    @dataclass
    class MlptrainSweeperConf(BasicSweeperConf):
        _target_: str = f"{__name__}.MlptrainSweeper"

    Plugins.instance().register(MlptrainSweeper)  # first use: Hydra's plugin scan runs (and stores their configs)
    ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=MlptrainSweeperConf, provider="mlptrain")
    _register_optuna()


def _register_optuna() -> None:
    """``hydra/sweeper=optuna`` as :class:`._optuna.MlptrainOptunaSweeper`, when the extra is installed
    (optuna itself is imported only when a study starts; its config: :mod:`mlptrain.study_config`)."""
    from hydra.core.plugins import Plugins

    from mlptrain import study_config

    if not study_config.installed():
        return
    from ._optuna import MlptrainOptunaSweeper

    Plugins.instance().register(MlptrainOptunaSweeper)
    study_config.store()  # again: the plugin scan may have stored another sweeper under that name

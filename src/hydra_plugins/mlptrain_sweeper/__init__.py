"""mlptrain's sweeper: Hydra's basic sweeper, without its second composition of every job.

Before it launches a batch, Hydra's basic sweeper composes the config of every job in it, so that
a job that cannot be composed fails the sweep before any job runs; the basic launcher then
composes each job again to run it.  A composition costs ~0.1 s of CPU, and those two are the
largest per-job cost of a sweep of short jobs run in one process.

``mlptrain`` has already done that check for the whole sweep (command line and
``hydra.sweeper.params``), once per distinct config structure rather than once per job, with
one-line errors (``mlptrain.cli.precompose``): whether a config composes depends only on its
config-group choices and Hydra settings, never on a plain value such as ``seed=3``.  So this
sweeper skips the per-batch composition; everything else is the basic sweeper.

:func:`register` makes it what ``hydra/sweeper=basic`` (Hydra's default) means inside the
``mlptrain`` command.  ``hydra/sweeper=optuna`` (``hparams_search=optuna``), when its extra is
installed, becomes Optuna's sweeper ending in one line when trials fail (see ``_optuna``).  Hydra only accepts
sweepers from the ``hydra_plugins`` namespace, hence this package's place, and its scan of that
namespace misses what an editable install provides, hence the registration by hand.
"""

from __future__ import annotations

from typing import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf


class MlptrainSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Done before Hydra started, by ``mlptrain.cli.precompose``."""


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
    (optuna itself is imported only when a study starts)."""
    from dataclasses import dataclass

    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    try:
        from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf

        from ._optuna import MlptrainOptunaSweeper
    except ImportError:
        return

    @dataclass
    class MlptrainOptunaSweeperConf(OptunaSweeperConf):
        _target_: str = f"{MlptrainOptunaSweeper.__module__}.MlptrainOptunaSweeper"

    Plugins.instance().register(MlptrainOptunaSweeper)
    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=MlptrainOptunaSweeperConf,
                                 provider="mlptrain")

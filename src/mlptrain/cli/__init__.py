"""The ``mlptrain`` command line: :mod:`~mlptrain.cli.train` (the command), ``help``, ``resume``."""

from mlptrain.cli.train import main, run

__all__ = ["main", "run"]

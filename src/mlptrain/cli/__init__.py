"""The ``mlptrain`` command line: :mod:`~mlptrain.cli.train` (the command), ``help``, ``resume``."""

from mlptrain.cli.train import command, main, run

__all__ = ["command", "main", "run"]

"""mlptrain: train multilayer perceptrons from the command line, and use them from Python.

``mlptrain.load(checkpoint)`` and ``mlptrain.train([...overrides])`` (:mod:`mlptrain.api`) import
torch when called: ``import mlptrain`` itself stays light.
"""

__version__ = "0.1.0"


def load(path):
    """A trained model from a checkpoint or a run dir: see :class:`mlptrain.api.Model`."""
    from mlptrain.api import load as _load

    return _load(path)


def train(overrides=(), **kwargs):
    """Train one run from Python, composed and validated as the ``mlptrain`` command does:
    see :func:`mlptrain.api.train`."""
    from mlptrain.api import train as _train

    return _train(overrides, **kwargs)

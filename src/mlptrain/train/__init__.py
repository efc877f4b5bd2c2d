"""Training one run: set-up, the loop, its state and checkpoints, guards and outputs."""

from mlptrain.train.loop import Trainer

__all__ = ["Trainer"]

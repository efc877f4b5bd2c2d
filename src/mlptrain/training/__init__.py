"""Training one run: set-up, the loop, its state and checkpoints, guards and outputs."""

from mlptrain.training.loop import Trainer

__all__ = ["Trainer"]

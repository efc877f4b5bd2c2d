"""Divergence guards: a non-finite loss, weights or validation loss stops the run in one line.

The checks read tensors the loop already holds (per-step losses, the weights) once per epoch or per
checkpoint, never per step, so they add no host-device synchronisation to the hot loop.  Their
messages name the step, the lr it used and the checkpoint that is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mlptrain.errors import TrainingError
from mlptrain.training.setup import Parts
from mlptrain.training.state import State


class Guards:
    def __init__(self, parts: Parts, state: State, kept: Callable[[], str]):
        self.p, self.state, self.kept = parts, state, kept  # kept(): which checkpoint survives, in words

    def check_finite(self, losses: torch.Tensor, start_step: int, epoch_end: bool = True) -> None:
        if self.p.cfg.nan_policy == "skip_batch":
            if epoch_end and not torch.isfinite(losses).any():
                raise TrainingError(
                    f"every batch of epoch {self.state.epoch + 1} gave a non-finite loss; " + self.kept()
                )
            return
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            i = int(bad[0])
            good = losses[:i]
            last = f"{good[-1].item():.4g}" if len(good) else "none this epoch"
            raise TrainingError(
                f"loss became non-finite at epoch {self.state.epoch + 1}, step {start_step + i + 1} "
                f"(lr {self.step_lr(i):.3g}, last finite loss {last}); {self.kept()}. Lower optim.lr, set "
                f"trainer.grad_clip, or set trainer.nan_policy=skip_batch"
            )

    def check_weights(self, losses: torch.Tensor) -> None:
        """A finite loss can still be followed by an update to inf/NaN weights: check them before a
        checkpoint is written (one reduction, at most once per epoch or per checkpoint)."""
        tensors = [t for t in self.p.model.state_dict().values() if t.is_floating_point()]
        if not tensors or bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
            return
        finite = losses[torch.isfinite(losses)]
        last = f"{finite[-1].item():.4g}" if len(finite) else "none this epoch"
        raise TrainingError(
            f"weights became non-finite in epoch {self.state.epoch + 1}, by step {self.state.step} "
            f"(lr {self.step_lr():.3g}, last finite loss {last}); {self.kept()}. Lower optim.lr or set "
            f"trainer.grad_clip"
        )

    def check_val(self, val: dict, train: dict) -> None:
        """Finite but huge weights can still overflow the forward pass: a model whose validation loss
        is not finite has diverged, and is not checkpointed."""
        if math.isfinite(val["loss"]):
            return
        raise TrainingError(
            f"validation loss became non-finite after epoch {self.state.epoch + 1}, step {self.state.step} "
            f"(lr {self.step_lr():.3g}, train loss {train['loss']:.4g}); {self.kept()}. Lower optim.lr or set "
            f"trainer.grad_clip"
        )

    def step_lr(self, i: int = -1) -> float:
        """The lr step i of this epoch used (default: the last step taken), for divergence messages: a
        per-step schedule has already moved the optimizer's lr on to the next step's."""
        lrs = self.p.schedule.step_lrs
        if lrs:
            return lrs[i] if -len(lrs) <= i < len(lrs) else lrs[-1]
        return self.p.optimizer.param_groups[0]["lr"]


def clip_stats(norms: torch.Tensor, clip: float) -> dict[str, float]:
    """The epoch's pre-clip global gradient norms: mean, max and the fraction of steps clipped."""
    norms = norms[torch.isfinite(norms)]  # fp16 overflow steps are skipped by the scaler anyway
    if not len(norms):
        return {"grad_norm": math.nan, "grad_norm_max": math.nan, "clip_frac": math.nan}
    mean, peak, frac = torch.stack([norms.mean(), norms.max(), (norms > clip).float().mean()]).tolist()
    return {"grad_norm": mean, "grad_norm_max": peak, "clip_frac": frac}

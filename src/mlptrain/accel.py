"""Devices, mixed precision and torch.compile for the trainer, safe on every device.

``trainer.device``: :func:`resolve_device` turns auto/cpu/cuda[:N]/mps into a device that exists here.

``trainer.precision``: fp32, or bf16/fp16 autocast of the model's forward pass
(the loss is computed in fp32 on its output; the trainer adds a gradient scaler for fp16).
Where a choice cannot work (bf16 on a GPU without it, autocast unavailable on
the device) it is a one-line ConfigError; on a CPU, bf16 uses AMX/AVX-512-BF16
where present and is merely slow where not.

``trainer.compile``: ``torch.compile`` of the model's forward.  Compilation
happens at the first call, where it can still fail (no C++ compiler for
inductor, an unsupported platform): :class:`CompiledForward` then says so in
one warning and continues with the eager model, which computes the same thing.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import nullcontext

import torch

from mlptrain.errors import ConfigError

log = logging.getLogger("mlptrain")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device: {name} requested but CUDA is not available here; valid: auto, cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device: {name} does not exist; {torch.cuda.device_count()} CUDA device(s) here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device: mps requested but not available here; valid: auto, cpu")
    return torch.device(name)


@torch.inference_mode()
def model_outputs(forward, x: torch.Tensor, batch_size: int, autocast=nullcontext) -> torch.Tensor:
    """Outputs for a whole split in ``batch_size`` slices (evaluation, test, eval and predict)."""
    with autocast():
        return torch.cat([forward(xb) for xb in x.split(batch_size)])


def autocast_for(precision: str, device: torch.device):
    """A factory of the autocast context for ``precision`` on ``device`` (fp32: none), or a ConfigError
    saying what the device can do instead."""
    if precision == "fp32":
        return nullcontext
    dev = device.type
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if not torch.amp.is_autocast_available(dev):
        raise ConfigError(f"trainer.precision: {precision} autocast is not available on {dev}; valid here: fp32")
    if dev == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("trainer.precision: bf16 is not supported by this GPU; valid here: fp32, fp16")
    # Autocast disables itself with a warning where the dtype is unsupported: make that an error too.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.autocast(dev, dtype=dtype)
        except (RuntimeError, ValueError, AssertionError) as e:
            reasons = [str(e)]
        else:
            reasons = [str(w.message) for w in caught if "support" in str(w.message) or "isabl" in str(w.message)]
    if reasons:
        raise ConfigError(
            f"trainer.precision: {precision} is not supported on {dev} ({reasons[0].splitlines()[0]}); valid here: fp32"
        )
    return lambda: torch.autocast(dev, dtype=dtype)


class CompiledForward:
    """Call ``torch.compile(model)``; if compiling fails, warn once and call ``model`` itself from then on.

    Batches vary in size (the last of an epoch, evaluation chunks), so the batch dimension is
    compiled as dynamic: one graph for training and one for evaluation, not one per size.
    """

    def __init__(self, model: torch.nn.Module, backend: str = "inductor", mode: str = "default"):
        self.model = model
        try:
            self.compiled = torch.compile(
                model, backend=backend, mode=None if mode == "default" else mode, dynamic=True
            )
        except Exception as e:  # noqa: BLE001 - an unknown backend, or torch.compile unsupported on this Python
            from torch._dynamo.exc import InvalidBackend

            if isinstance(e, InvalidBackend):
                from torch._dynamo import list_backends

                raise ConfigError(
                    f"trainer.compile_backend: unknown backend {backend!r}; valid choices: "
                    f"{', '.join(list_backends(exclude_tags=()))}"
                ) from None
            self._give_up(e)

    def _give_up(self, err: BaseException) -> None:
        cause = getattr(err, "inner_exception", None) or err.__cause__ or err  # the backend's own error
        first = next((ln.strip() for ln in str(cause).splitlines() if ln.strip()), "")
        log.warning(
            "trainer.compile: torch.compile cannot compile this model here (%s: %s); training without it",
            type(cause).__name__,
            first[:300],
        )
        self.compiled = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except torch._dynamo.exc.TorchDynamoException as e:  # compilation failed: nothing has run yet
                self._give_up(e)
        return self.model(x)  # a genuine error in the model surfaces here, uncompiled


# Multiply-adds per optimizer step (batch x parameters, forward) that one more thread needs before it pays for
# its synchronisation: MNIST's 784-256-256-10 at batch 128 (34M) ran 1.5x slower on 2 threads than on 1 on a quiet
# 2-core machine (benchmarks/threads.py).
WORK_PER_THREAD = 64_000_000


def free_cores() -> tuple[int, int]:
    """(cores this process may use, of them the ones not busy with other work now: 1-minute load average)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not on this platform
        load = 0.0
    return cores, max(1, min(cores, round(cores - load)))


def auto_threads(parameters: int, batch_size: int, device: torch.device) -> tuple[int, str]:
    """``trainer.num_threads=auto``: (threads, why); 0 leaves torch's default (an accelerator does the work).
    One thread per WORK_PER_THREAD of work per step, at most the free cores: a thread on a busy core waits for
    the other process at every parallel region, which made runs 5-20x slower than one thread under load."""
    if device.type != "cpu":
        return 0, "the accelerator does the work"
    if os.environ.get("OMP_NUM_THREADS"):  # the environment has chosen (torch's default follows it)
        return 0, "OMP_NUM_THREADS is set"
    cores, free = free_cores()
    work = parameters * batch_size
    threads = max(1, min(free, work // WORK_PER_THREAD))
    return threads, f"{work / 1e6:.1f}M multiply-adds per step, {free} of {cores} cores free"

"""Where this process stands in a data-parallel job, read from the environment torchrun sets.

Torch-free at module level (the CLI and the run-dir resolver ask before torch is imported); the
process-group calls import ``torch.distributed`` when there is a group to join.
"""

from __future__ import annotations

import logging
import os
import sys


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def launched() -> bool:
    """True inside a process started by torchrun (or our elastic launch) as one of several ranks."""
    return env_int("WORLD_SIZE", 1) > 1


def env_rank() -> int:
    return env_int("RANK", 0) if launched() else 0


def init() -> None:
    """Join the process group that torchrun described in the environment (idempotent).

    Both backends are registered when CUDA exists: CPU tensors (the run-dir hand-over, CPU training)
    go through gloo, CUDA tensors through nccl.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def shutdown() -> None:
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def from_rank0(make):
    """``make()`` on rank 0, and its (picklable) result on every rank; a plain call in one process."""
    if not launched():
        return make()
    import torch.distributed as dist

    init()
    box = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def hydra_overrides() -> list[str]:
    """Extra Hydra overrides for this process: ranks other than 0 save no ``.hydra/`` of their own."""
    return ["hydra.output_subdir=null"] if env_rank() > 0 else []


def quiet_logging() -> None:
    """Ranks other than 0: warnings and errors on the console only (rank 0 owns the log file)."""
    if env_rank() == 0:
        return
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
            h.close()
    root.setLevel(logging.WARNING)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

"""Every error a user is meant to read, its exit code, and the one-line rendering.

An error of these types reaches the user as one line, never a traceback: bad input
(config, data, checkpoint) exits 2, a training failure (divergence, failed jobs) 1, an
interrupt 128 + the signal number.  Torch-free, so the CLI can import it before torch.
"""

from __future__ import annotations

import signal
import sys

# Exit codes: 2 = bad input (config, data, checkpoint), 1 = training failed (divergence, failed jobs).
EXIT_BAD_INPUT, EXIT_FAILED = 2, 1


class ConfigError(ValueError):
    """A bad configuration value: the message is one line for the user."""


class DataError(RuntimeError):
    """A dataset that cannot be loaded: the message is one line for the user."""


class CheckpointError(RuntimeError):
    """A checkpoint (or another run output) that cannot be written or read: one line for the user."""


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must see (divergence): one line."""


class TrainingInterrupted(TrainingError):
    """A SIGINT/SIGTERM stopped training after a step; ``last.pt`` holds it.  Exit code 128 + signum."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Abort(KeyboardInterrupt):
    """A second stop signal: leave at once.  ``exit_code`` is 128 + signum, like the shell reports it."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"stopped at once by a second {signal.Signals(signum).name}")
        self.signum, self.exit_code = signum, 128 + signum

    @property
    def message(self) -> str:
        return str(self)


class TrialFailed(RuntimeError):
    """A job of an optimising sweep failed (its one-line reason is the message)."""


BAD_INPUT = (ConfigError, DataError, CheckpointError)  # exit 2
# What a DDP worker relays to the launching process (which re-raises the same exception).
USER_ERRORS = (*BAD_INPUT, TrainingError, TrainingInterrupted, Abort)


def exit_code(e: BaseException, default: int) -> int:
    """Interrupts exit like the shell reports a signal: 130 for SIGINT, 143 for SIGTERM."""
    return getattr(e, "exit_code", default)


def printable(text: str) -> str:
    """Text for a one-line message: control characters (a newline in an option name) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def out_of_memory(e: BaseException) -> TrainingError | None:
    """A failed allocation (host or GPU) as one line, or None for any other error."""
    torch = sys.modules.get("torch")  # torch-free: an OOM can only come from torch once it is imported
    oom_types = (MemoryError,) + ((torch.OutOfMemoryError,) if torch is not None else ())
    text = str(e).strip()
    if not (isinstance(e, oom_types) or "can't allocate memory" in text or "out of memory" in text.lower()):
        return None
    detail = text.split("you tried to allocate ")[-1].split(".")[0] if "tried to allocate" in text else ""
    return TrainingError(
        "out of memory"
        + (f" (tried to allocate {detail})" if detail else "")
        + ": use a smaller model.hidden, trainer.batch_size or trainer.eval_batch_size"
    )


def to_record(e: BaseException) -> dict:
    """A user error as JSON-able data, for the DDP relay from a worker to the launching process."""
    return {"type": type(e).__name__, "message": str(e), "exit_code": getattr(e, "exit_code", None)}


def from_record(record: dict) -> BaseException:
    """The exception :func:`to_record` described, with its message and exit code."""
    kind, message = record["type"], record["message"]
    if kind == "TrainingInterrupted":
        return TrainingInterrupted(message, record["exit_code"])
    if kind == "Abort":
        return Abort(record["exit_code"] - 128, message)
    return {c.__name__: c for c in USER_ERRORS}[kind](message)

"""Graceful stops: the first SIGINT/SIGTERM asks the loop to stop after the current step.

The handler only sets a flag, which the training loop reads once per step (a
Python attribute check: no device sync).  The loop then writes ``last.pt`` and
exits with 128 + the signal number.  A second signal means "now": it raises
:class:`Abort` wherever the program is; checkpoint writes are atomic, so the
files on disk stay whole.

Where there is no step to finish (start-up, the final pictures and the test, between the jobs of a
sweep) the handler is ``at_once``: the first signal raises :class:`Abort` right away, since last.pt
(if any) is already current.  So a signal at any moment stops the run, and the sweep, with 128 + its
number.

:func:`pause` is a test hook: with ``MLPTRAIN_TEST_PAUSE=<phase>:<file>`` in the environment, the
named phase creates ``<file>`` and waits there for a signal, so a test can signal a real process at
a known phase without depending on the machine's speed.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from mlptrain.errors import Abort
from mlptrain.parallel.env import launched

__all__ = ["Abort", "GracefulStop"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_S = 2.0  # DDP: a second signal sooner than this is the first one delivered twice
PAUSE_ENV = "MLPTRAIN_TEST_PAUSE"
PAUSE_MAX_S = 120.0  # a forgotten hook does not hang a run for ever
_delivered = 0  # stop signals handled so far (the test hook waits for the next one)
_paused: set[str] = set()  # each phase pauses once per process


class GracefulStop:
    """Context manager that turns the first stop signal into ``self.received`` (the signal number)."""

    def __init__(self, signums=STOP_SIGNALS, at_once: bool = False):
        self.signums = signums
        self.received: int | None = None
        self.at_once = at_once  # nothing to finish: the first signal raises Abort
        self._previous: dict = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {s: signal.signal(s, self._handle) for s in self.signums}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        global _delivered
        _delivered += 1
        if self.at_once:
            self.received, self._at = signum, time.monotonic()
            raise Abort(signum, f"interrupted by {signal.Signals(signum).name}")
        if self.received is not None:
            # One of several ranks: the launcher forwards what the terminal or SLURM also sent every rank,
            # so a second signal right after the first is the same request, not "stop now".
            if launched() and time.monotonic() - self._at < REPEAT_S:
                return
            raise Abort(signum)
        self.received, self._at = signum, time.monotonic()
        # os.write, not print: a handler that prints while the loop prints can hit a reentrant-write error.
        again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        os.write(
            2,
            f"\nmlptrain: {signal.Signals(signum).name} received: saving after this step "
            f"({again} again to stop at once)\n".encode(),
        )

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or 0)


def pause(phase: str) -> None:
    """Test hook (module docstring): at ``phase``, announce it in a file and wait for a stop signal."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec or spec.partition(":")[0] != phase or phase in _paused:
        return
    _paused.add(phase)
    seen = _delivered
    with open(spec.partition(":")[2], "w"):
        pass
    end = time.monotonic() + PAUSE_MAX_S
    while _delivered == seen and time.monotonic() < end:  # an at_once handler raises out of the sleep
        time.sleep(0.01)

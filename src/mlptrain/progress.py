"""Console progress: a live bar on a terminal, one concise line per epoch otherwise."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("mlptrain")


class Progress:
    def __init__(self, mode: str, epochs: int, stream=None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "epoch"
        self.mode, self.epochs = mode, epochs
        self._next_draw = 0.0
        self._drawn = False

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.t0 = epoch, time.perf_counter()

    def step(self, i: int, n: int) -> None:
        if self.mode != "bar":
            return
        now = time.perf_counter()
        if now < self._next_draw and i < n:
            return  # redraw at most 10 times a second: the bar must not cost training time
        self._next_draw = now + 0.1
        width = 30
        done = int(width * i / n)
        rate = i / max(now - self.t0, 1e-9)
        self.stream.write(
            f"\repoch {self.epoch}/{self.epochs} [{'=' * done}{' ' * (width - done)}] {i}/{n} {rate:.0f} it/s"
        )
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False

    def end_epoch(self, line: str) -> None:
        self._clear()
        if self.mode != "none":
            log.info(line)

    def close(self) -> None:
        self._clear()

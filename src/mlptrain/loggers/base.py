"""The logger seam: what the trainer tells a logger, and what a resumed run asks of it.

The trainer talks to one object, a :class:`Fanout` over the loggers named in ``trainer.loggers``
(a :class:`NullLogger` on DDP ranks other than 0).  A logger is one class with the methods of
:class:`Logger`; it may ignore any of them (the CSV logger keeps the epoch rows and the test metrics
only).  Stdlib only: the CLI imports this package before torch.  A logger's failed write (an
OSError) reaches the user as one line from :class:`Fanout`, which leaves that logger out from then on.

The resume contract.  The trainer flushes every logger right before it writes a checkpoint, so at
that moment the logs hold exactly what the checkpoint's state has seen.  A stopped run (SIGKILL,
Ctrl-C, divergence) may have logged more after its last checkpoint; the resumed run logs that again.
So :meth:`Logger.open`, given the :class:`ResumePoint`, first drops from the run dir whatever was
logged after it (TensorBoard: events written after ``saved_at``; CSV: rows after ``epoch``), and the
resumed run then appends exactly what an uninterrupted run would have written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from mlptrain.errors import CheckpointError


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a resumed run continues from."""

    epoch: int  # epochs it had completed
    step: int  # optimizer steps it had taken
    saved_at: float | None  # wall time it was written, after the loggers' flush (None: a checkpoint without it)


class Logger(Protocol):
    """What every logger implements.  ``step`` is the epoch unless a method says otherwise."""

    takes_media: ClassVar[bool]  # images, histograms and the diagnostics' scalars (False: never sent them)
    continued: bool  # set by open(): it continues a stopped run's record, which has the run's header already

    @classmethod
    def open(cls, out_dir: Path, resume: ResumePoint | None) -> Logger:
        """Start logging into the run dir ``out_dir``.  ``resume``: the run continues from this
        checkpoint; if the dir holds this logger's record of the stopped run, cut it back to the
        checkpoint and continue it (``continued = True``), else start a new record."""
        ...

    def epoch(self, row: dict[str, Any]) -> None:
        """One finished epoch: the row ``metrics.json``'s history gets (epoch, step, lr, time_s,
        samples_per_s, train/*, val/*)."""

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def series(self, tag: str, values: list[float], first_step: int) -> None:
        """Values of consecutive optimizer steps (``lr/step``), starting at ``first_step``."""

    def text(self, tag: str, body: str, step: int | None = None) -> None:
        """Markdown: the config (``config``), the misclassified tiles' table."""

    def image(self, tag: str, img: Any, step: int) -> None:
        """A ``(3, H, W)`` picture: uint8 pixels (:mod:`mlptrain.images`), or floats in [0, 1]."""

    def histogram(self, tag: str, values: Any, step: int) -> None:
        """A tensor's finite values."""

    def hparams_start(self, hparams: dict, metric_tags: list[str]) -> None:
        """A new record's header: the hyperparameters and the tags of the final metrics to come
        (``hparam/best_val_<monitor>``, ``hparam/test_<metric>``, ``hparam/train_time_s``)."""

    def hparams_end(self, metrics: dict[str, float], step: int) -> None:
        """The final metrics, under the tags announced by :meth:`hparams_start`."""

    def flush(self) -> None:
        """Everything so far on disk (called before every checkpoint: the resume contract)."""

    def close(self) -> None: ...


class NullLogger:
    """Writes nothing: DDP ranks other than 0 (rank 0 owns the run dir), or ``trainer.loggers=[]``."""

    takes_media: ClassVar[bool] = False
    continued = True

    @classmethod
    def open(cls, out_dir: Path, resume: ResumePoint | None) -> NullLogger:
        return cls()

    def epoch(self, row: dict[str, Any]) -> None:
        pass

    def scalars(self, values: dict[str, float], step: int) -> None:
        pass

    def series(self, tag: str, values: list[float], first_step: int) -> None:
        pass

    def text(self, tag: str, body: str, step: int | None = None) -> None:
        pass

    def image(self, tag: str, img: Any, step: int) -> None:
        pass

    def histogram(self, tag: str, values: Any, step: int) -> None:
        pass

    def hparams_start(self, hparams: dict, metric_tags: list[str]) -> None:
        pass

    def hparams_end(self, metrics: dict[str, float], step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def write_failure(name: str, e: OSError, out_dir: Path | None = None) -> CheckpointError:
    """Logger ``name``'s failed write (full disk, file-size limit, the run dir deleted) as one line."""
    where = f" in {out_dir}" if out_dir is not None else ""
    return CheckpointError(f"cannot write the {name} log{where}: {e.strerror or e}")


def _quiet_writer_threads() -> None:
    """TensorBoard writes from a thread that, when a write fails, prints its traceback and hands the
    error to the next call of the main thread (where :class:`Fanout` makes it one line): not the
    thread's traceback too."""
    previous = threading.excepthook
    if getattr(previous, "mlptrain", False):
        return

    def hook(args):
        if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)

    hook.mlptrain = True
    threading.excepthook = hook


class Fanout:
    """Several loggers as one: each call goes to all of them, images and histograms only to those that
    take them (``takes_media``).  With none that does, the trainer skips drawing them at all.

    A logger that cannot write (an OSError) stops the run with one CheckpointError line naming it and
    ``out_dir``; it is then left out of every later call (closing it would only raise again)."""

    def __init__(self, loggers: list[Logger], out_dir: Path | None = None):
        self.loggers = list(loggers)
        self.out_dir = out_dir
        self._media = [lg for lg in self.loggers if lg.takes_media]
        _quiet_writer_threads()

    @property
    def takes_media(self) -> bool:
        return bool(self._media)

    def _each(self, loggers: list, call) -> None:
        for lg in list(loggers):
            try:
                call(lg)
            except OSError as e:
                self._drop(lg)
                raise write_failure(type(lg).__name__, e, self.out_dir) from None

    def _drop(self, lg) -> None:
        for group in (self.loggers, self._media):
            if lg in group:
                group.remove(lg)

    def epoch(self, row: dict[str, Any]) -> None:
        self._each(self.loggers, lambda lg: lg.epoch(row))

    def scalars(self, values: dict[str, float], step: int) -> None:
        self._each(self.loggers, lambda lg: lg.scalars(values, step))

    def series(self, tag: str, values: list[float], first_step: int) -> None:
        self._each(self.loggers, lambda lg: lg.series(tag, values, first_step))

    def text(self, tag: str, body: str, step: int | None = None) -> None:
        self._each(self.loggers, lambda lg: lg.text(tag, body, step))

    def image(self, tag: str, img: Any, step: int) -> None:
        self._each(self._media, lambda lg: lg.image(tag, img, step))

    def histogram(self, tag: str, values: Any, step: int) -> None:
        self._each(self._media, lambda lg: lg.histogram(tag, values, step))

    def hparams_start(self, hparams: dict, metric_tags: list[str]) -> None:
        self._each(self.loggers, lambda lg: lg.hparams_start(hparams, metric_tags))

    def hparams_end(self, metrics: dict[str, float], step: int) -> None:
        self._each(self.loggers, lambda lg: lg.hparams_end(metrics, step))

    def flush(self) -> None:
        self._each(self.loggers, lambda lg: lg.flush())

    def close(self) -> None:
        """Close every logger, even when one fails (the first failure is raised after)."""
        error = None
        for lg in list(self.loggers):
            try:
                lg.close()
            except OSError as e:
                self._drop(lg)
                error = error or write_failure(type(lg).__name__, e, self.out_dir)
            except Exception as e:  # noqa: BLE001
                error = error or e
        if error is not None:
            raise error

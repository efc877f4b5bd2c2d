"""TensorBoard logging: scalars, the config as text, and HParams written into the job's own run.

``SummaryWriter.add_hparams`` writes to a new timestamped sub-run; instead we write
the HParams plugin's session summaries into the run's own event file, so each job is
exactly one run and one row of the HParams table (the columns: :mod:`mlptrain.loggers.hparams`).

No series twice: where the loss *is* the negative log-likelihood (cross-entropy without label
smoothing, Gaussian and Laplace NLL: equal on the first epoch), ``*/nll`` is left out (the run's
monitored ``val/nll`` is then the ``val/loss`` curve).  The per-step learning rate is ``step/lr`` (its x axis is the
optimizer step), apart from the per-epoch ``lr``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mlptrain.files import atomic_write
from mlptrain.loggers import crc32c
from mlptrain.loggers import hparams as hp
from mlptrain.loggers.base import ResumePoint

SERIES_TAGS = {"lr/step": "step/lr"}  # per-step series: their own group, not the per-epoch lr's


def _monitor(metric_tags: list[str]) -> str | None:
    return next((t[len("hparam/best_val_") :] for t in metric_tags if t.startswith("hparam/best_val_")), None)


def ordered(metric_tags: list[str]) -> list[str]:
    """The monitored metric, then its test value, then the other test metrics, train time last."""
    monitor = _monitor(metric_tags)
    first = [t for t in (f"hparam/best_val_{monitor}", f"hparam/test_{monitor}") if t in metric_tags]
    return first + [t for t in metric_tags if t not in first]


class TensorBoard:
    """``events.out.tfevents.*`` in the run dir (the ``Logger`` of :mod:`mlptrain.loggers.base`)."""

    takes_media = True

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # Without TensorFlow, TensorBoard checksums each record byte by byte in Python (20 ms for a
        # 100 KB picture, holding the GIL); every event file this process writes from now on (this
        # writer's, the HParams experiment summary) takes the numpy CRC instead, ~50x faster.
        crc32c.install()
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.log_dir = Path(log_dir)
        self.continued = False
        self.hparams: dict = {}
        self.metric_tags: list[str] = []
        self.duplicate: str | None = None  # "nll" or "loss": the metric equal to the other, left out
        self._decided = False
        self._encoder = _Encoder()

    @classmethod
    def open(cls, out_dir: Path, resume: ResumePoint | None) -> TensorBoard:
        """Resuming in the run's own dir continues its TensorBoard run, cut back to the checkpoint;
        a checkpoint resumed elsewhere starts one."""
        continued = resume is not None and any(Path(out_dir).glob("events.out.tfevents.*"))
        purge = None
        if continued and resume.saved_at is not None:  # drop what a stopped run logged after its checkpoint
            drop_events_after(out_dir, resume.saved_at)
        elif continued:  # a checkpoint without its time: scalars are per epoch
            purge = resume.epoch + 1
        tb = cls(out_dir, purge_step=purge)
        tb.continued = continued
        if continued:  # the header is written; its record says which columns the run announced
            try:
                rec = json.loads((Path(out_dir) / hp.RECORD).read_text(encoding="utf-8"))
                tb.hparams, tb.metric_tags = dict(rec["hparams"]), list(rec["metrics"])
                tb.duplicate = rec.get("duplicate")
                tb._decided = tb.duplicate is not None  # else the first epoch row after the resume decides
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return tb

    def epoch(self, row: dict[str, Any]) -> None:
        """An epoch's train/* and val/* scalars, its lr and throughput, at the epoch."""
        if not self._decided:
            self._decided = True
            loss, nll = row.get("val/loss"), row.get("val/nll")
            if loss is not None and nll is not None and math.isclose(loss, nll, rel_tol=1e-6, abs_tol=1e-9):
                self.duplicate = "nll"  # */loss is the name every user looks for, whatever the monitor
            if self.hparams or self.metric_tags:
                hp.record(self.log_dir, self.hparams, self.metric_tags, self.duplicate)
        skip = set()
        if self.duplicate:  # train/ has a loss and no nll: its loss is no duplicate
            other = "loss" if self.duplicate == "nll" else "nll"
            skip = {f"{split}/{self.duplicate}" for split in ("train", "val") if f"{split}/{other}" in row}
        self.scalars({k: v for k, v in row.items() if "/" in k and k not in skip}, row["epoch"])
        self.scalars({"lr": row["lr"], "throughput/samples_per_s": row["samples_per_s"]}, row["epoch"])

    def scalars(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def series(self, tag: str, values: list[float], first_step: int) -> None:
        """Values of consecutive steps, collected on the host and written in one go."""
        tag = SERIES_TAGS.get(tag, tag)
        for i, v in enumerate(values):
            self.writer.add_scalar(tag, v, first_step + i)

    def text(self, tag: str, body: str, step: int | None = None) -> None:
        self.writer.add_text(tag, body, step)

    def image(self, tag: str, img, step: int) -> None:
        """A ``(3, H, W)`` picture (uint8, or floats in [0, 1]), as PNG at zlib level 1 (``add_image``: level 6).

        Encoded by this logger's picture thread (:class:`_Encoder`), so the loop goes on (the test pass
        after the final pictures, say) while zlib compresses: Pillow releases the GIL for most of the
        encoding (two threads encode 1.6x as many pictures as one).  The event keeps the time of this
        call, and :meth:`flush` (before every checkpoint) and :meth:`close` wait for the thread, so a
        resume keeps exactly the pictures logged before its checkpoint, as with a synchronous write.

        Measured per picture, encode + CRC + write (``benchmarks/tb_write_cost.py``, the real pictures):
        level 6 takes 1.3-1.9x level 1's time (decision boundary 4.3 -> 8.3 ms, 10-class confusion matrix
        15 -> 22 ms, grid of mistakes 5.0 -> 8.2 ms) to save 7-24% of the bytes (3-6 KB), and level 3
        saves 2-10% for ~5% more time.  With :mod:`mlptrain.loggers.crc32c` those bytes cost ~0.005 ms/KB
        to checksum, so the encoder's time is all that counts."""
        import time

        from mlptrain.images import to_uint8

        # the (H, W, 3) bytes Pillow takes, copied once (~0.1 ms): the caller may change its tensor after this
        arr = to_uint8(img.detach().cpu()).permute(1, 2, 0).numpy().copy(order="C")
        self._encoder.submit(self._write_png, tag, arr, step, time.time())

    def _write_png(self, tag: str, arr, step: int, wall_time: float) -> None:
        import io

        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
        png = Summary.Image(height=arr.shape[0], width=arr.shape[1], colorspace=3, encoded_image_string=buf.getvalue())
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=png)]), step, wall_time)

    def histogram(self, tag: str, values, step: int, bins: int = 64) -> None:
        """Histogram of a tensor's finite values, binned by torch (``add_histogram`` goes through
        numpy and float64 BLAS, ~30x slower); equal bins, TensorBoard resamples them anyway."""
        import torch

        v = values.detach().flatten().float()
        if not v.numel():
            return
        # min and max are NaN or infinite only when some value is: the (costly) mask only then
        mn, mx = torch.aminmax(v)
        if not (torch.isfinite(mn) and torch.isfinite(mx)):
            v = v[torch.isfinite(v)]
            if not v.numel():
                return
            mn, mx = torch.aminmax(v)
        mn, mx, total, squares = torch.stack([mn, mx, v.sum(), v.pow(2).sum()]).tolist()
        lo, hi = mn, mx
        if lo == hi:  # (in float32, as the values are)
            lo, hi = float(torch.tensor(lo) - 0.5), float(torch.tensor(hi) + 0.5)
        counts = torch.histc(v, bins, lo, hi)
        edges = torch.linspace(lo, hi, bins + 1)[1:]
        self.writer.add_histogram_raw(tag, mn, mx, v.numel(), total, squares, edges.tolist(), counts.tolist(), step)

    def hparams_start(self, hparams: dict, metric_tags: list[str]) -> None:
        """The run's row of the HParams table (its values); its record feeds the columns above it."""
        self.hparams = {k: hp.value(v) for k, v in hparams.items()}
        self.metric_tags = ordered(list(metric_tags))
        self.writer.file_writer.add_summary(hp.session_start(self.hparams))
        hp.record(self.log_dir, self.hparams, self.metric_tags)

    def hparams_end(self, metrics: dict[str, float], step: int) -> None:
        """Final metrics as the ``hparam/*`` scalars the HParams table reads (a duplicate left out)."""
        drop = f"hparam/test_{self.duplicate}" if self.duplicate else None
        for k, v in metrics.items():
            if k != drop:
                self.writer.add_scalar(k, v, step)
        self.writer.file_writer.add_summary(hp.session_end())
        if drop in self.metric_tags:
            self.metric_tags = [t for t in self.metric_tags if t != drop]
        if self.hparams or self.metric_tags:  # (a resumed run without its record keeps none)
            hp.record(self.log_dir, self.hparams, self.metric_tags, self.duplicate)

    def flush(self) -> None:
        self._encoder.wait()  # the pictures logged so far (their write's OSError is raised here)
        self.writer.flush()

    def close(self) -> None:
        try:
            self._encoder.close()
        finally:
            self.writer.close()


class _Encoder:
    """One thread that runs a logger's picture writes in the order they were submitted.

    ``wait`` returns when every write submitted so far is done and raises the first one's exception
    (an OSError: a full disk); ``close`` waits too and ends the thread.  The thread starts with the
    first picture, so a run that draws none has none."""

    def __init__(self) -> None:
        self._pool = None
        self._pending: list = []

    def submit(self, fn, *args) -> None:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlptrain-pictures")
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        self._pending.append(self._pool.submit(fn, *args))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        error = None
        for f in pending:
            e = f.exception()  # (waits for it)
            error = error or e
        if error is not None:
            raise error

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


def drop_events_after(log_dir: Path, wall_time: float) -> int:
    """Cut a run's event files back to ``wall_time`` (when the checkpoint being resumed was written).

    Whatever a stopped process logged after its last checkpoint is logged again by the resumed run,
    so it must go.  ``SummaryWriter(purge_step=...)`` cannot do this here: it purges one step axis for
    every tag, and the run logs some tags per epoch and others (``lr/step``) per optimizer step.  A
    record cut short by a kill is dropped too.  Returns the number of events dropped.
    """
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    crc32c.install()  # (see TensorBoard.__init__)
    dropped = 0
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        records = list(RawEventFileLoader(str(path)).Load())
        keep = [r for r in records if event_pb2.Event.FromString(r).wall_time <= wall_time]
        whole = path.stat().st_size == sum(len(r) + 16 for r in records)  # 16: length, crcs
        if len(keep) == len(records) and whole:
            continue
        dropped += len(records) - len(keep)
        if not keep:
            path.unlink()
            continue

        def write(f, keep=keep):
            out = RecordWriter(f)
            for r in keep:
                out.write(r)

        atomic_write(path, write)
    return dropped

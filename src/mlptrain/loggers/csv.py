"""``metrics.csv`` in the run dir: the training curves as a table, for a spreadsheet or pandas.

One row per epoch, with the values of ``metrics.json``'s history (``epoch, step, lr, time_s,
samples_per_s, train/*, val/*``; floats in Python's shortest round-trip form, ``nan`` where the
history has NaN).  After the last epoch comes one more row with the test metrics in ``test/*``
columns (the best validation epoch's weights on the test split, as in ``metrics.json``'s ``test``),
at the last epoch and step, its other cells empty: the ``test/*`` cells are empty on every epoch
row, and the ``train/*``/``val/*`` cells on the test row, so a chart of ``val/acc`` over ``epoch``
is unaffected by it.

The header is fixed when the first row is written: that row's columns, then one ``test/<metric>``
column per test metric the run announced (``hparams_start``), so it does not change when the test
row arrives.  A resumed run keeps the file's own header.  A column a later row brings (a resume that
turned on ``trainer.grad_clip`` adds ``train/grad_norm``...) widens the header and rewrites the file
once, the earlier rows with empty cells there, rather than misaligning the table.

Rows are written through a buffered file that is flushed right before every checkpoint (with the
TensorBoard events), so on resume :meth:`CSVLogger.open` keeps the rows up to the checkpoint's epoch,
drops the later ones (and a test row, and a line a kill cut short) and the resumed run appends
exactly the rows an uninterrupted run would have written.  Stdlib only (``csv``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from mlptrain.errors import CheckpointError
from mlptrain.files import atomic_write
from mlptrain.loggers.base import NullLogger, ResumePoint

FILE = "metrics.csv"
TEST_TAG = "hparam/test_"  # the test metrics' HParams tags (Trainer.metric_tags) -> test/<metric> columns


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else str(v)  # repr: the shortest string that reads back equal


def _lines(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _epoch(row: dict[str, str]) -> float:
    try:
        return int(row.get("epoch") or "")
    except ValueError:
        return float("inf")  # not an epoch row of ours: dropped on resume


def _is_test(row: dict[str, str]) -> bool:
    return any(v for k, v in row.items() if k.startswith("test/"))


def _read(path: Path) -> tuple[list[str], list[dict[str, str]], str] | None:
    """The header, the rows and the text of ``path``; None without a complete header line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    whole = text.split("\n")[:-1]  # the last piece is "" or a line a kill cut short: no row
    if not whole:
        return None
    header, *cells = list(csv.reader(whole))
    rows = [dict(zip(header, c)) for c in cells if len(c) == len(header)]
    return header, rows, text


def _table(header: list[str], rows: list[dict[str, str]]) -> str:
    return _lines([header] + [[r.get(c, "") for c in header] for r in rows])


def _guarded(path: Path, write):
    """A failed write (full disk, no permission) as one line, like metrics.json's."""
    try:
        return write()
    except OSError as e:
        raise CheckpointError(f"cannot write {FILE} {path}: {e.strerror or e}") from None


def _replace(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    _guarded(path, lambda: atomic_write(path, lambda f: f.write(data)))


class CSVLogger(NullLogger):  # NullLogger: the no-ops for what a CSV does not hold
    """``metrics.csv``: the epoch rows and the test row (images, histograms, text and the per-step
    ``lr/step`` series are TensorBoard's; this logger ignores them)."""

    takes_media = False

    def __init__(self, path: Path, header: list[str] | None = None, rows: list[dict[str, str]] | None = None):
        """A new file at ``path`` (replacing one there), or the file already there with its ``header``
        and ``rows``, continued."""
        self.path = Path(path)
        self.continued = header is not None
        self.header: list[str] = list(header or [])  # [] until the first row
        self.rows: list[dict[str, str]] = list(rows or [])  # the file's rows, for a rewrite with a wider header
        self.test_columns: list[str] = []
        self._file = self._open("a" if self.continued else "w")

    @classmethod
    def open(cls, out_dir: Path, resume: ResumePoint | None) -> CSVLogger:
        """A resumed run continues the dir's metrics.csv without the rows logged after its checkpoint."""
        path = Path(out_dir) / FILE
        found = _read(path) if resume is not None else None
        if found is None:
            return cls(path)
        header, rows, text = found
        rows = [r for r in rows if not _is_test(r) and _epoch(r) <= resume.epoch]
        if _table(header, rows) != text:
            _replace(path, _table(header, rows))
        return cls(path, header, rows)

    # --------------------------------------------------------------------------- rows
    def epoch(self, row: dict[str, Any]) -> None:
        self._write(row)

    def hparams_start(self, hparams: dict, metric_tags: list[str]) -> None:
        self.test_columns = [f"test/{t[len(TEST_TAG) :]}" for t in metric_tags if t.startswith(TEST_TAG)]

    def hparams_end(self, metrics: dict[str, float], step: int) -> None:
        test = {f"test/{k[len(TEST_TAG) :]}": v for k, v in metrics.items() if k.startswith(TEST_TAG)}
        if test:
            last_step = next((r["step"] for r in reversed(self.rows) if r.get("step")), None)
            self._write({"epoch": step, "step": last_step, **test})

    def _write(self, values: dict[str, Any]) -> None:
        row = {k: _cell(v) for k, v in values.items()}
        if not self.header:
            self.header = list(row) + [c for c in self.test_columns if c not in row]
            self._put(_lines([self.header]))
        new = [k for k in row if k not in self.header]
        self.rows.append(row)
        if new:  # a wider header: the whole file again, the earlier rows with empty cells
            at = next((i for i, c in enumerate(self.header) if c.startswith("test/")), len(self.header))
            for k in new:
                if k.startswith("test/"):
                    self.header.append(k)
                else:
                    self.header.insert(at, k)
                    at += 1
            self._file.close()
            _replace(self.path, _table(self.header, self.rows))
            self._file = self._open("a")
            return
        self._put(_lines([[row.get(c, "") for c in self.header]]))

    def _open(self, mode: str):
        return _guarded(self.path, lambda: open(self.path, mode, newline="", encoding="utf-8"))

    def _put(self, text: str) -> None:
        _guarded(self.path, lambda: self._file.write(text))

    # --------------------------------------------------------------------------- the rest
    def flush(self) -> None:
        _guarded(self.path, self._file.flush)

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()

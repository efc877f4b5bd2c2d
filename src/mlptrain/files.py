"""Run outputs on disk: atomic writes, JSON, and the failure record beside a run.

A crash, a full disk or a SIGKILL mid-write leaves the previous file whole: every write goes to a
temp file in the same folder, is fsynced, and is renamed over the target.  Torch-free.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from mlptrain.errors import CheckpointError


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file in the same folder, fsync, then rename over ``path``.

    A crash or a full disk leaves the previous file intact; the temp file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a run's files follow the umask like its logs
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: Path) -> None:
    """Drop the temp files of writes a killed process never finished (never the files themselves)."""
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def write_bytes(path: Path, data: bytes, what: str = "file") -> None:
    """Atomically write ``data``; a failure (full disk, no permission) is one CheckpointError line."""
    try:
        atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        raise CheckpointError(f"cannot write {what} {path}: {e.strerror or e}; the previous one is kept") from None


def write_text(path: Path, text: str, what: str = "file") -> None:
    write_bytes(path, text.encode("utf-8"), what)


def write_json(path: Path, data: dict, what: str = "metrics") -> None:
    """``data`` as indented JSON, written like :func:`write_bytes` (atomic; a failure is one line)."""
    write_bytes(path, json.dumps(data, indent=2).encode(), what)


def check_writable(folder: Path) -> None:
    """Fail before training, in one line, if run outputs cannot be written to ``folder``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise CheckpointError(f"output dir {folder} is not writable: {e.strerror or e}") from None


def record_failure(out_dir: Path, msg: str, status: str = "failed") -> None:
    """Leave the error beside the run (in its metrics.json) so sweeps and users can see why it stopped.

    ``status``: failed, or interrupted (a signal); a diverged or interrupted record keeps its status."""
    try:
        metrics = Path(out_dir) / "metrics.json"
        data = json.loads(metrics.read_text()) if metrics.is_file() else {}
        old = data.get("status")
        data.update({"status": old if old in ("diverged", "interrupted") else status, "error": msg})
        try:
            write_json(metrics, data)
        except CheckpointError:  # a full disk: no room for the atomic copy; the status must still be final
            _rewrite_in_place(metrics, data)
    except (OSError, ValueError, CheckpointError):  # the error itself is still printed
        pass


def _rewrite_in_place(path: Path, data: dict) -> None:
    """Overwrite ``path`` with ``data`` less its per-epoch history (also in the event file, and in
    metrics.csv with the csv logger): truncating first frees the file's blocks, so a full disk has room
    for the shorter record.  Not atomic, hence only where the atomic write has failed and ``path`` would
    otherwise say "running"."""
    small = {k: v for k, v in data.items() if k != "history"}
    small["history_dropped"] = "the disk was full; the history is in the event file (and metrics.csv, csv logger)"
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(json.dumps(small, indent=2).encode())
        f.flush()
        os.fsync(f.fileno())

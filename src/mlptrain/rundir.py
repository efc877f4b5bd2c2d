"""One owner per run dir, a finished run never overwritten by accident, a final status on every exit.

:func:`own` is held around a job, in the process that writes the run dir (rank 0):

* it takes an exclusive ``flock`` on ``<run dir>/.lock``.  The kernel releases it when the owning
  process ends, however it ends (SIGKILL included), so a crash never leaves the dir stuck; a second
  run or resume of the same dir meanwhile is refused in one line naming the owner;
* a run that is not a resume (``trainer.resume``) refuses a dir that holds another run's results
  (metrics.json or a checkpoint) unless ``trainer.overwrite=true``, which removes them first;
* when the job raises, its record (metrics.json) gets a final status: ``interrupted`` for a signal
  (a first or a second one, at start-up or later), else ``failed`` with the one-line error; and bad
  input found before the run wrote anything (a missing CSV, an unusable device) removes the folder
  Hydra made for it instead of leaving a "failed" one with an empty log.

Torch-free.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from mlptrain.errors import BAD_INPUT, ConfigError
from mlptrain.files import record_failure

log = logging.getLogger("mlptrain")

LOCK = ".lock"
# What makes a dir hold a run's results (a resume continues them; anything else must not replace them).
RESULTS = ("metrics.json", "last.pt", "best.pt", "last.prev.pt")
# Everything a run writes, removed by trainer.overwrite=true (a new run then starts clean).
OUTPUTS = ("metrics.json", "metrics.csv", "last.pt", "best.pt", "last.prev.pt", "events.out.tfevents.*")
HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)  # file systems without flock


def holds_results(folder: Path) -> bool:
    """Checkpoints, or a metrics.json of a run that did not fail before writing one (a failed attempt
    without checkpoints, such as a sweep job retried after running out of memory, holds nothing to keep)."""
    folder = Path(folder)
    if any((folder / name).is_file() for name in RESULTS if name != "metrics.json"):
        return True
    if not (folder / "metrics.json").is_file():
        return False
    try:
        return json.loads((folder / "metrics.json").read_text()).get("status") != "failed"
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: keep it


def _owner(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        text = []
    return f" (pid {text[0]} on {text[1]})" if len(text) >= 2 else ""


def lock(folder: Path, probe: bool = False) -> int | None:
    """An exclusive lock on ``folder``; its fd (closing it releases it), or None where the file system
    has no locks.  Held by another process: one ConfigError line.  ``probe``: only check that it is
    free (nothing in the folder is written; the lock is released at once, and None returned)."""
    folder = Path(folder)
    fd = os.open(folder / LOCK, os.O_RDONLY if probe else os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in NO_LOCKS:
            os.close(fd)
            log.warning("%s: this file system has no file locks; nothing stops a second run here", folder)
            return None
        holder = _owner(fd)
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ConfigError(
                f"{folder} is in use by another mlptrain run{holder}; wait for it to end, "
                f"or give this run another hydra.run.dir"
            ) from None
        raise
    if probe:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    return fd


def check_not_finished(folder: Path, resume, overwrite: bool) -> None:
    """A new run may not replace another run's results without being told to."""
    if resume or overwrite or not holds_results(folder):
        return
    raise ConfigError(
        f"{folder} holds the results of another run; continue it with trainer.resume={folder}, "
        f"replace it with trainer.overwrite=true, or give this run another hydra.run.dir"
    )


def refuse_before_hydra(argv: list[str], resume, overwrite: bool) -> None:
    """A single run given an existing ``hydra.run.dir`` that :func:`own` would refuse (another run's
    results, or a live owner) is refused now, before Hydra writes ``.hydra/`` and opens the log there:
    a refused run leaves the dir byte for byte as it was.  :func:`own` still checks, under the lock."""
    if {"-m", "--multirun"} & set(argv):
        return  # a sweep's job dirs are Hydra's to name
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if not given or "${" in given[-1]:
        return
    folder = Path(given[-1].strip("'\""))
    if not folder.is_dir():
        return
    check_not_finished(folder, resume, overwrite)
    if (folder / LOCK).is_file():
        lock(folder, probe=True)


def remove_outputs(folder: Path) -> None:
    """trainer.overwrite=true: the previous run's results and logs go before the new run writes."""
    for pattern in OUTPUTS:
        for path in Path(folder).glob(pattern):
            path.unlink(missing_ok=True)
    log.info("trainer.overwrite=true: removed the previous run's results from %s", folder)


def remove_unstarted(folder: Path) -> None:
    """Bad input before the run wrote anything: take away the folder Hydra made for it (its config
    copies and the empty log), so no half-made run is left.  Other files in it are left alone."""
    folder = Path(folder)
    for name in (*HYDRA_FILES, LOCK, "mlptrain.log"):
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    for d in (folder / ".hydra", folder):
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty


def final_status(e: BaseException) -> str:
    code = getattr(e, "exit_code", None)
    return "interrupted" if isinstance(e, KeyboardInterrupt) or (code or 0) > 128 else "failed"


@contextlib.contextmanager
def own(folder: Path, *, resume=None, overwrite: bool = False, cleanup: bool = True) -> Iterator[None]:
    """Hold ``folder`` for one job (module docstring).  ``cleanup``: remove the folder of a run that
    failed on bad input before writing anything (single runs; a sweep lists its failed jobs)."""
    folder = Path(folder)
    fd = lock(folder)
    try:
        check_not_finished(folder, resume, overwrite)
        fresh = not holds_results(folder)
        if overwrite and not resume and not fresh:
            remove_outputs(folder)
            fresh = True
        try:
            yield
        except BaseException as e:
            if isinstance(e, SystemExit):
                raise
            msg = str(e) or type(e).__name__
            if cleanup and fresh and isinstance(e, BAD_INPUT) and not _wrote_outputs(folder):
                remove_unstarted(folder)
            elif final_status(e) == "interrupted" and _status(folder) in ("completed", "early_stopped", "pruned"):
                pass  # the signal came after the job's results were complete: they stand
            else:
                record_failure(folder, msg.splitlines()[0] if msg else msg, final_status(e))
            raise
    finally:
        if fd is not None:
            os.close(fd)  # the lock goes with it


def _status(folder: Path) -> str | None:
    try:
        return json.loads((Path(folder) / "metrics.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _wrote_outputs(folder: Path) -> bool:
    return any(any(Path(folder).glob(p)) for p in OUTPUTS)

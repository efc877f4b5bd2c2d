"""The output file of ``mlptrain-eval``/``mlptrain-predict``/``mlptrain-export``: never one of the
inputs, and never half-written nor left behind as a temp file, even by a SIGKILL.

On Linux the data goes to an anonymous file (``O_TMPFILE``) in the target's folder, which the
kernel drops if the process dies; only once complete and fsynced does it get a name (linked at the
target when there is none yet, else at a temp name renamed over it at once).  Elsewhere it is
:func:`mlptrain.files.atomic_write`.  Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mlptrain.errors import CheckpointError, DataError
from mlptrain.files import write_bytes


def refuse_inputs(output: str | Path | None, inputs: Iterable[str | Path], flag: str = "-o") -> None:
    """One line if ``output`` names a file that is also read (the checkpoint, the CSV, an image)."""
    if output in (None, "-"):
        return
    out = Path(output)
    for item in inputs:
        if item in (None, "-"):
            continue
        p = Path(item)
        try:
            same = out.exists() and p.exists() and os.path.samefile(out, p)
        except OSError:
            same = False
        if same or os.path.realpath(out) == os.path.realpath(p):
            raise DataError(f"{flag} {output}: that is one of the inputs ({item}); write the output to another file")


def write_output(path: str | Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path`` in one step (see the module docstring); a failure is one line."""
    path = Path(path)
    if not hasattr(os, "O_TMPFILE") or not os.path.isdir("/proc/self/fd"):
        return write_bytes(path, data, what)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666)  # the umask applies, as for any new file
    except OSError as e:
        if e.errno in (95, 21, 22):  # EOPNOTSUPP / EISDIR / EINVAL: this file system has no O_TMPFILE
            return write_bytes(path, data, what)
        raise CheckpointError(f"cannot write {what} {path}: {e.strerror or e}; the previous one is kept") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        try:
            _link(fd, path)  # no file there yet: it appears complete
        except FileExistsError:
            _link(fd, tmp)
            os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CheckpointError(f"cannot write {what} {path}: {e.strerror or e}; the previous one is kept") from None
    finally:
        os.close(fd)


def _link(fd: int, path: Path) -> None:
    """Give the anonymous file ``fd`` the name ``path``: linkat(AT_SYMLINK_FOLLOW) of its /proc entry.
    (A dir fd makes CPython call linkat with that flag; plain link() would link the /proc symlink itself.)"""
    root = os.open("/", os.O_RDONLY)
    try:
        os.link(f"/proc/self/fd/{fd}", os.path.abspath(path), src_dir_fd=root, follow_symlinks=True)
    finally:
        os.close(root)

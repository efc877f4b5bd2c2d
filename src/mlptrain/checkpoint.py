"""Self-describing checkpoints, written atomically and loaded with ``weights_only=True``.

A checkpoint holds the model and optimizer state, the epoch and step, the best
metric, the full resolved config, the dataset metadata and the library
versions: resume, eval and predict need nothing else.

It also holds the sha256 of everything else in it (:func:`digest`: every tensor's bytes, dtype and
shape, every other value's type and repr, in order), checked on every full load: bytes changed
inside a well-formed file (the tensor data torch's zip reader does not check) are a one-line error
naming the file instead of NaN metrics.  Checkpoints written before the checksum load unchecked.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import pickle
import re
from pathlib import Path

import torch

from mlptrain.errors import CheckpointError
from mlptrain.files import atomic_write, write_bytes

FORMAT = "mlptrain-checkpoint"
FORMAT_VERSION = 1
CHECKSUM = "sha256"  # the key of the checksum: not part of what it sums
PREVIOUS = "last.prev.pt"  # the last.pt before the newest one: what a resume falls back to if last.pt is damaged

log = logging.getLogger("mlptrain")


@functools.cache
def versions() -> dict:
    """Library versions as plain strings (from package metadata: no heavy imports)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("mlptrain", "torch", "torchvision", "hydra-core", "omegaconf", "tensorboard"):
        try:
            out[name.removesuffix("-core")] = version(name)
        except PackageNotFoundError:
            out[name.removesuffix("-core")] = "unknown"
    return out


def digest(obj) -> str:
    """sha256 over a checkpoint's contents, as loaded (the file's byte layout does not matter)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, any dtype (bf16, bool...)
    elif isinstance(obj, dict):
        items = [(k, v) for k, v in obj.items() if k != CHECKSUM]
        h.update(b"D%d|" % len(items))
        for k, v in items:
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(b"%s%d|" % (b"L" if isinstance(obj, list) else b"U", len(obj)))
        for v in obj:
            _feed(h, v)
    else:  # str, int, float (repr is exact), bool, None, torch.dtype...
        h.update(f"{type(obj).__name__}:{obj!r}|".encode())


def save(path: Path, payload: dict) -> None:
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    payload[CHECKSUM] = digest(payload)
    # Serialise in memory first: torch.save reports a failing file write as a RuntimeError of its
    # zip writer, a plain write gives the OSError (ENOSPC, EFBIG) the user needs to see.
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes(path, buf.getbuffer(), "checkpoint")


def duplicate(src: Path, dst: Path) -> None:
    """Make ``dst`` a second name for the checkpoint ``src`` (a hard link, else a copy), atomically.

    Checkpoints are replaced, never rewritten in place, so the two names stay independent:
    the next save of ``src`` leaves ``dst`` as it is."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")  # .tmp: swept by remove_stale_temps
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:  # no hard links on this file system: copy
            atomic_write(dst, lambda f: f.write(src.read_bytes()))
        else:
            os.replace(tmp, dst)
    except OSError as e:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise CheckpointError(f"cannot write checkpoint {dst}: {e.strerror or e}; the previous one is kept") from None


def load(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """Load and check a checkpoint (a run dir means its last.pt); any problem is one CheckpointError.
    ``mmap`` maps the tensors' storage instead of reading it: for a caller that wants only the metadata
    (its checksum is then not verified: that would read every tensor; the full load that follows does)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CheckpointError(f"{path} is not an mlptrain checkpoint (not a file written by torch.save)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"{path} is corrupt: {_first_sentence(e)}") from None
        # the reason ("Unsupported global: ...") is buried below a long preamble
        why = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), "")
        raise CheckpointError(
            f"{path} is not an mlptrain checkpoint: it holds Python objects that weights_only "
            f"loading refuses" + (f" ({why[:160]})" if why else "")
        ) from None
    except Exception as e:  # torch.load fails in many ways (zip reader, unpickler): all mean the file is damaged
        raise CheckpointError(f"{path} is truncated or corrupt: {_first_sentence(e)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mlptrain checkpoint (no '{FORMAT}' header)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer mlptrain (format {ckpt['format_version']})")
    if not mmap and CHECKSUM in ckpt and digest(ckpt) != ckpt[CHECKSUM]:
        raise CheckpointError(f"{path} is corrupt: its contents do not match the checksum written with it")
    return ckpt


def keep_previous(last: Path) -> None:
    """Before ``last.pt`` is replaced: the current one stays on as ``last.prev.pt`` (a hard link to the same
    bytes, else a copy), so a run whose newest ``last.pt`` is damaged has an older whole one to resume from."""
    last = Path(last)
    if last.is_file():
        duplicate(last, last.with_name(PREVIOUS))


def load_resumable(target: str | Path, map_location="cpu") -> tuple[dict, Path]:
    """The checkpoint a resume of ``target`` continues from, and its file.  A run dir (or its last.pt)
    whose last.pt is corrupt falls back to the newest intact checkpoint beside it (best.pt or
    last.prev.pt: the one whose recorded step, then epoch, is the latest), with a warning; a checkpoint
    named on its own is loaded as it is."""
    target = Path(target)
    path = target / "last.pt" if target.is_dir() else target
    try:
        return load(path, map_location), path
    except CheckpointError as e:
        if path.name != "last.pt" or not path.is_file():
            raise
        first = e
    newest = None
    seen = [path]
    for candidate in (path.with_name("best.pt"), path.with_name(PREVIOUS)):
        if not candidate.is_file() or any(_same_file(candidate, p) for p in seen):
            continue  # best.pt and last.prev.pt are often hard links of one file
        seen.append(candidate)
        try:
            ckpt = load(candidate, map_location)
        except CheckpointError:
            continue
        at = (ckpt.get("step", 0), ckpt.get("epoch", 0))
        if newest is None or at > newest[0]:
            newest = (at, ckpt, candidate)
    if newest is None:
        raise CheckpointError(f"{first}; no intact checkpoint beside it to resume from") from None
    _, ckpt, candidate = newest
    log.warning(
        "%s; resuming from %s instead (epoch %d, step %d): what was trained after it is trained again",
        first,
        candidate,
        ckpt.get("epoch", 0),
        ckpt.get("step", 0),
    )
    return ckpt, candidate


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # best.pt is a hard link of last.pt after an improving epoch
    except OSError:
        return False


def _first_sentence(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    if not text:
        return type(e).__name__
    return re.split(r"(?<=\w)\. ", text, maxsplit=1)[0][:limit]

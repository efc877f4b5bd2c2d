"""A run refused because of its run dir (another run's finished results, a live owner) is refused before
Hydra writes its ``.hydra/`` copies and log there: the dir stays byte for byte and mtime for mtime."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from conftest import TINY, mlptrain


def snapshot(folder: Path) -> dict:
    """Every file and folder below ``folder``: its bytes and its mtime (ns)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(folder))] = (p.read_bytes() if p.is_file() else None, st.st_mtime_ns)
    out["."] = (None, folder.stat().st_mtime_ns)
    return out


def test_a_refused_run_leaves_an_explicit_run_dir_untouched(tmp_path):
    run = tmp_path / "run"
    r = mlptrain(*TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "metrics.json").is_file()
    before = snapshot(run)

    r = mlptrain(*TINY, "seed=1", f"hydra.run.dir={run}", cwd=tmp_path)  # a new run into a finished one
    assert r.returncode == 2
    assert r.stderr == (
        f"mlptrain: error: {run} holds the results of another run; continue it with trainer.resume={run}, "
        "replace it with trainer.overwrite=true, or give this run another hydra.run.dir\n"
    )
    assert snapshot(run) == before  # .hydra/ included (Hydra rewrote it before the fix)

    # a live owner (a process holding the lock, as a running job does): refused, the dir untouched too
    fd = os.open(run / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = snapshot(run)
        r = mlptrain(f"trainer.resume={run}", cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert f"{run} is in use by another mlptrain run" in r.stderr, r.stderr
        assert snapshot(run) == before
    finally:
        os.close(fd)

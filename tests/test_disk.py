"""Outputs that cannot be written: one clear line, and the previous checkpoint stays intact."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys

import pytest

from conftest import TINY, mlptrain
from mlptrain import checkpoint, files
from mlptrain.checkpoint import CheckpointError

BIG = [
    "trainer.epochs=2",
    "trainer.batch_size=128",
    "dataset.n_samples=120",
    "model.hidden=[128,128]",
    "trainer.progress=none",
]


def test_full_disk_on_checkpoint_write_keeps_the_previous_one(make_cfg, tmp_path):
    """A file-size limit stands in for a full disk: writes past it fail with EFBIG (Python ignores SIGXFSZ)."""
    from mlptrain import cli

    run_dir = tmp_path / "run"
    cli.run(make_cfg(*BIG), run_dir, overrides=BIG)
    before = {n: (run_dir / n).read_bytes() for n in ("last.pt", "best.pt")}
    limit = 64 * 1024
    assert len(before["last.pt"]) > limit > max(p.stat().st_size for p in run_dir.iterdir() if p.suffix != ".pt")

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    r = subprocess.run(
        [sys.executable, "-m", "mlptrain", f"trainer.resume={run_dir}", "trainer.epochs=4"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=small_files,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert re.fullmatch(
        f"mlptrain: error: cannot write checkpoint {run_dir}/(best|last).pt: File too large; "
        f"the previous one is kept\n",
        r.stderr,
    ), r.stderr
    assert {n: (run_dir / n).read_bytes() for n in before} == before
    assert checkpoint.load(run_dir / "last.pt")["epoch"] == 2
    assert not list(run_dir.glob(".*.tmp"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"].startswith("cannot write checkpoint")


def test_metrics_that_cannot_be_written_are_one_line(tmp_path):
    """metrics.json goes through the same guarded write as the checkpoints (here a folder is in its way)."""
    run_dir = tmp_path / "run"
    (run_dir / "metrics.json").mkdir(parents=True)
    r = mlptrain(*TINY, "trainer.checkpoint=false", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert re.fullmatch(
        f"mlptrain: error: cannot write metrics {run_dir}/metrics.json: .*; the previous one is kept\n", r.stderr
    ), r.stderr


def test_a_failed_write_leaves_no_temp_file_and_the_old_file(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    pid = os.fork()
    if pid == 0:  # a child with a tiny file-size limit tries to replace it
        resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))
        try:
            files.write_bytes(target, b"x" * 100, "checkpoint")
        except CheckpointError as e:
            os._exit(3 if "File too large; the previous one is kept" in str(e) else 4)
        os._exit(5)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_unwritable_output_dir_is_one_line(make_cfg, tmp_path):
    from mlptrain import cli

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match=r"^output dir .*a-file/run is not writable: Not a directory$"):
        cli.run(make_cfg(*TINY), blocker / "run")

    r = mlptrain(*TINY, f"hydra.run.dir={blocker}/run", cwd=tmp_path)  # an explicit run dir
    assert r.returncode == 2
    assert r.stderr == f"mlptrain: error: hydra.run.dir: cannot create {blocker}/run: {blocker} is not a directory\n"

    (tmp_path / "outputs").write_text("")  # the default run dir cannot be made
    r = mlptrain(*TINY, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("mlptrain: error: cannot create the run dir outputs/")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only dirs")
def test_read_only_output_dir_is_one_line(make_cfg, tmp_path):
    from mlptrain import cli

    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(CheckpointError, match="is not writable: Permission denied"):
        cli.run(make_cfg(*TINY), ro / "run")
    r = mlptrain(*TINY, f"hydra.run.dir={ro}/run", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.endswith("is not writable\n")

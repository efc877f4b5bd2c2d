"""Outputs that cannot be written: one clear line, and the previous checkpoint stays intact."""

from __future__ import annotations

import json
import os
import re
import resource

import pytest

from conftest import TINY, mlptrain
from mlptrain import checkpoint, files
from mlptrain.checkpoint import CheckpointError

# scheduler=step: a per-epoch schedule, which a resume may extend (cosine spans the run: a longer resume is refused)
BIG = [
    "trainer.epochs=2",
    "trainer.batch_size=128",
    "dataset.n_samples=120",
    "model.hidden=[128,128]",
    "trainer.progress=none",
    "scheduler=step",
]


def test_full_disk_on_checkpoint_write_keeps_the_previous_one(make_cfg, tmp_path):
    """A file-size limit stands in for a full disk: writes past it fail with EFBIG (Python ignores SIGXFSZ)."""
    from mlptrain import cli

    run_dir = tmp_path / "run"
    cli.run(make_cfg(*BIG), run_dir, overrides=BIG)
    before = {n: (run_dir / n).read_bytes() for n in ("last.pt", "best.pt")}
    limit = 128 * 1024  # above the event file (~66 KB), below a checkpoint (~230 KB)
    assert len(before["last.pt"]) > limit > max(p.stat().st_size for p in run_dir.iterdir() if p.suffix != ".pt")

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = mlptrain(f"trainer.resume={run_dir}", "trainer.epochs=4", cwd=tmp_path, preexec_fn=small_files)
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


def limited(limit: int):
    """preexec_fn: files may not grow past ``limit`` bytes (SIGXFSZ ignored: a write past it raises EFBIG)."""

    def apply():
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_tensorboard_that_cannot_write_is_one_line_and_a_final_status(tmp_path):
    """The event file outgrows the limit during the final pictures (the checkpoints are smaller).
    Before the fix: the writer thread's traceback, the main thread's, exit 1, status "running"."""
    run_dir = tmp_path / "run"
    r = mlptrain(*TINY, "trainer.epochs=3", f"hydra.run.dir={run_dir}", cwd=tmp_path, preexec_fn=limited(30_000))
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"mlptrain: error: cannot write the TensorBoard log in {run_dir}: File too large\n"
    assert "Traceback" not in r.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"].startswith("cannot write the TensorBoard log")
    assert checkpoint.load(run_dir / "last.pt")["epoch"] == 3 and not list(run_dir.glob(".*.tmp"))


def test_a_resume_that_cannot_cut_its_logs_back_is_one_line(make_cfg, tmp_path):
    """A resume rewrites the event file without what was logged after the checkpoint (the test's
    pictures): under a limit smaller than that rewrite, one line, and every file as it was."""
    from mlptrain import cli

    run_dir = tmp_path / "run"
    step = [*TINY, "scheduler=step"]  # a per-epoch schedule, which a resume may extend
    cli.run(make_cfg(*step), run_dir, overrides=step)
    (events,) = run_dir.glob("events.out.tfevents.*")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    limit = 8192  # above Hydra's own files (.hydra/hydra.yaml), below the events kept by the cut
    assert events.stat().st_size > 2 * limit
    r = mlptrain(f"trainer.resume={run_dir}", "trainer.epochs=2", cwd=tmp_path, preexec_fn=limited(limit))
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"mlptrain: error: cannot write the TensorBoard log in {run_dir}: File too large\n"
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert {n: after[n] for n in before if n not in ("metrics.json", "mlptrain.log", ".lock")} == {
        n: v for n, v in before.items() if n not in ("metrics.json", "mlptrain.log", ".lock")
    }
    assert events.name in after and not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize("limit", [1000, 3000])
def test_hydras_own_config_files_that_cannot_be_written_are_one_line(tmp_path, limit):
    """Below a few KB even Hydra's .hydra/config.yaml or hydra.yaml cannot be written: one line naming the
    file (not Hydra's chained tracebacks), and no run record was started."""
    run_dir = tmp_path / "run"

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = mlptrain(*TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path, preexec_fn=small_files)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert re.fullmatch(
        f"mlptrain: error: cannot write {run_dir}/.hydra/(config|hydra).yaml: File too large"
        " \\(nothing was trained\\)\n",
        r.stderr,
    ), r.stderr
    assert not (run_dir / "metrics.json").exists()


ENOSPC_SCRIPT = """
import json, os, subprocess, sys
base, sizes = sys.argv[1], sys.argv[2:]
out = {}
for kb in sizes:
    mnt = os.path.join(base, kb)
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", mnt], check=True)
    run = os.path.join(mnt, "run")
    r = subprocess.run([sys.executable, "-m", "mlptrain", *json.loads(os.environ["ARGS"]), f"hydra.run.dir={run}"],
                       capture_output=True, text=True, cwd=base)
    metrics = os.path.join(run, "metrics.json")
    status = json.load(open(metrics)).get("status") if os.path.exists(metrics) else None
    out[kb] = {"rc": r.returncode, "stderr": r.stderr, "status": status}
    subprocess.run(["umount", mnt])
print(json.dumps(out))
"""


def test_a_really_full_disk_at_any_moment_is_one_line_and_a_final_status(tmp_path):
    """Small tmpfs mounts (a user and mount namespace: no root needed) fill up at different writes: Hydra's
    files, the run dir's lock, the event file, a checkpoint, metrics.json. Each run ends in one line, and
    a metrics.json, where one was written, never stays "running" (when the atomic write has no room, the
    record is rewritten in place without its per-epoch history)."""
    import shutil
    import subprocess
    import sys

    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unprivileged user namespaces (unshare -rm) to mount a small tmpfs")
    args = ["trainer.epochs=3", "model.hidden=[64,64]", "trainer.checkpoint_interval_s=0", "trainer.progress=none"]
    sizes = ["8", "16", "48", "160", "240"]
    r = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", ENOSPC_SCRIPT, str(tmp_path), *sizes],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ARGS": json.dumps(args)},
    )
    assert r.returncode == 0, r.stderr
    runs = json.loads(r.stdout)
    for kb, run in runs.items():
        assert run["rc"] == 2, (kb, run)
        assert re.fullmatch(r"mlptrain: error: cannot write [^\n]*No space left on device[^\n]*\n", run["stderr"]), (
            kb,
            run["stderr"],
        )
        assert run["status"] in (None, "failed"), (kb, run)
    assert any(run["status"] == "failed" for run in runs.values())

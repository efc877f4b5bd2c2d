"""Sweeps that survive: a sweep killed anywhere and run again finishes exactly as an uninterrupted one,
without touching its finished jobs; another command for the same folder is refused; job folder
names stay bounded."""

from __future__ import annotations

import json
import random
import shlex
import signal
import subprocess
from pathlib import Path

import yaml

from conftest import TINY, mlptrain, python, untimed
from mlptrain import checkpoint
from mlptrain.jobdirs import MAX_NAME, job_dirname

# 3 jobs of 84 steps (28 an epoch), dropout (the RNG matters), last.pt every 5 steps, both loggers.
SWEEP = [
    "dataset.n_samples=400",
    "model.hidden=[8]",
    "model.dropout=0.1",
    "trainer.batch_size=10",
    "trainer.epochs=3",
    "trainer.checkpoint_every_n_steps=5",
    "trainer.progress=epoch",
    "trainer.num_threads=1",
    "trainer.loggers=[tensorboard,csv]",
    "seed=0,1,2",
]
STEPS = 84

# The sweep as `python -m mlptrain -m ...` runs it; at the KILL_AT-th training step of the whole process a
# timer stops it DELAY seconds later, wherever the sweep is by then (a step, a checkpoint write, logging):
# "group" SIGKILLs its whole process group, "int" is a Ctrl-C.
STOPPED_SWEEP = """
import os, signal, sys, threading
from mlptrain.progress import Progress
kill_at, delay, how = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
stop = {"group": lambda: os.killpg(os.getpgid(0), signal.SIGKILL), "int": lambda: os.kill(os.getpid(), signal.SIGINT)}
step, seen = Progress.step, []
def step_then_arm(self, i, n):
    step(self, i, n)
    seen.append(i)
    if len(seen) == kill_at:
        threading.Timer(delay, stop[how]).start()
Progress.step = step_then_arm
sys.argv = ["mlptrain", *sys.argv[4:]]
from mlptrain.cli import main
main()
"""


def child(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c script args...`` in its own process group (so that it can be killed whole)."""
    return python("-c", script, *args, cwd=cwd, start_new_session=True)


def stopped_sweep(kill_at: int, delay: float, how: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return child(STOPPED_SWEEP, str(kill_at), str(delay), how, "-m", *args, cwd=cwd)


def jobs(sweep_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()}


def files_of(job: Path) -> dict[str, tuple[int, int]]:
    """Every file of a job folder: (inode, mtime_ns)."""
    return {str(f.relative_to(job)): (f.stat().st_ino, f.stat().st_mtime_ns) for f in job.rglob("*") if f.is_file()}


def status(job: Path) -> str | None:
    try:
        return json.loads((job / "metrics.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_sweep_killed_anywhere_continues_to_the_uninterrupted_result(tmp_path):
    ref = tmp_path / "ref"
    r = mlptrain("-m", *SWEEP, f"hydra.sweep.dir={ref}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    victim, at = random.randrange(3), random.randrange(10, STEPS - 10)  # a job, after its 2nd checkpoint
    kill_at, delay = victim * STEPS + at, random.uniform(0.0, 0.002)
    where = f"killed in job {victim} at step {at}, {delay * 1e3:.2f} ms later"
    sweep = tmp_path / "sweep"
    proc = stopped_sweep(kill_at, delay, "group", *SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL, f"{where}: {proc.stderr[-2000:]}"
    killed = jobs(sweep)
    finished = {name: files_of(job) for name, job in killed.items() if status(job) == "completed"}
    stopped = [job for job in killed.values() if status(job) != "completed"]
    assert len(finished) == victim and [j.name for j in stopped] == [sorted(jobs(ref))[victim]], where
    assert (stopped[0] / "last.pt").is_file(), where

    r = mlptrain("-m", *SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # the same command again
    assert r.returncode == 0, f"{where}: {r.stderr[-2000:]}"
    assert sorted(jobs(sweep)) == sorted(jobs(ref))
    for name, ref_job in jobs(ref).items():
        job = jobs(sweep)[name]
        a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref_job, job))
        a.pop("runtime"), b.pop("runtime")  # the process that trained it
        assert untimed(a) == untimed(b), f"{where}: {name}"
        for ckpt in ("last.pt", "best.pt"):
            wa, wb = (checkpoint.load(d / ckpt)["model"] for d in (ref_job, job))
            assert all((wa[k] == wb[k]).all() for k in wa), f"{where}: {name}/{ckpt}"
    for name, before in finished.items():
        assert files_of(jobs(sweep)[name]) == before, f"{where}: finished job {name} was rewritten"
    log = (stopped[0] / "mlptrain.log").read_text()
    assert "resuming from" in log and "resumed from" in log, where  # resumed, not restarted
    rows = (sweep / "summary.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3 and all(",completed," in row for row in rows[1:])  # one row per job


def test_an_interrupted_sweep_prints_its_continue_command_and_only_that_sweep_may_continue(tmp_path):
    d = tmp_path / "my sweep"
    run = [*TINY, "dataset.n_samples=400", "trainer.batch_size=10", "trainer.progress=epoch", "seed=0,1"]
    proc = stopped_sweep(3, 0.0, "int", *run, f"hydra.sweep.dir={d}", cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr
    line = [ln for ln in proc.stderr.splitlines() if "continue it with: " in ln]
    assert line, proc.stdout + proc.stderr
    command = line[0].split("continue it with: ", 1)[1]
    assert command.startswith("mlptrain -m ") and "seed=0,1" in command
    r = mlptrain(*shlex.split(command)[1:], cwd=tmp_path)  # as the shell would split it
    assert r.returncode == 0, r.stderr
    assert [status(j) for _, j in sorted(jobs(d).items())] == ["completed", "completed"]
    assert "resumed from" in (jobs(d)["0_seed=0"] / "mlptrain.log").read_text()
    before = {name: files_of(job) for name, job in jobs(d).items()}

    # The same sweep spelled `mlptrain trainer.resume=<sweep dir>`, with an execution-only change:
    # every job has finished, so nothing runs and nothing is rewritten.
    r = mlptrain(f"trainer.resume={d.name}", "trainer.progress=none", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (r.stderr + r.stdout).count("finished before: skipped") == 2
    assert {name: files_of(job) for name, job in jobs(d).items()} == before

    # Another sweep in the same folder: refused in one line that names the difference, nothing touched.
    r = mlptrain("-m", *run[:-1], "seed=0,1,2", f"hydra.sweep.dir={d}", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "holds another sweep (it was run with seed=0,1; this command has seed=0,1,2)" in r.stderr
    assert {name: files_of(job) for name, job in jobs(d).items()} == before


# ----------------------------------------------------------------------------- job folder names
def test_job_folder_names_are_bounded_escaped_and_shortened():
    assert job_dirname(3, ["optim.lr=0.1", "model.hidden=[8,8]"]) == "3_hidden=[8,8],lr=0.1"
    assert job_dirname(0, ["trainer.monitor=val/loss"]) == "0_monitor=val%2Floss"
    assert job_dirname(1, ["optim.lr=0.00012345678901"]) == "1_lr=0.0001235"  # Optuna's samples
    assert job_dirname(2, ["optim.lr=0.1", "scheduler.lr=1"]) == "2_optim.lr=0.1,scheduler.lr=1"  # ambiguous tails
    assert job_dirname(4, ["seed=1", "optim.lr=0.1"], exclude={"optim.lr"}) == "4_seed=1"
    assert job_dirname(5, []) == "5"
    long = job_dirname(7, [f"model.k{i}={'x' * 30}" for i in range(20)])
    assert len(long) <= len("7_") + MAX_NAME and long.startswith("7_k0=")


def test_a_sweep_with_twenty_overrides_and_a_slash_in_a_swept_value_runs(tmp_path):
    fixed = [
        "dataset.n_samples=120",
        "dataset.noise=0.2",
        "dataset.val_fraction=0.15",
        "dataset.test_fraction=0.15",
        "model.hidden=[8]",
        "model.activation=tanh",
        "model.dropout=0.0",
        "model.norm=none",
        "optim.lr=0.01",
        "optim.weight_decay=0.0001",
        "trainer.epochs=1",
        "trainer.batch_size=32",
        "trainer.eval_batch_size=512",
        "trainer.progress=none",
        "trainer.grad_clip=0.0",
        "trainer.checkpoint=true",
        "trainer.num_threads=1",
        "trainer.mode=auto",
        "trainer.nan_policy=stop",
        "trainer.histogram_every_n_epochs=0",
    ]
    d = tmp_path / "sweep"
    r = mlptrain("-m", *fixed, "trainer.monitor=val/loss,val/acc", f"hydra.sweep.dir={d}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(jobs(d)) == ["0_monitor=val%2Floss", "1_monitor=val%2Facc"]
    rows = (d / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and any(row.endswith(",0_monitor=val%2Floss") for row in rows[1:])
    overrides = yaml.safe_load((jobs(d)["0_monitor=val%2Floss"] / ".hydra/overrides.yaml").read_text())
    assert len(overrides) == 21  # the whole story is in .hydra/


# ----------------------------------------------------------------------------- retries
# The sweep in this process, where the first job's first fit runs out of memory (as a CUDA OOM would).
OOM_ONCE_SWEEP = """
import sys
from mlptrain.training import Trainer
fit, calls = Trainer.fit, []
def fit_or_oom(self):
    calls.append(1)
    if len(calls) == 1:
        raise MemoryError("can't allocate memory")
    return fit(self)
Trainer.fit = fit_or_oom
sys.argv = ["mlptrain", *sys.argv[1:]]
from mlptrain.cli import main
main()
"""


def test_a_transient_failure_is_retried_and_divergence_is_not(tmp_path):
    d = tmp_path / "sweep"
    args = ["-m", *TINY, "optim=sgd", "optim.lr=0.01,1e30", "trainer.retries=2", f"hydra.sweep.dir={d}"]
    r = child(OOM_ONCE_SWEEP, *args, cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # the diverged job fails the sweep
    out = r.stdout + r.stderr
    assert out.count("running it again") == 1 and "job 0 failed (out of memory" in out, out
    ok, diverged = (json.loads((jobs(d)[n] / "metrics.json").read_text()) for n in sorted(jobs(d)))
    assert ok["status"] == "completed" and ok["attempts"] == 2
    assert diverged["status"] == "diverged" and "attempts" not in diverged
    md = (d / "summary.md").read_text()
    assert "| status | attempts |" in md and "| completed | 2 |" in md and "| diverged | 1 |" in md

"""Scaling out: DDP ranks split each global batch and match one process; torchrun ranks share one run dir;
a DDP run resumes; the SLURM preset's sbatch script; a submitit_local sweep whose requeued job resumes."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import torch

from conftest import TINY, mlptrain
from mlptrain import checkpoint

# Uneven on purpose: a global batch of 33 is 17 + 16 rows on 2 ranks, and the last of the 140 training
# rows' batches has 8; val and test (30 rows each) are split 15 + 15 and gathered.
DDP = [
    "dataset.n_samples=200",
    "model.hidden=[16]",
    "trainer.batch_size=33",
    "optim=sgd",
    "trainer.device=cpu",
    "trainer.progress=epoch",
]
# Per-epoch metrics of 2 gloo ranks vs one process.  The only difference in arithmetic is where the
# gradient sums are split (17 + 16 rows, then DDP's all-reduce average) and how the val/test rows are
# batched; on CPU this measured 0 to 1e-7 relative, so 1e-5 leaves room for other BLAS builds.
RTOL = 1e-5
COMPARED = ("train/loss", "train/acc", "val/loss", "val/acc", "val/ece")


def _env() -> dict:
    return {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _same_curve(history: list[dict], reference: list[dict]) -> None:
    assert [r["epoch"] for r in history] == [r["epoch"] for r in reference]
    for row, ref in zip(history, reference):
        for key in COMPARED:
            assert math.isclose(row[key], ref[key], rel_tol=RTOL, abs_tol=1e-7), (row["epoch"], key, row[key], ref[key])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, 3 epochs, on the same global batch: the curve every DDP run must reproduce."""
    from hydra import compose, initialize_config_module

    from mlptrain.cli import run

    with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*DDP, "trainer.epochs=3"])
    return run(cfg, tmp_path_factory.mktemp("reference"))


def test_ranks_split_each_global_batch_and_weight_their_share():
    from mlptrain.batches import DeviceBatches
    from mlptrain.config import ConfigError

    cpu = torch.device("cpu")
    x, y = torch.arange(23.0).unsqueeze(1), torch.arange(23)
    single = DeviceBatches(x, y, 5, 3, cpu)
    ranks = [DeviceBatches(x, y, 5, 3, cpu, rank=r, world=2) for r in range(2)]
    assert len(single) == len(ranks[0]) == 5  # 23 = 4 * 5 + 3: the last batch (3 rows) still splits
    for _ in range(2):  # two epochs: the same permutation on every rank, a new one each epoch
        per_rank = [r.epoch() for r in ranks]
        for xb, _ in single.epoch():
            parts = [next(it)[0] for it in per_rank]
            assert torch.equal(torch.cat(parts), xb)  # disjoint slices, together the global batch
            assert all(abs(len(p) - len(xb) / 2) <= 0.5 for p in parts)
            # DDP averages the ranks' gradients; weighted by share, that is the global batch's mean
            weighted = sum(r.share * p.mean() for r, p in zip(ranks, parts)) / 2
            assert torch.allclose(weighted, xb.mean())
    assert len(DeviceBatches(x[:21], y[:21], 5, 3, cpu, rank=1, world=2)) == 4  # a 1-row last batch: dropped
    with pytest.raises(ConfigError, match="trainer.batch_size: 1 is smaller than the 2 processes"):
        DeviceBatches(x, y, 1, 3, cpu, rank=0, world=2)


def test_devices_and_batch_size_are_checked(make_cfg):
    from mlptrain.config import ConfigError, parse

    with pytest.raises(ConfigError, match="trainer.devices: must be >= 1"):
        parse(make_cfg("trainer.devices=0"))
    with pytest.raises(ConfigError, match="trainer.batch_size: 2 is smaller than trainer.devices=4"):
        parse(make_cfg("trainer.devices=4", "trainer.batch_size=2"))


def test_torchrun_two_gloo_ranks_match_one_process_in_one_run_dir(tmp_path, reference):
    # Each rank would name a different dir (rank0, rank1): only rank 0's may exist, used by both.
    run_dir = "hydra.run.dir='${mlptrain.unique_dir:out/rank${oc.env:RANK}}'"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:0",
        "--local-addr=127.0.0.1",
        "-m",
        "mlptrain",
        *DDP,
        "trainer.epochs=3",
        run_dir,
    ]
    r = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, **_env()}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [p.name for p in (tmp_path / "out").iterdir() if p.is_dir()] == ["rank0"]  # and the HParams summary
    out = tmp_path / "out" / "rank0"
    assert len(list(out.glob("events.out.tfevents.*"))) == 1  # only rank 0 writes events
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "last.pt").is_file()
    log = (out / "mlptrain.log").read_text()
    assert log.count("epoch   2/3") == 1, log  # rank 1 keeps out of rank 0's log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    _same_curve(metrics["history"], reference["history"])


@contextmanager
def _started(*args: str, cwd: Path, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    """``python -m mlptrain *args`` in the background; killed if the test leaves it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlptrain", *args],
        cwd=cwd,
        env={**os.environ, **_env()},
        stdout=stdout,
        stderr=stderr,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextmanager
def _frozen(pids: list[int]):
    """SIGSTOP the processes, SIGCONT them on the way out: signals sent meanwhile wait, so the test
    decides at which point of the run they land."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _ranks(pid: int) -> list[int]:
    """The forked ranks of a ``trainer.devices`` launch: the children running the same program (not a
    passing helper such as ldconfig that a library may start)."""
    comm = Path(f"/proc/{pid}/comm").read_text()
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [c for c in children if Path(f"/proc/{c}/comm").read_text() == comm]


def _pending(pid: int, signum: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    masks = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(m >> (signum - 1) & 1 for m in masks)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="freezes the ranks through /proc")
def test_devices_2_sigterm_saves_mid_epoch_and_the_resume_continues_the_curve(tmp_path, train):
    # 263 steps an epoch; the ranks agree to stop at a multiple of 16 steps of the epoch.  A periodic
    # checkpoint at step 270 (epoch 2, batch 7) shows the test that both ranks are inside epoch 2.
    long = [
        "dataset.n_samples=6000",
        "model.hidden=[16]",
        "trainer.batch_size=16",
        "optim=sgd",
        "trainer.device=cpu",
        "trainer.progress=epoch",
        "trainer.epochs=2",
        "trainer.checkpoint_every_n_steps=270",
    ]
    run_dir = tmp_path / "run"
    with _started(*long, "trainer.devices=2", f"hydra.run.dir={run_dir}", cwd=tmp_path) as proc:
        deadline = time.monotonic() + 240
        while not (run_dir / "last.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.005)
        ranks = _ranks(proc.pid)
        assert len(ranks) == 2, ranks
        while True:  # look while the ranks are frozen, so what is seen is where they are
            with _frozen(ranks):
                if checkpoint.load(run_dir)["mid_epoch"]:
                    proc.send_signal(signal.SIGTERM)  # to the launching process only: it forwards it to the ranks
                    while not all(_pending(pid, signal.SIGTERM) for pid in ranks):
                        assert time.monotonic() < deadline
                        time.sleep(0.005)
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before step 270"
            time.sleep(0.005)
        _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("mlptrain: interrupted by SIGTERM after step ") and "; resume with: mlptrain " in last, err
    saved = checkpoint.load(run_dir / "last.pt")
    assert saved["epoch"] == 1 and saved["mid_epoch"]["batch"] % 16 == 0  # all ranks stopped after one step
    assert last.split(" after step ")[1].startswith(f"{saved['step']};")
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"

    r = mlptrain(*shlex.split(last.split("; resume with: ", 1)[1])[1:], cwd=tmp_path, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    _same_curve(metrics["history"], train(*long, tiny=False)["history"])


def test_a_worker_error_comes_back_as_the_same_one_line_error(tmp_path, make_cfg):
    from mlptrain import launch
    from mlptrain.checkpoint import CheckpointError
    from mlptrain.config import parse
    from mlptrain.job import JobContext

    run = parse(make_cfg(*TINY, "trainer.devices=2", "trainer.device=cpu", f"trainer.resume={tmp_path}/none"))
    with pytest.raises(CheckpointError) as e:
        launch.launch(run, tmp_path, JobContext())
    assert str(e.value) == f"checkpoint not found: {tmp_path}/none"


def test_compiled_ddp_ranks_match_one_process(tmp_path, make_cfg, reference):
    """trainer.compile with DDP compiles the DDP module (not DDP around a compiled forward)."""
    from mlptrain import launch
    from mlptrain.config import parse
    from mlptrain.job import JobContext

    run = parse(
        make_cfg(*DDP, "trainer.epochs=3", "trainer.devices=2", "trainer.compile=true", "trainer.compile_backend=eager")
    )
    _same_curve(launch.launch(run, tmp_path, JobContext())["history"], reference["history"])


def test_more_ranks_than_the_machine_has_is_refused_before_starting(tmp_path, make_cfg):
    from mlptrain import launch
    from mlptrain.config import ConfigError, parse
    from mlptrain.job import JobContext

    cores = len(os.sched_getaffinity(0))
    run = parse(make_cfg(*TINY, f"trainer.devices={cores + 1}", "trainer.device=cpu"))
    with pytest.raises(ConfigError, match=f"trainer.devices: {cores + 1} processes but this machine has {cores} CPU"):
        launch.launch(run, tmp_path, JobContext())
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- SLURM via submitit
def test_slurm_preset_asks_for_partition_time_gpus_memory_and_requeue(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    fake = tmp_path / "bin"
    fake.mkdir()
    # No cluster here: a stand-in sbatch keeps the script submitit wrote and refuses the job.
    (fake / "sbatch").write_text('#!/bin/sh\ncp "$1" "$SBATCH_COPY"\necho "sbatch: no cluster" >&2\nexit 1\n')
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    script = tmp_path / "job.sh"
    r = mlptrain(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=90",
        "hydra.launcher.mem_gb=64",
        "trainer.devices=4",
        "seed=0,1",
        cwd=tmp_path,
        env={"PATH": f"{fake}:{os.environ['PATH']}", "SBATCH_COPY": str(script)},
    )
    assert r.returncode != 0 and "sbatch: no cluster" in r.stderr
    lines = script.read_text().splitlines()
    for flag in (
        "--partition=gpu",
        "--time=90",
        "--mem=64GB",
        "--gpus-per-node=4",
        "--ntasks-per-node=1",
        "--array=0-1%2",
        "--requeue",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {flag}" in lines, flag


def _pids_writing_under(folder: Path) -> list[int]:
    """Processes with a file open under ``folder`` (a submitit_local task holds its job's log open)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if any(os.readlink(fd).startswith(str(folder)) for fd in (d / "fd").iterdir()):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="finds the job processes through /proc")
def test_submitit_local_sweep_requeued_job_resumes_on_the_same_curve(tmp_path, train):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    common = [*TINY, "trainer.epochs=20", "trainer.device=cpu", "trainer.checkpoint_interval_s=0"]  # one per epoch
    with _started(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher._target_=hydra_plugins.mlptrain_slurm.LocalLauncher",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *common,
        "seed=0,1",
        cwd=tmp_path,
        stderr=subprocess.STDOUT,
    ) as sweep:
        # Preempt job 0 (USR2 is submitit's signal) once it has a checkpoint, looking while it is frozen.
        deadline = time.monotonic() + 240
        pids: list[int] = []
        while not pids:  # the job's process holds its log open from the start
            assert sweep.poll() is None and time.monotonic() < deadline, "job 0 did not start"
            pids = [pid for job0 in tmp_path.glob("sweep/0_*") for pid in _pids_writing_under(job0)]
            time.sleep(0.01)
        (job0,) = tmp_path.glob("sweep/0_*")
        while True:
            with _frozen(pids):
                if (job0 / "last.pt").exists():
                    assert checkpoint.load(job0)["epoch"] < 20, "job 0 finished before the signal"
                    for pid in pids:
                        os.kill(pid, signal.SIGUSR2)
                    break
            assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before job 0 saved"
            time.sleep(0.01)
        output, _ = sweep.communicate(timeout=240)
    assert sweep.returncode == 0, output[-3000:]
    # The trainer took USR2 as a graceful stop (finish the step, save) before submitit requeued job 0.
    stops = [
        line
        for f in tmp_path.glob("sweep/.submitit/*/*_log.err")
        for line in f.read_text().splitlines()
        if line.startswith("mlptrain: interrupted by SIGUSR2 after step")
    ]
    assert len(stops) == 1 and f"saved {job0}/last.pt" in stops[0], stops
    for job, seed in enumerate((0, 1)):
        (job_dir,) = tmp_path.glob(f"sweep/{job}_*")
        log = (job_dir / "mlptrain.log").read_text()
        assert ("Requeued job" in log and "resumed from" in log) == (job == 0), log[-2000:]
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["epochs"] == 20
        _same_curve(metrics["history"], train(*common, f"seed={seed}", tiny=False)["history"])

"""A stop signal at any phase of a run (validation, a checkpoint write, the final pictures, the test) and
between the jobs of a sweep stops it with 128 + the signal number, one line, nothing half-written.

Each process is stopped at a known phase by the test hook of mlptrain.signals.pause
(MLPTRAIN_TEST_PAUSE=<phase>:<file>): the phase creates the file and waits for the signal, so no
test depends on the machine's speed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import TINY
from mlptrain import checkpoint


def start(tmp_path, name: str, phase: str, *args: str) -> tuple[subprocess.Popen, str]:
    marker = tmp_path / f"{name}.reached"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLPTRAIN_TEST_PAUSE": f"{phase}:{marker}"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlptrain", *[a for a in args if a.startswith("-")], *TINY]
        + [a for a in args if not a.startswith("-")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, str(marker)


def wait_for(proc: subprocess.Popen, marker: str) -> None:
    """Until the process has reached its phase (it waits there); fails at once if it ended instead."""
    deadline = time.monotonic() + 240  # a generous bound for a loaded machine, never the expected path
    while not os.path.exists(marker):
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1])
        assert time.monotonic() < deadline, "the phase was never reached"
        time.sleep(0.02)


PHASES = {  # phase -> (signal, how the last line begins)
    "validation": (signal.SIGINT, "mlptrain: interrupted by SIGINT after step 3; saved "),
    "checkpoint": (signal.SIGTERM, "mlptrain: interrupted by SIGTERM after step 3; saved "),
    "pictures": (signal.SIGINT, "mlptrain: interrupted by SIGINT; resume from the last checkpoint with: mlptrain "),
    "test": (signal.SIGTERM, "mlptrain: interrupted by SIGTERM; resume from the last checkpoint with: mlptrain "),
}


def test_a_signal_at_every_phase_of_the_last_epoch_stops_the_run(tmp_path):
    """Before the fix a signal in the last epoch's validation or checkpoint, or in the final pictures or
    the test, was ignored: exit 0.  Now: 130/143, status interrupted, last.pt whole and current."""
    procs = {p: start(tmp_path, p, p, f"hydra.run.dir={tmp_path / p}") for p in PHASES}  # all at once
    for phase, (proc, marker) in procs.items():
        wait_for(proc, marker)
        proc.send_signal(PHASES[phase][0])
    for phase, (proc, _) in procs.items():
        out, err = proc.communicate(timeout=240)
        signum, first = PHASES[phase]
        run_dir = tmp_path / phase
        assert proc.returncode == 128 + signum, (phase, err)
        assert "Traceback" not in out + err, (phase, err)
        assert err.splitlines()[-1].startswith(first), (phase, err)
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted", phase
        assert checkpoint.load(run_dir / "last.pt")["epoch"] == 1, phase  # the epoch's checkpoint, whole
        assert not list(run_dir.glob(".*.tmp")), phase


def test_a_signal_between_the_jobs_of_a_sweep_stops_the_sweep(tmp_path):
    """Before the fix the remaining jobs ran.  Now the sweep stops after the job that was running."""
    proc, marker = start(tmp_path, "sweep", "between-jobs", "-m", "seed=0,1,2", f"hydra.sweep.dir={tmp_path / 'sw'}")
    wait_for(proc, marker)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    lines = err.splitlines()
    assert "mlptrain: interrupted by SIGINT" in lines and "Traceback" not in out + err
    assert lines[-1].startswith("mlptrain: sweep interrupted; continue it with: mlptrain -m ")
    (done,) = list((tmp_path / "sw").glob("*/metrics.json"))  # jobs 1 and 2 never started
    assert done.parent.name.startswith("0") and json.loads(done.read_text())["status"] == "completed"

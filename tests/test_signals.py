"""SIGINT/SIGTERM: finish the step, write last.pt, print the exact resume command, exit 130/143.
A second signal leaves at once, and the files on disk stay whole."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

import pytest

from conftest import mlptrain
from mlptrain import checkpoint, files
from mlptrain.signals import Abort, GracefulStop

# 53 steps an epoch: the signal is sent as epoch 1's line is read, so it lands in epoch 2 or soon after.
# Ten epochs leave 477 steps of margin, so a fast machine cannot finish before the signal arrives.
LONG = [
    "dataset.n_samples=600",
    "model.hidden=[16]",
    "trainer.batch_size=8",
    "trainer.epochs=10",
    "trainer.progress=epoch",
]


def start(tmp_path, *overrides):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlptrain", *LONG, *overrides],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # stop it during the second epoch
        if "epoch   1/10" in line:
            return proc
    raise AssertionError(proc.stderr.read())


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_and_prints_the_resume_command(tmp_path, signum, code):
    proc = start(tmp_path)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err + out
    last = err.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"mlptrain: interrupted by {name} after step ") and "; resume with: mlptrain " in last, err
    (run_dir,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]  # not the HParams summary
    saved = checkpoint.load(run_dir / "last.pt")
    assert f"after step {saved['step']};" in last and 53 <= saved["step"] < 10 * 53
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert not list(run_dir.glob(".*.tmp"))

    if signum == signal.SIGTERM:  # the printed command, run as printed anywhere, finishes the run in its dir
        cmd = shlex.split(last.split("; resume with: ", 1)[1])
        assert cmd[0] == "mlptrain"
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        r = mlptrain(*cmd[1:], cwd=elsewhere)
        assert r.returncode == 0, r.stderr
        where = last.split(" (", 1)[1].split(")", 1)[0]  # e.g. "epoch 2, step 60, mid-epoch"
        assert f"resumed from {run_dir} at {where}\n" in r.stdout  # the same point, numbered the same way
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["epochs"] == 10
        assert [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()] == [run_dir]


def test_first_signal_sets_a_flag_second_one_aborts():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        assert stop.received is None
        signal.raise_signal(signal.SIGTERM)  # the handler runs here, in the main thread
        assert stop.received == signal.SIGTERM and stop.exit_code == 143
        with pytest.raises(Abort) as e:
            signal.raise_signal(signal.SIGTERM)
        assert e.value.exit_code == 143 and isinstance(e.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_ctrl_c_leaves_at_once_with_the_files_whole(make_cfg, tmp_path, monkeypatch):
    """Two Ctrl-C in one step: no further step runs, nothing more is written, last.pt stays loadable."""
    from mlptrain import cli
    from mlptrain.progress import Progress

    step = Progress.step
    calls = []

    def step_then_two_signals(self, i, n):
        step(self, i, n)
        calls.append(i)
        if len(calls) == 15:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Progress, "step", step_then_two_signals)
    run_dir = tmp_path / "run"
    with pytest.raises(Abort) as e:
        cli.run(
            make_cfg(
                "dataset.n_samples=400",
                "model.hidden=[8]",
                "trainer.batch_size=8",
                "trainer.epochs=2",
                "trainer.progress=none",
                "trainer.checkpoint_every_n_steps=10",
            ),
            run_dir,
        )
    assert e.value.exit_code == 130 and len(calls) == 15
    assert str(e.value).startswith("stopped at once by a second SIGINT; resume from the last checkpoint with: mlptrain")
    assert checkpoint.load(run_dir / "last.pt")["step"] == 10  # the periodic one, untouched
    assert not list(run_dir.glob(".*.tmp"))
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"  # not "failed"


def test_an_interrupted_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")

    def half_then_ctrl_c(f):
        f.write(b"new, half writ")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(target, half_then_ctrl_c)
    assert target.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [target]

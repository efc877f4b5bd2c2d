"""Resume: a run stopped anywhere (SIGKILL, SIGINT mid-epoch) and resumed ends bit-identical to one
that was never stopped: the same metrics, weights, TensorBoard scalars and metrics.csv rows, in the same run dir."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_csv_is_the_history, metrics_csv, mlptrain, untimed
from mlptrain import checkpoint
from mlptrain.checkpoint import CheckpointError
from mlptrain.config import ConfigError

pytestmark = pytest.mark.usefixtures("keep_threads")

# ~70 steps an epoch, dropout (so the torch RNG matters), a per-step schedule (its lr/step series is
# logged per optimizer step, the other scalars per epoch), a mid-epoch checkpoint every 9 steps, and
# both loggers (metrics.csv is cut back on resume like the events).
RUN = [
    "dataset.n_samples=1000",
    "model.hidden=[16]",
    "model.dropout=0.1",
    "trainer.batch_size=10",
    "scheduler=cosine",
    "trainer.checkpoint_every_n_steps=9",
    "trainer.checkpoint_interval_s=0",  # a checkpoint at every epoch
    "trainer.progress=epoch",
    "trainer.num_threads=1",
    "trainer.loggers=[tensorboard,csv]",
]


def assert_same_run(ref: Path, resumed: Path) -> None:
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref, resumed))
    assert a["status"] == b["status"] == "completed"
    assert untimed(a) == untimed(b)  # exact float equality, history included
    for name in ("last.pt", "best.pt"):
        wa, wb = (checkpoint.load(d / name)["model"] for d in (ref, resumed))
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    sa, sb = scalars(ref), scalars(resumed)
    assert "step/lr" in sa and len(sa["step/lr"]) == a["steps"]
    assert sa == sb  # every tag, every step once, the same values
    (ha, ra), (hb, rb) = metrics_csv(ref), metrics_csv(resumed)
    assert ha == hb and untimed(ra) == untimed(rb)  # every epoch's row once, the same values
    assert_csv_is_the_history(resumed)  # wall-clock cells included: those of the runs that trained each epoch


def scalars(run_dir: Path) -> dict:
    """Every scalar tag as [(step, value)], read by TensorBoard's own reader (which applies purge_step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    # Sorted by step: a resumed run's events span two files, whose read order is not the step order.
    return {
        tag: sorted((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["scalars"]
        if tag not in ("throughput/samples_per_s", "hparam/train_time_s")
    }


# The child trains as `python -m mlptrain` would, and at step KILL_AT arms a timer thread that sends it a
# real SIGKILL DELAY seconds later: the kill lands wherever the main thread is by then (a step, a checkpoint
# write, the logging), yet always before the run ends, however fast the machine.
KILLED_CHILD = """
import os, signal, sys, threading
from mlptrain.progress import Progress
kill_at, delay = int(sys.argv[1]), float(sys.argv[2])
step, seen = Progress.step, []
def step_then_arm(self, i, n):
    step(self, i, n)
    seen.append(i)
    if len(seen) == kill_at:
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
Progress.step = step_then_arm
sys.argv = ["mlptrain", *sys.argv[3:]]
from mlptrain.cli import main
main()
"""


def test_sigkill_at_any_point_then_resume_is_bit_identical(train, make_cfg, tmp_path):
    from mlptrain import cli

    ref = tmp_path / "ref"
    train(*RUN, "trainer.epochs=5", out=ref, tiny=False)

    # Once epoch 1 has trained (its periodic checkpoints exist) and 140+ steps before the end: those take
    # far longer than the delay plus the wait for the GIL (a 5 ms switch interval), even on a fast machine.
    kill_at, delay = random.randrange(70, 210), random.uniform(0.0, 0.002)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(kill_at), str(delay), *RUN, "trainer.epochs=5"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    where = f"kill armed at step {kill_at}, {delay * 1e3:.2f} ms later"
    assert proc.returncode == -signal.SIGKILL, f"{where}: {proc.stderr[-2000:]}"
    (run_dir,) = list((work / "outputs").glob("*/*"))
    killed_at = checkpoint.load(run_dir / "last.pt")
    assert 63 <= killed_at["step"] < 5 * 70, where  # 63: a kill during epoch 1's validation keeps its last periodic one

    cli.run(make_cfg(*RUN, "trainer.epochs=5", f"trainer.resume={run_dir}"), run_dir)
    assert_same_run(ref, run_dir)
    assert not list(run_dir.glob(".*.tmp"))  # a temp file of a write the kill cut short is cleaned up


@pytest.mark.parametrize("stop_after", [23, 70])  # mid-epoch, and on an epoch's last step
def test_sigint_mid_epoch_then_resume_is_bit_identical(train, make_cfg, tmp_path, monkeypatch, stop_after):
    from mlptrain import cli
    from mlptrain.errors import TrainingInterrupted
    from mlptrain.progress import Progress

    ref, run_dir = tmp_path / "ref", tmp_path / "run"
    train(*RUN, "trainer.epochs=3", out=ref, tiny=False)

    step = Progress.step
    seen = []

    def step_then_signal(self, i, n):  # a real SIGINT, delivered right after the chosen step
        step(self, i, n)
        seen.append(i)
        if len(seen) == stop_after:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Progress, "step", step_then_signal)
    with pytest.raises(TrainingInterrupted) as e:
        cli.run(make_cfg(*RUN, "trainer.epochs=3"), run_dir)
    monkeypatch.undo()
    assert e.value.exit_code == 130
    assert f"after step {stop_after}" in str(e.value) and "resume with: mlptrain trainer.resume=" in str(e.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    saved = checkpoint.load(run_dir / "last.pt")
    assert saved["step"] == stop_after
    assert (saved["mid_epoch"] is not None) == (stop_after % 70 != 0)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"

    cli.run(make_cfg(*RUN, "trainer.epochs=3", f"trainer.resume={run_dir}"), run_dir)
    assert_same_run(ref, run_dir)


def test_resume_refuses_a_different_architecture_or_data_and_says_what(train, make_cfg, tmp_path):
    from mlptrain import cli

    run_dir = tmp_path / "run"
    train("model.hidden=[8]", out=run_dir)
    with pytest.raises(ConfigError, match=r"different model \(model.hidden: \[8\] -> \[12\]\)"):
        cli.run(
            make_cfg("trainer.epochs=1", "dataset.n_samples=120", "model.hidden=[12]", f"trainer.resume={run_dir}"),
            tmp_path / "other",
        )
    with pytest.raises(ConfigError, match=r"different dataset \(dataset.n_samples: 120 -> 150\)"):
        cli.run(
            make_cfg("trainer.epochs=1", "dataset.n_samples=150", "model.hidden=[8]", f"trainer.resume={run_dir}"),
            tmp_path / "other",
        )
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        cli.run(make_cfg("trainer.resume=" + str(tmp_path / "nope")), tmp_path / "other")


def test_resume_command_line_inherits_the_runs_overrides_and_dir(make_cfg, tmp_path, caplog):
    """`mlptrain trainer.resume=<dir>` alone is the whole command, run in the same dir; what is given
    now wins over the run's own overrides."""
    from mlptrain import cli
    from mlptrain.cli.resume import resume_argv

    given = ["dataset=moons", "trainer.epochs=1", "dataset.n_samples=120", "model.hidden=[8]", "trainer.progress=none"]
    given.append("scheduler=step")  # a per-epoch schedule: a resume may extend it (cosine spans the run)
    run_dir = tmp_path / "outputs" / "day" / "run"
    cli.run(make_cfg(*given), run_dir, overrides=given)
    (run_dir / "mlptrain.log").write_text("first run\n")
    argv = resume_argv([f"trainer.resume={run_dir}", "trainer.epochs=3", "--cfg", "job"])
    assert argv == [
        "dataset=moons",
        "dataset.n_samples=120",
        "model.hidden=[8]",
        "trainer.progress=none",
        "scheduler=step",
        f"trainer.resume={run_dir}",
        "trainer.epochs=3",
        f"hydra.run.dir={run_dir}",
        "--cfg",
        "job",
    ]

    r = mlptrain(f"trainer.resume={run_dir}", "trainer.epochs=2", cwd=tmp_path)  # train one epoch longer
    assert r.returncode == 0, r.stderr
    assert [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()] == [run_dir]  # the same dir, no new one
    assert "resumed from" in r.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert [s for s, _ in scalars(run_dir)["val/acc"]] == [1, 2]  # no duplicated or missing steps
    assert "trainer.resume=" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    log = (run_dir / "mlptrain.log").read_text()
    assert log.startswith("first run\n") and "resumed from" in log  # one log, appended to

    caplog.set_level("INFO", logger="mlptrain")  # a finished run resumed again: nothing to do
    again = cli.run(make_cfg(*given, "trainer.epochs=2", f"trainer.resume={run_dir}"), run_dir)
    assert "nothing to resume" in caplog.text and again == metrics
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics

    with pytest.raises(CheckpointError, match="checkpoint not found"):
        resume_argv([f"trainer.resume={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="one run at a time"):
        resume_argv(["-m", f"trainer.resume={run_dir}"])


@pytest.mark.parametrize(
    "path", ["outputs/multirun/2024-01-01/10-00-00/0_optim=sgd,seed=1", "/tmp/with space/it's", "plain/run-1"]
)
def test_resume_command_round_trips_awkward_paths(path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mlptrain.compose import resume_command

    cmd = shlex.split(resume_command(Path(path)))
    assert cmd[0] == "mlptrain"
    (o,) = OverridesParser.create().parse_overrides(cmd[1:])
    assert o.key_or_group == "trainer.resume" and Path(o.value()).resolve() == Path(path).resolve()


def test_a_checkpoint_copied_elsewhere_resumes_into_a_fresh_run_dir(train, make_cfg, tmp_path):
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mlptrain import cli
    from mlptrain.cli.resume import run_dir_of

    train("scheduler=step", out=tmp_path / "first")  # a per-epoch schedule: the resume may extend it
    copied = tmp_path / "elsewhere" / "x.pt"
    copied.parent.mkdir()
    shutil.copy(tmp_path / "first" / "last.pt", copied)
    assert run_dir_of(copied) is None and run_dir_of(tmp_path / "first" / "last.pt") == tmp_path / "first"
    new = tmp_path / "new"
    metrics = cli.run(
        make_cfg(
            "dataset.n_samples=120",
            "model.hidden=[8]",
            "trainer.progress=none",
            "trainer.epochs=2",
            "scheduler=step",
            f"trainer.resume={copied}",
        ),
        new,
    )
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    acc = EventAccumulator(str(new))
    acc.Reload()
    assert "config/text_summary" in acc.Tags()["tensors"]  # a new TensorBoard run gets its header
    assert [e.step for e in acc.Scalars("val/acc")] == [2]

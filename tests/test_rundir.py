"""One owner per run dir (a lock the kernel releases when its process dies), a finished run never
overwritten without trainer.resume or trainer.overwrite=true, no half-made run folder on bad input,
and interrupts recorded as interrupted."""

from __future__ import annotations

import json
import signal
import socket

import pytest
import torch

from conftest import TINY, mlptrain
from mlptrain import checkpoint
from mlptrain.errors import ConfigError, DataError
from test_signal_phases import start, wait_for

pytestmark = pytest.mark.usefixtures("keep_threads")


def fit(make_cfg, out, *args: str) -> dict:
    from mlptrain.cli import run

    # scheduler=step: a per-epoch schedule, which a resume may extend (cosine's length is fixed)
    args = ("scheduler=step", *args)
    return run(make_cfg(*TINY, *args), out, overrides=[*TINY, *args])


def test_two_processes_never_own_one_run_dir(make_cfg, tmp_path):
    """A resume holds the run dir (paused in its validation); a second resume of the same run is
    refused in one line naming the owner; killing the owner (SIGKILL) leaves nothing stuck."""
    run = tmp_path / "run"
    fit(make_cfg, run)
    owner, marker = start(tmp_path, "owner", "validation", f"trainer.resume={run}", "trainer.epochs=2")
    wait_for(owner, marker)
    r = mlptrain(f"trainer.resume={run}", "trainer.epochs=2", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == (
        f"mlptrain: error: {run} is in use by another mlptrain run (pid {owner.pid} on {socket.gethostname()}); "
        "wait for it to end, or give this run another hydra.run.dir\n"
    )
    owner.kill()
    owner.communicate(timeout=60)
    assert fit(make_cfg, run, "trainer.epochs=2", f"trainer.resume={run}")["epochs"] == 2  # no stale lock
    # An in-process owner refuses a second one in the same way.
    from mlptrain import rundir

    with rundir.own(run, resume=str(run)):
        with pytest.raises(ConfigError, match=r"is in use by another mlptrain run \(pid \d+ on "):
            with rundir.own(run, resume=str(run)):
                pass


def test_a_finished_run_is_not_overwritten_without_being_told(make_cfg, tmp_path):
    run = tmp_path / "run"
    fit(make_cfg, run)
    before = {n: (run / n).read_bytes() for n in ("best.pt", "metrics.json")}
    with pytest.raises(ConfigError) as e:
        fit(make_cfg, run, "seed=1")
    assert str(e.value) == (
        f"{run} holds the results of another run; continue it with trainer.resume={run}, replace it with "
        "trainer.overwrite=true, or give this run another hydra.run.dir"
    )
    assert {n: (run / n).read_bytes() for n in before} == before
    fit(make_cfg, run, "seed=1", "trainer.overwrite=true")
    assert checkpoint.load(run / "best.pt")["config"]["seed"] == 1
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # the old run's events went with it


def test_bad_input_after_torch_loads_leaves_no_run_folder(make_cfg, tmp_path):
    """Before the fix: a "failed" folder with an empty log.  Now the folder Hydra made goes again."""
    r = mlptrain("dataset=csv", "dataset.path=missing.csv", "dataset.target=y", "trainer.progress=none", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing.csv" in r.stderr
    assert not list((tmp_path / "outputs").glob("*/*")), list((tmp_path / "outputs").rglob("*"))

    from mlptrain.cli import run

    bad = ["trainer.monitor=nope"] + ([] if torch.cuda.is_available() else ["trainer.device=cuda"])
    for override in bad:
        out = tmp_path / override
        with pytest.raises(ConfigError):
            run(make_cfg(*TINY, override), out)
        assert not out.exists(), override


def test_ctrl_c_at_start_up_and_a_second_one_are_recorded_as_interrupted(make_cfg, tmp_path, monkeypatch):
    from mlptrain.cli import run
    from mlptrain.training import setup

    def interrupted_while_loading(cfg):
        signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, while the data loads
        raise DataError("not reached")

    monkeypatch.setattr(setup, "load_dataset", interrupted_while_loading)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(*TINY), out)
    assert json.loads((out / "metrics.json").read_text())["status"] == "interrupted"

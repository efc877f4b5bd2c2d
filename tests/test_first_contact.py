"""A newcomer's first commands: a typo, a swept value, a scalar for a list, a value the grammar cannot read
each get one line in plain words (issue 14), never Hydra's or OmegaConf's."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, mlptrain
from mlptrain.compose import listify, precompose
from mlptrain.errors import ConfigError


def refused(*argv: str) -> str:
    with pytest.raises(ConfigError) as e:
        precompose(list(argv))
    return str(e.value)


@pytest.mark.parametrize(
    "override, start",
    [
        ("trainer.batchsize=3", "trainer.batchsize: unknown key; did you mean trainer.batch_size? valid keys in"),
        ("traner.epochs=3", "traner.epochs: unknown key; did you mean trainer.epochs? valid keys in the config"),
        ("batch_size=3", "batch_size: unknown key; did you mean trainer.batch_size? valid keys in the config"),
        ("datset=moons", "datset: unknown key; did you mean dataset? valid keys in the config"),
        ("trainer.early_stopping.patence=3", "trainer.early_stopping.patence: unknown key; did you mean "),
    ],
)
def test_a_misspelled_key_names_the_closest_valid_one(override, start):
    msg = refused(override)
    assert msg.startswith(start), msg
    assert "+" not in msg and "append" not in msg  # not Hydra's advice to add the typo


def test_a_misspelled_key_in_a_sweep_is_named_alike():
    assert refused("-m", "trainer.batchsize=1,2").startswith("trainer.batchsize: unknown key; did you mean trainer.b")


def test_every_value_of_a_swept_key_is_checked_before_the_first_job(tmp_path):
    r = mlptrain("-m", "model.norm=batch,layr", *TINY, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == (
        "mlptrain: error: sweep value model.norm=layr: model.norm: unknown value 'layr'; valid choices: none, batch, "
        "layer\n"
    ), r.stderr
    assert not (tmp_path / "outputs").exists()  # no job ran


def test_a_swept_value_that_fits_some_structure_is_accepted():
    precompose(["-m", "model=mlp,linear", "model.hidden=[8],[]"])  # [] is refused by mlp, fine for linear
    assert "seed: must be in [0, 2**63)" in refused("-m", "seed=0,-1")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["model.hidden=64"], ["model.hidden=[64]"]),
        (["-m", "model.hidden=8,16"], ["-m", "model.hidden=[8],[16]"]),
        (["trainer.loggers=csv"], ["trainer.loggers=[csv]"]),
        (["model.hidden=[8,8]", "model.hidden=null", "seed=3"], ["model.hidden=[8,8]", "model.hidden=null", "seed=3"]),
    ],
)
def test_one_hidden_size_given_as_a_scalar_means_a_list_of_one(argv, expected):
    assert listify(argv) == expected


def test_a_scalar_hidden_size_trains_and_a_run_says_where_its_results_are(tmp_path):
    r = mlptrain(*TINY, "model.hidden=4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "(0): Linear(in_features=2, out_features=4" in r.stdout + r.stderr
    (run_dir,) = [p.relative_to(tmp_path) for p in (tmp_path / "outputs").glob("*/*")]
    lines = r.stdout.splitlines()
    assert lines[0].endswith(f"] run dir: {run_dir}")  # first and last: where the results go
    assert lines[-1].endswith(f"] results in {run_dir}; view them with: tensorboard --logdir {run_dir}")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("optim.lr=1;2", "optim.lr: cannot read the value 1;2: characters such as ; , [ ] ( ) = quotes and spaces"),
        ("model.hidden=[8,]", "model.hidden: cannot read the value [8,]: a list is written [8,16] (no trailing comma)"),
        ('dataset.path="a', 'put double quotes inside shell quotes: \'dataset.path="\\"a"\''),
    ],
)
def test_a_value_the_grammar_cannot_read_is_plain_words_with_quoting_advice(override, needle):
    msg = refused(override)
    assert needle in msg, msg
    assert "Lexer" not in msg and "viable" not in msg and "hydra.cc" not in msg


def test_grammar_errors_reach_the_user_as_one_line(tmp_path):
    r = mlptrain("optim.lr=1;2", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "LexerNoViableAltException" not in r.stderr, r.stderr
    assert "'optim.lr=\"1;2\"'" in r.stderr


# ----------------------------------------------------------------------------- extending a finished run
@pytest.mark.parametrize("scheduler", ["none", "step", "exponential", "plateau", "cosine", "onecycle"])
def test_extending_a_finished_run_under_every_scheduler(scheduler, make_cfg, tmp_path, keep_threads):
    """Per-epoch schedules go on where they were; a schedule planned over the whole run is refused in one line
    naming trainer.init_from (cosine used to climb back up, onecycle to step past its end)."""
    from mlptrain import cli

    first = [*TINY, f"scheduler={scheduler}", "trainer.num_threads=1", "trainer.loggers=[]"]
    run_dir = tmp_path / "run"
    cli.run(make_cfg(*first), run_dir)
    lr_after_one = json.loads((run_dir / "metrics.json").read_text())["history"][-1]["lr"]
    longer = make_cfg(*first, "trainer.epochs=3", f"trainer.resume={run_dir}")
    if scheduler in ("cosine", "onecycle"):
        with pytest.raises(ConfigError, match=f"^trainer.resume: scheduler={scheduler} plans the lr over the run's"):
            cli.run(longer, run_dir)
        return
    metrics = cli.run(longer, run_dir)
    assert metrics["status"] == "completed" and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    lrs = [h["lr"] for h in metrics["history"]]
    assert lrs[0] == lr_after_one and all(b <= a for a, b in zip(lrs, lrs[1:]))  # no lr climbing back up


def test_a_refused_extension_rewrites_nothing_and_names_the_init_from_command(tmp_path):
    r = mlptrain(*TINY, "scheduler=onecycle", "trainer.loggers=[]", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run_dir,) = list((tmp_path / "outputs").glob("*/*"))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    r = mlptrain(f"trainer.resume={run_dir}", "trainer.epochs=3", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == (
        "mlptrain: error: trainer.resume: scheduler=onecycle plans the lr over the run's whole length "
        "(trainer.epochs=1), so trainer.epochs=3 cannot extend it; train on from its weights with a fresh schedule "
        f"in a new run: mlptrain trainer.init_from={run_dir} trainer.epochs=2\n"
    ), r.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # .hydra/ included


def test_init_from_refuses_another_model_and_a_resume_at_once(tmp_path, make_cfg, keep_threads):
    from mlptrain import cli
    from mlptrain.cli.resume import check_resume, plan

    run_dir = tmp_path / "run"
    cli.run(make_cfg(*TINY, "trainer.num_threads=1", "trainer.loggers=[]"), run_dir, overrides=TINY)
    argv, resuming = plan([f"trainer.init_from={run_dir}", "model.hidden=[4]"])
    assert argv[-2:] == [f"trainer.init_from={run_dir}", "model.hidden=[4]"] and "hydra.run.dir" not in str(argv)
    with pytest.raises(ConfigError, match=r"holds a different model \(model.hidden: \[8\] -> \[4\]\)"):
        check_resume(resuming, make_cfg(*argv))
    with pytest.raises(ConfigError, match="give either trainer.resume"):
        plan([f"trainer.init_from={run_dir}", f"trainer.resume={run_dir}"])


# ----------------------------------------------------------------------------- resume from anywhere
def test_the_data_location_is_pinned_so_a_resume_works_from_anywhere(tmp_path):
    from mlptrain.cli.resume import pinned_paths

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {tmp_path}\n")
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    config = {"dataset": {"data_dir": "/data/mnist", "path": "t.csv", "test_path": None}}
    assert pinned_paths(config, run_dir, set()) == [
        "dataset.data_dir=/data/mnist",  # as the run found it, without $MLPTRAIN_DATA
        f"dataset.path={tmp_path / 't.csv'}",  # relative to where the run was started
    ]
    assert pinned_paths(config, run_dir, {"dataset.path"}) == ["dataset.data_dir=/data/mnist"]  # given now


# ----------------------------------------------------------------------------- small ones
def test_version_names_mlptrain_torch_and_the_device(tmp_path):
    r = mlptrain("--version", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("mlptrain ") and lines[1].startswith("torch ") and lines[2].startswith("device: ")
    assert "Hydra" not in r.stdout


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_run_outputs_follow_the_umask(tmp_path, mask, mode):
    import os

    from mlptrain.files import write_json

    old = os.umask(mask)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == mode


def test_auto_threads_follow_the_work_per_step_and_the_free_cores(monkeypatch):
    import os

    import torch

    from mlptrain import accel

    cpu = torch.device("cpu")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert accel.auto_threads(2_000, 128, cpu)[0] == 1  # a small model: one thread, even on a quiet machine
    assert accel.auto_threads(270_000, 128, cpu)[0] == 1  # MNIST's 784-256-256-10: faster on one thread
    assert accel.auto_threads(1_000_000, 128, cpu)[0] == 2
    assert accel.auto_threads(10_000_000, 512, cpu)[0] == 8  # big steps: every free core
    monkeypatch.setattr(os, "getloadavg", lambda: (6.2, 0.0, 0.0))
    assert accel.auto_threads(10_000_000, 512, cpu) == (2, "5120.0M multiply-adds per step, 2 of 8 cores free")
    assert accel.auto_threads(10_000_000, 512, torch.device("meta"))[0] == 0  # an accelerator: torch's default
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert accel.auto_threads(10_000_000, 512, cpu) == (0, "OMP_NUM_THREADS is set")

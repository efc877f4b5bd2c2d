"""The command itself: help, one-line errors with exit codes, run and multirun output dirs."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, mlptrain, refused_in_process


def test_help_lists_every_group_and_option(tmp_path):
    from mlptrain.compose import config_groups

    r = mlptrain("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for group, options in config_groups().items():
        assert f"{group}: {', '.join(options)}" in r.stdout
    assert not (tmp_path / "outputs").exists()  # help creates no run dir


THROUGH_HYDRA = {"+optim.nesterov=1"}  # passes precompose: refused when the optimizer is made


@pytest.mark.parametrize(
    "override, needle",
    [
        ("optim.lr=-1", "optim.lr: must be a positive number, got -1"),
        ("model.activation=relux", "model.activation: unknown value 'relux'; valid choices: relu, sigmoid"),
        ("dataset=nope", "dataset=nope: unknown option for group 'dataset'; valid choices: blobs"),
        ("trainer.epochs=-1", "trainer.epochs: must be >= 1, got -1"),
        ("trainer.epochs=0", "trainer.epochs: must be >= 1, got 0 (to evaluate a trained run: mlptrain-eval <run"),
        ("trainer.max_steps=18446744073709551616", "trainer.max_steps: must be < 2**63, got 18446744073709551616"),
        ("dataset=spi\nrals", "dataset=spi\\nrals: unknown option for group 'dataset'"),
        ("trainer.batch_size=0", "trainer.batch_size: must be >= 1"),
        ("model.dropout=1.0", "model.dropout: must be in [0, 1)"),
        ("model.hidden=[]", "model.hidden: an mlp needs at least one hidden size"),
        ("model.hidden=[8,-2]", "model.hidden: sizes must be positive integers"),
        ("trainer.epochs=many", "trainer.epochs: must be an integer or auto, got 'many'"),
        ("+trainer.epoch=3", "trainer.epoch: unknown key 'epoch'; did you mean trainer.epochs? valid keys: epochs"),
        ("optim.momentum=2", "optim.momentum: must be in [0, 1)"),
        ("+optim.nesterov=1", "optim.nesterov: expected true or false, got 1"),
        ("optim.nosuch=2", "optim.nosuch: unknown key; valid keys in optim (optim=sgd): _target_, _partial_, lr"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, monkeypatch, override, needle):
    args = (*TINY, "optim=sgd", override)
    if override in THROUGH_HYDRA or override == "optim.lr=-1":  # the process itself, for each path
        r = mlptrain(*args, cwd=tmp_path)
        code, out, err = r.returncode, r.stdout, r.stderr
    else:  # refused by precompose, before Hydra: the same code path in this process
        monkeypatch.chdir(tmp_path)
        code, out, err = refused_in_process(*args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mlptrain: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err + out


def test_single_run_writes_config_metrics_checkpoints_and_events(tmp_path):
    r = mlptrain(*TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run_dir,) = list((tmp_path / "outputs").glob("*/*"))
    for name in ("metrics.json", "last.pt", "best.pt", ".hydra/config.yaml", "mlptrain.log"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and 0 <= metrics["test"]["acc"] <= 1


def test_two_runs_in_the_same_second_get_two_dirs():
    from mlptrain import cli, compose  # noqa: F401 - importing cli registers the mlptrain.* resolvers

    compose.reserved_dirs.clear()
    a = compose.unique_dir("/tmp/mlptrain-test-unique/x")
    compose.reserved_dirs.clear()  # a second process has its own memo
    b = compose.unique_dir("/tmp/mlptrain-test-unique/x")
    assert a != b and b == a + "-1"
    import shutil

    shutil.rmtree("/tmp/mlptrain-test-unique")


def test_multirun_gives_one_dir_and_metrics_per_job(tmp_path):
    r = mlptrain("-m", "optim=sgd,adam", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = sorted(p for p in (tmp_path / "outputs" / "multirun").glob("*/*/*") if p.is_dir())
    assert [p.name[:2] for p in jobs] == ["0_", "1_"]
    assert "optim=sgd" in jobs[0].name and "optim=adam" in jobs[1].name
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
        assert [p for p in job.iterdir() if p.is_dir()] == [job / ".hydra"]  # no add_hparams sub-runs

    # TensorBoard's HParams table: one row per job, the same keys, the swept choice as a column.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    rows = []
    for job in jobs:
        acc = EventAccumulator(str(job))
        acc.Reload()
        blob = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        rows.append(plugin_data_pb2.HParamsPluginData.FromString(blob).session_start_info.hparams)
        assert "hparam/test_acc" in acc.Tags()["scalars"]
    assert set(rows[0]) == set(rows[1])
    assert [r["optim"].string_value for r in rows] == ["sgd", "adam"]


def test_glob_sweep_over_a_group_runs_each_matching_option(tmp_path):
    d = tmp_path / "sweep"
    r = mlptrain("-m", "dataset=glob(*oon*)", f"hydra.sweep.dir={d}", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (job,) = [p for p in d.iterdir() if p.is_dir()]  # *oon*: moons only
    assert "dataset=moons" in job.name and json.loads((job / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--cfg", "job", "dataset=bogus"], "dataset=bogus: unknown option for group 'dataset'; valid choices: blobs"),
        (["--cfg", "job", "foo=1"], "foo: unknown key; valid keys in the config: cv, dataset, experiment"),
        (["--info", "config", "optim.nosuch=2"], "optim.nosuch: unknown key; valid keys in optim (optim=adam): "),
    ],
)
def test_cfg_and_info_report_bad_overrides_in_one_line(tmp_path, args, needle):
    r = mlptrain(*args, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr.startswith("mlptrain: error: ") and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_cfg_prints_a_config_that_composes_even_with_a_bad_value(tmp_path):
    r = mlptrain("--cfg", "job", "optim.lr=-1", cwd=tmp_path)  # show what would run; only a run validates it
    assert r.returncode == 0 and "lr: -1" in r.stdout, r.stderr
    assert not (tmp_path / "outputs").exists()


def test_interpolated_output_dir_is_checked_up_to_the_interpolation(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mlptrain import cli, compose  # noqa: F401 - importing cli registers the mlptrain.* resolvers

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = mlptrain(*TINY, f"hydra.run.dir={blocker}/" + "${now:%H}", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert r.stderr == (
        f"mlptrain: error: hydra.run.dir: cannot create {blocker}/" + f"${{now:%H}}: {blocker} is not a directory\n"
    )
    # A name that only starts like the file is a folder beside it, and is not resolved (no folder reserved).
    parse = OverridesParser.create().parse_overrides
    compose.reserved_dirs.clear()
    compose.check_output_dirs(parse([f"hydra.run.dir={blocker}" + "${mlptrain.unique_dir:x}/run"]))
    assert compose.reserved_dirs == {} and list(tmp_path.iterdir()) == [blocker]


def _experiment(tmp_path, sweep: str):
    """A config folder for hydra.searchpath with experiment=mine sweeping ``optim: <sweep>``."""
    (tmp_path / "cfg" / "experiment").mkdir(parents=True)
    (tmp_path / "cfg" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /dataset: moons\noptim:\n  lr: 0.05\n"
        f"hydra:\n  sweeper:\n    params:\n      optim: {sweep}\n      seed: 0,1\n"
    )
    return f"hydra.searchpath=[file://{tmp_path}/cfg]"


def test_options_from_hydra_searchpath_are_accepted(tmp_path):
    r = mlptrain("--cfg", "job", _experiment(tmp_path, "sgd"), "experiment=mine", cwd=tmp_path)
    assert r.returncode == 0 and "lr: 0.05" in r.stdout, r.stderr
    r = mlptrain(_experiment(tmp_path / "b", "sgd"), "experiment=nope", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "Could not find 'experiment/nope' Available options in 'experiment':" in r.stderr
    assert " mine " in r.stderr  # the option from the search path is listed
    assert "Config search path" not in r.stderr  # Hydra's list of folders is noise on one line


def test_sweep_set_in_a_config_file_is_checked_before_any_job(tmp_path):
    r = mlptrain("-m", _experiment(tmp_path, "sgd,bogus"), "experiment=mine", *TINY, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("mlptrain: error: In 'config': Could not find 'optim/bogus'"), r.stderr
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()  # no job ran


def test_a_sweep_is_composed_once_per_group_structure_with_config_file_params():
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mlptrain.compose import CONFIG_PACKAGE, structures, sweeper_params

    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        primary = compose(config_name="config", overrides=["experiment=optimizer_showdown"], return_hydra_config=True)
        parse = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader()).parse_overrides
        sweep = parse(sweeper_params(primary)) + parse(["experiment=optimizer_showdown", "seed=5,6"])
    # The preset's optimizers, each once: its seeds (and the command line's, which replace them) are values.
    assert structures(sweep, primary) == [
        [f"optim={o}", "seed=5", "experiment=optimizer_showdown"]
        for o in ("sgd", "momentum", "adagrad", "rmsprop", "adam")
    ]


def test_a_sweep_over_a_group_only_a_search_path_has_is_checked_before_any_job(tmp_path):
    (tmp_path / "cfg" / "budget").mkdir(parents=True)
    (tmp_path / "cfg" / "budget" / "short.yaml").write_text("# @package _global_\ntrainer:\n  epochs: 1\n")
    search = f"hydra.searchpath=[file://{tmp_path}/cfg]"
    r = mlptrain("-m", search, "+budget=short,nope", *TINY, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "Could not find 'budget/nope'" in r.stderr and "Available options in 'budget': short" in r.stderr
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()  # no job ran


@pytest.mark.parametrize("sweep", ["hydra.job.chdir=true,false", "hydra/launcher=basic,joblib"])
def test_sweeping_hydra_settings_is_one_line_before_any_job(tmp_path, sweep):
    r = mlptrain("-m", sweep, *TINY, cwd=tmp_path)
    key = sweep.split("=")[0]
    assert r.returncode == 2 and r.stderr == (
        f"mlptrain: error: {key}: Hydra's own settings cannot be swept "
        f"({sweep}); give it one value, and sweep mlptrain's keys and groups\n"
    )
    assert not (tmp_path / "multirun").exists()

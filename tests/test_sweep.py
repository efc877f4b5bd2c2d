"""Sweep summaries: summary.csv / summary.md written by the Hydra callback during a real multirun,
and rebuilt by ``mlptrain-summary`` for any sweep folder, including an interrupted one."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys

import pytest

from conftest import TINY, mlptrain
from mlptrain import sweep


def summary_command(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "mlptrain.sweep", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def read_csv(sweep_dir):
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A real sweep folder: 2 widths x 2 seeds, then one job that fails (a monitor the classification
    task does not have, found when the job builds its task) moved in beside them as job 4."""
    root = tmp_path_factory.mktemp("sweep")
    d, other = root / "multirun", root / "other"
    r = mlptrain("-m", f"hydra.sweep.dir={d}", *TINY, "model.hidden=[4],[8]", "seed=0,1", "trainer.epochs=2", cwd=root)
    assert r.returncode == 0, r.stderr
    r = mlptrain("-m", f"hydra.sweep.dir={other}", *TINY, "trainer.monitor=rmse", cwd=root)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("mlptrain: error: 1 job(s) failed: 0: trainer.monitor: 'rmse'")
    (job,) = [p for p in other.iterdir() if (p / ".hydra").is_dir()]
    job.rename(d / ("4" + job.name[1:]))
    sweep.write_summary(d)
    return d


def _job_metrics(sweep_dir):
    """{(model.hidden, seed): metrics.json} of the completed jobs, read directly."""
    import yaml

    out = {}
    for job in sweep_dir.iterdir():
        if (job / "metrics.json").is_file():
            params = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra/overrides.yaml").read_text()))
            out[(params.get("model.hidden"), params.get("seed"))] = json.loads((job / "metrics.json").read_text())
    return out


def test_one_row_per_job_best_first_with_the_failure_last(sweep_dir):
    rows = read_csv(sweep_dir)
    assert len(rows) == 5
    assert [r["status"] for r in rows] == ["completed"] * 4 + ["failed"]
    assert "trainer.monitor: 'rmse' is not a metric" in rows[-1]["error"]
    assert rows[-1]["trainer.monitor"] == "rmse" and rows[0]["trainer.monitor"] == ""
    objectives = [float(r["val/nll (best)"]) for r in rows[:4]]
    assert objectives == sorted(objectives)  # val/nll: lower is better
    jobs = _job_metrics(sweep_dir)
    for r in rows[:4]:
        m = jobs[(r["model.hidden"], r["seed"])]
        assert float(r["val/nll (best)"]) == pytest.approx(m["objective"])
        assert int(r["best_epoch"]) == m["best_epoch"]
        assert float(r["test/acc"]) == pytest.approx(m["test"]["acc"])
        assert float(r["train_time_s"]) == pytest.approx(m["train_time_s"])
        assert float(r["final train/loss"]) == pytest.approx(m["history"][-1]["train/loss"])


def test_seed_only_differences_are_grouped_as_mean_and_std(sweep_dir):
    s = sweep.summarize(sweep_dir)
    jobs = _job_metrics(sweep_dir)
    groups = {(g["setting"]["model.hidden"], g["setting"]["trainer.monitor"]): g for g in s["groups"]}
    assert set(groups) == {("[4]", None), ("[8]", None), ("[8]", "rmse")}  # the failed job is a setting of its own
    for width in ("[4]", "[8]"):
        values = [jobs[(width, seed)]["test"]["acc"] for seed in ("0", "1")]
        g = groups[(width, None)]
        mean, std = g["stats"]["test/acc"]
        assert g["completed"] == 2 and sorted(g["seeds"]) == ["0", "1"]
        assert mean == pytest.approx(statistics.fmean(values)) and std == pytest.approx(statistics.stdev(values))
    failed = groups[("[8]", "rmse")]
    assert failed["completed"] == 0 and failed["stats"] == {} and failed["n"] == 1
    md = (sweep_dir / "summary.md").read_text()
    assert "## Mean ± std over seeds" in md and "5 job(s): 4 completed, 1 failed" in md


def test_summary_command_rebuilds_it_and_handles_an_interrupted_sweep(sweep_dir, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(sweep_dir, d)
    before = (d / "summary.csv").read_text()
    (d / "summary.csv").unlink()
    (d / "summary.md").unlink()
    r = summary_command(d, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (d / "summary.csv").read_text() == before and "| rank | job |" in r.stdout
    # Interrupt it: one job killed mid-run (status still "running"), one that never wrote metrics.
    jobs = sorted(
        p
        for p in d.iterdir()
        if p.is_dir()
        and (p / "metrics.json").is_file()
        and json.loads((p / "metrics.json").read_text())["status"] == "completed"
    )
    killed = json.loads((jobs[0] / "metrics.json").read_text())
    killed["status"] = "running"
    (jobs[0] / "metrics.json").write_text(json.dumps(killed))
    (jobs[1] / "metrics.json").unlink()
    r = summary_command(d, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    statuses = sorted(row["status"] for row in read_csv(d))
    assert statuses == ["completed", "completed", "failed", "incomplete", "incomplete"]


def test_summary_command_rejects_a_folder_without_jobs(tmp_path):
    r = summary_command(tmp_path / "nope", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("mlptrain-summary: error:") and len(r.stderr.splitlines()) == 1
    r = summary_command(tmp_path, cwd=tmp_path)
    assert r.returncode == 2 and "no job folders" in r.stderr


def test_minimising_objectives_sort_ascending(tmp_path):
    """A regression sweep written by hand in the trainer's formats: lower val/rmse first."""
    for i, (lr, rmse) in enumerate([("0.1", 0.5), ("0.01", 0.2), ("0.001", 0.9)]):
        job = tmp_path / f"{i}_optim.lr={lr}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra/overrides.yaml").write_text(f"- optim.lr={lr}\n- dataset=sine\n")
        (job / "metrics.json").write_text(
            json.dumps(
                {
                    "status": "completed",
                    "objective": rmse,
                    "monitor": "val/rmse",
                    "mode": "min",
                    "best_epoch": 3,
                    "best": {"val/rmse": rmse},
                    "final": {"epoch": 4, "val/rmse": rmse + 0.1},
                    "test": {"rmse": rmse},
                    "epochs": 4,
                    "train_time_s": 1.0,
                }
            )
        )
    s = sweep.write_summary(tmp_path)
    assert [r["params"]["optim.lr"] for r in s["rows"]] == ["0.01", "0.1", "0.001"]
    assert s["varying"] == ["optim.lr"] and s["common"] == ["dataset=sine"] and s["groups"] == []


def test_a_crashed_job_still_gets_its_row(tmp_path):
    """A job that dies on its own (here: a layer too large to allocate, reported as one line) still
    gets its row, with its error, beside the job that completed."""
    d = tmp_path / "sweep"
    r = mlptrain("-m", f"hydra.sweep.dir={d}", *TINY, f"model.hidden=[8],[{10**15}]", cwd=tmp_path)
    assert r.returncode == 1 and "out of memory" in r.stderr
    rows = read_csv(d)
    assert [(row["model.hidden"], row["status"]) for row in rows] == [("[8]", "completed"), (f"[{10**15}]", "failed")]
    assert rows[1]["error"].startswith("out of memory (tried to allocate")
    (crashed,) = [p for p in d.iterdir() if p.name.startswith("1_")]
    assert json.loads((crashed / "metrics.json").read_text())["status"] == "failed"  # kept beside the run


@pytest.mark.parametrize(
    "command, jobs, structures",
    [
        (
            ["trainer.epochs=1", "hydra.job.config.override_dirname.exclude_keys=[seed]"],
            [["trainer.epochs=1", f"seed={s}"] for s in range(3)],
            1,
        ),
        (
            [],
            [
                ["model.hidden=[8]", "optim.lr=0.1", "model.activation=tanh", "trainer.max_steps=null"],
                ["model.hidden=[16,16]", "optim.lr=1e-3", "model.activation='relu'", "trainer.max_steps=${seed}"],
            ],
            1,
        ),
        (
            [],
            [
                ["optim=sgd", "optim.lr=0.1"],
                ["optim=adam", "optim.lr=0.01"],
                ["optim=sgd", "optim.lr=0.2"],
                ["dataset=moons", "dataset.noise=0.3"],
                ["dataset=moons", "dataset.noise=0.1"],
            ],
            3,
        ),
        (
            [],
            [
                ["+trainer.extra=1", "seed=1"],
                ["+trainer.extra=2", "seed=2"],
                ["~trainer.grad_clip", "seed=3"],
                ["experiment=optimizer_showdown", "seed=4"],
                ["seed=5", "experiment=optimizer_showdown"],
            ],
            5,
        ),
    ],
)
def test_the_launchers_config_cache_matches_hydras_composition(command, jobs, structures):
    """Each job's config, composed once per structure and then given its values, equals Hydra's own
    composition of that job: every key, Hydra's included (overrides.task, job.override_dirname)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from hydra_plugins.mlptrain_sweeper import SweepConfigs

    with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", command, RunMode.MULTIRUN)
        cached = SweepConfigs(loader)
        for job in jobs:
            want, got = loader.load_sweep_config(master, job), cached.load_sweep_config(master, job)
            assert OmegaConf.to_container(got) == OmegaConf.to_container(want), job
            assert OmegaConf.is_struct(got) and OmegaConf.is_readonly(got.hydra) == OmegaConf.is_readonly(want.hydra)
        assert len(cached._first) == structures  # composed once per structure, not per job


def _job(folder, name, overrides, monitor, mode, objective, best):
    job = folder / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra/overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "metrics.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "objective": objective,
                "monitor": monitor,
                "mode": mode,
                "best_epoch": 2,
                "best": best,
                "final": {},
                "test": {},
                "epochs": 3,
                "train_time_s": 1.0,
            }
        )
    )


def test_a_sweep_over_tasks_ranks_each_under_its_own_objective_and_labels_the_best_epoch(tmp_path):
    """Regression and classification jobs in one sweep: each ranked under its own monitor; the loss at
    the best-accuracy epoch is labelled so, and the objective is not repeated as a "best" column."""
    _job(tmp_path, "0_dataset=sine", ["dataset=sine"], "val/rmse", "min", 0.3, {"val/rmse": 0.3, "val/loss": 0.1})
    _job(tmp_path, "1_dataset=moons", ["dataset=moons"], "val/acc", "max", 0.9, {"val/acc": 0.9, "val/loss": 0.4})
    _job(tmp_path, "2_dataset=xor", ["dataset=xor"], "val/acc", "max", 0.95, {"val/acc": 0.95, "val/loss": 0.2})
    s = sweep.write_summary(tmp_path)
    assert [r["job"] for r in s["rows"]] == ["2_dataset=xor", "1_dataset=moons", "0_dataset=sine"]
    header = read_csv(tmp_path)[0]
    assert "val/loss at best val/acc epoch" in header and "val/loss at best val/rmse epoch" in header
    assert "best val/loss" not in header and "best val/acc" not in header
    md = (tmp_path / "summary.md").read_text()
    assert "Objectives: val/acc (max), val/rmse (min); jobs ranked within each" in md
    assert "| 3 | 0 | sine | completed | val/rmse | 0.3 |" in md


def test_summary_command_refuses_a_folder_of_several_sweeps_and_writes_nothing(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "multirun.yaml").write_text("hydra: {}\n")
        _job(tmp_path / name, "0_seed=0", ["seed=0"], "val/acc", "max", 0.9, {"val/acc": 0.9})
    r = summary_command(tmp_path, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "holds 2 sweeps (a, b); summarise one sweep folder at a time" in r.stderr
    assert not list(tmp_path.rglob("summary.*"))
    r = summary_command(tmp_path / "a", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "a" / "summary.csv").is_file()

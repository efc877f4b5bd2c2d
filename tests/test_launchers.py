"""Hydra's own sweeper/launcher plugins with our presets: joblib (parallel local jobs), submitit
(local executor), Optuna.  Each is an optional extra (in .[dev]); a test skips when its plugin
is not installed."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from conftest import TINY, mlptrain


def launched(launcher: str, sweep_dir, *overrides: str):
    """``mlptrain -m`` of tiny jobs on ``hydra/launcher=<launcher>`` into ``sweep_dir``."""
    args = ["-m", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}", *TINY, *overrides]
    return mlptrain(*args, cwd=sweep_dir.parent)


def job_metrics(sweep_dir):
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/metrics.json"))]


def test_joblib_runs_jobs_in_parallel_processes_sharing_the_cores(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    d = tmp_path / "sweep"
    # Three jobs, two at a time; the third fails when it runs (friedman1 is a regression set, so it
    # has no accuracy to monitor: only its data can tell, so the check before the sweep passes it).
    r = launched(
        "parallel", d, "hydra.launcher.n_jobs=2", "loss=mse", "trainer.monitor=acc", "dataset=moons,circles,friedman1"
    )
    # The failure happened in a worker process; the main process still reports it and exits 1.
    assert r.returncode == 1
    assert "mlptrain: error: 1 job(s) failed: 2: trainer.monitor: 'acc' is not a metric" in r.stderr, r.stderr
    jobs = [m for m in job_metrics(d) if m["status"] == "completed"]
    assert len(jobs) == 2
    pids = {m["runtime"]["pid"] for m in jobs}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes
    # Each job gets cores // n_jobs torch threads: one each on a 2-core machine.
    expected = max(1, (os.cpu_count() or 1) // 2)
    assert [m["runtime"]["torch_threads"] for m in jobs] == [expected, expected]
    md = (d / "summary.md").read_text()
    assert "3 job(s): 2 completed, 1 failed" in md

    # Run again: the finished jobs are skipped, untouched; the failed one runs (in a worker) and fails again.
    done = {p: p.stat().st_mtime_ns for p in d.glob("[01]_*/**/*") if p.is_file()}
    again = mlptrain(*r.args[3:], cwd=tmp_path)
    assert again.returncode == 1 and again.stderr.splitlines()[-1] == r.stderr.splitlines()[-1], again.stderr
    assert {p: p.stat().st_mtime_ns for p in done} == done
    assert (d / "summary.md").read_text().count("| completed |") == 2


def test_submitit_local_sweep_completes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    d = tmp_path / "sweep"
    r = launched("submitit_local", d, "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1", "seed=0,1")
    assert r.returncode == 0, r.stderr
    jobs = job_metrics(d)
    assert [m["status"] for m in jobs] == ["completed", "completed"]
    assert [m["runtime"]["torch_threads"] for m in jobs] == [1, 1]  # from cpus_per_task
    assert (d / ".submitit").is_dir() and (d / "summary.csv").is_file()

    # Re-submitted: both jobs have finished, so nothing is submitted and nothing rewritten.
    submitted = sorted((d / ".submitit").iterdir())
    done = {p: p.stat().st_mtime_ns for p in d.glob("[01]_*/**/*") if p.is_file()}
    again = mlptrain(*r.args[3:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted((d / ".submitit").iterdir()) == submitted
    assert {p: p.stat().st_mtime_ns for p in done} == done


def test_optuna_search_optimises_the_returned_objective(tmp_path):
    pytest.importorskip("optuna")
    d = tmp_path / "sweep"
    # fixed overrides beside the searched ones: they stay out of the job folder names (issue 14.3)
    fixed = ["dataset.noise=0.3", "dataset.val_fraction=0.2", "dataset.test_fraction=0.2", "model.norm=none"]
    r = mlptrain(
        "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={d}", *TINY, *fixed, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    names = [p.name for p in d.iterdir() if (p / ".hydra").is_dir()]
    assert len(names) == 3 and all(len(n) < 100 and "noise" not in n and "lr=" in n for n in names), names
    jobs = job_metrics(d)
    assert len(jobs) == 3 and all(m["status"] == "completed" and m["monitor"] == "val/loss" for m in jobs)
    result = yaml.safe_load((d / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(min(m["objective"] for m in jobs))
    assert set(result["best_params"]) == {
        "optim.lr",
        "optim.weight_decay",
        "model.activation",
        "model.dropout",
        "trainer.batch_size",
    }
    md = (d / "summary.md").read_text()
    assert "3 job(s): 3 completed" in md and "Objective: val/loss (min)" in md

    # Continued with more trials: the seeded sampler asks the same 3 again (skipped, untouched), then a 4th.
    done = {p: p.stat().st_mtime_ns for p in d.glob("[012]_*/**/*") if p.is_file()}
    more = [a.replace("n_trials=3", "n_trials=4") for a in r.args[3:]]
    again = mlptrain(*more, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (again.stdout + again.stderr).count("finished before: skipped") == 3
    assert {p: p.stat().st_mtime_ns for p in done} == done and len(job_metrics(d)) == 4


def test_optuna_direction_must_match_the_trainer_mode(tmp_path):
    pytest.importorskip("optuna")
    r = mlptrain("-m", "hparams_search=optuna", "hydra.sweeper.direction=maximize", *TINY, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(
        "mlptrain: error: hydra.sweeper.direction: maximize does not match the objective "
        "trainer.monitor=loss (mode min); valid: minimize"
    )
    assert not (tmp_path / "outputs").exists()  # refused before any trial


@pytest.mark.parametrize("rate", ["1.0", "0.0"])  # every trial failed / the study stopped at the first failure
def test_optuna_study_of_failed_trials_ends_in_one_line_listing_each_failure_once(tmp_path, rate):
    pytest.importorskip("optuna")
    d = tmp_path / "sweep"
    r = mlptrain(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.max_failure_rate={rate}",
        f"hydra.sweep.dir={d}",
        "dataset=csv",
        f"dataset.path={tmp_path}/missing.csv",
        "dataset.target=y",
        cwd=tmp_path,
    )
    n = 2 if rate == "1.0" else 1
    why = f"dataset.path: file not found: {tmp_path}/missing.csv"
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines()[-1] == f"mlptrain: error: {n} job(s) failed: " + "; ".join(
        f"{i}: {why}" for i in range(n)
    )
    assert [m["error"] for m in job_metrics(d)] == [why] * n  # not overwritten as "TrialFailed: ..."
    md = (d / "summary.md").read_text()
    assert f"{n} job(s): {n} failed" in md and "TrialFailed" not in md and "| objective (best) |" in md

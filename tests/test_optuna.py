"""mlptrain's own Optuna sweeper (hparams_search=optuna, current Optuna's ask/tell API): a sqlite study killed
inside a trial continues to the uninterrupted study's result; pruning stops poor trials early (recorded as
pruned, not failed) and finds the same best trial with fewer steps; bad settings are refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import mlptrain, untimed
from mlptrain import checkpoint

optuna = pytest.importorskip("optuna")

# A search over lr, weight decay and dropout (the RNG matters) on 140 training rows: 14 steps an epoch,
# last.pt every 5 steps; the other searched keys of the preset are fixed here.
STUDY = [
    "-m",
    "hparams_search=optuna",
    "dataset.n_samples=200",
    "model.hidden=[8]",
    "model.activation=tanh",
    "trainer.batch_size=10",
    "trainer.epochs=2",
    "trainer.checkpoint_every_n_steps=5",
    "trainer.progress=none",
    "trainer.num_threads=1",
    "trainer.loggers=[]",
    "hydra.sweeper.n_trials=3",
]


def jobs(sweep_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(sweep_dir.iterdir()) if (p / ".hydra").is_dir()}


def files_of(job: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a job folder: (bytes, mtime_ns)."""
    return {str(f.relative_to(job)): (f.read_bytes(), f.stat().st_mtime_ns) for f in job.rglob("*") if f.is_file()}


def trials(db: Path) -> list:
    study = optuna.load_study(study_name="mlptrain", storage=f"sqlite:///{db}")
    return study.get_trials(deepcopy=False)


def started(*args: str, cwd: Path) -> subprocess.Popen:
    """``mlptrain args`` running beside the test (the other core), its output in a file nobody reads until
    :func:`finished` (a pipe could fill and stop it)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    log = cwd / f"{len(list(cwd.glob('*.log')))}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlptrain", *args], cwd=cwd, env=env, stdout=out, stderr=out)
    proc.log = log
    return proc


def finished(proc: subprocess.Popen) -> str:
    """Its output, once it has ended well."""
    assert proc.wait(timeout=240) == 0, proc.log.read_text()[-3000:]
    return proc.log.read_text()


def killed_at(phase: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``mlptrain args`` in its own process group, SIGKILLed whole when the run reaches ``phase``
    (mlptrain.signals.pause: the first time in the process)."""
    marker = cwd / f"{phase}.reached"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLPTRAIN_TEST_PAUSE": f"{phase}:{marker}"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlptrain", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240  # a bound for a loaded machine, never the expected path
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the phase was never reached"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_sqlite_study_killed_inside_a_trial_continues_to_the_uninterrupted_result(tmp_path):
    ref = started(*STUDY, "hydra.sweeper.storage=sqlite:///ref.db", "hydra.sweep.dir=ref", cwd=tmp_path)  # meanwhile

    study = [*STUDY, "hydra.sweeper.storage=sqlite:///study.db", "hydra.sweep.dir=sweep"]
    first = [a.replace("n_trials=3", "n_trials=1") for a in study]  # trial 0 finishes
    r = mlptrain(*first, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sweep = tmp_path / "sweep"
    (done,) = jobs(sweep).values()
    before = files_of(done)
    # The same study with 3 trials, killed (the whole process group) in trial 1's first validation.
    k = killed_at("validation", *study, cwd=tmp_path)
    assert k.returncode == -signal.SIGKILL, k.stderr
    assert [t.state.name for t in trials(tmp_path / "study.db")] == ["COMPLETE", "RUNNING"]
    stopped = [j for j in jobs(sweep).values() if j != done]
    assert len(stopped) == 1 and (stopped[0] / "last.pt").is_file()  # its step-10 checkpoint

    r = mlptrain(*study, cwd=tmp_path)  # the same command again
    assert r.returncode == 0, r.stderr
    finished(ref)
    assert "running it again" in r.stdout + r.stderr
    got, want = trials(tmp_path / "study.db"), trials(tmp_path / "ref.db")
    assert [t.state.name for t in got] == ["COMPLETE"] * 3  # the killed trial resumed, not re-asked
    assert [t.params for t in got] == [t.params for t in want]
    assert [t.value for t in got] == [t.value for t in want]
    assert [t.intermediate_values for t in got] == [t.intermediate_values for t in want]
    assert sorted(jobs(sweep)) == sorted(jobs(tmp_path / "ref"))
    for name, ref_job in jobs(tmp_path / "ref").items():
        job = jobs(sweep)[name]
        a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref_job, job))
        a.pop("runtime"), b.pop("runtime")
        assert untimed(a) == untimed(b), name
        for ckpt in ("last.pt", "best.pt"):
            wa, wb = (checkpoint.load(d / ckpt)["model"] for d in (ref_job, job))
            assert all((wa[key] == wb[key]).all() for key in wa), f"{name}/{ckpt}"
    assert files_of(done) == before  # the finished trial's folder: not a byte, not a timestamp rewritten
    job_log = (stopped[0] / "mlptrain.log").read_text()
    assert "resuming from" in job_log and "resumed from" in job_log  # resumed, not restarted
    rows = (sweep / "summary.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3 and all(",completed," in row for row in rows[1:])

    # Another search for the same study: refused in one line naming the difference, nothing touched.
    now = {name: files_of(job) for name, job in jobs(sweep).items()}
    elsewhere = [a.replace("sweep.dir=sweep", "sweep.dir=other") for a in study]
    other = mlptrain(*elsewhere, "hydra.sweeper.params.model.dropout=interval(0.0, 0.5)", cwd=tmp_path)
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1, other.stderr
    assert other.stderr.startswith("mlptrain: error: hydra.sweeper.study_name: the study 'mlptrain' in "), other.stderr
    assert "holds another search (it was run with model.dropout=interval(0.0, 0.3) " in other.stderr, other.stderr
    assert "this command has model.dropout=interval(0.0, 0.5)" in other.stderr, other.stderr
    # The same search in another folder (e.g. a new timestamped one): refused, naming the study's folder.
    moved = mlptrain(*elsewhere, cwd=tmp_path)
    assert moved.returncode == 2 and len(moved.stderr.strip().splitlines()) == 1, moved.stderr
    assert f"runs in {sweep}; continue it there (hydra.sweep.dir={sweep})" in moved.stderr, moved.stderr
    assert not (tmp_path / "other").exists()  # nothing left behind
    assert {name: files_of(job) for name, job in jobs(sweep).items()} == now


# Six trials of six epochs on moons; a random sampler, so both searches ask the same trials.
SEARCH = [
    "-m",
    "hparams_search=optuna",
    "dataset=moons",
    "dataset.n_samples=200",
    "model.hidden=[8]",
    "model.activation=tanh",
    "model.dropout=0.0",
    "optim.weight_decay=0.0",
    "trainer.batch_size=35",
    "trainer.epochs=6",
    "trainer.progress=none",
    "trainer.num_threads=1",
    "trainer.checkpoint=false",
    "trainer.loggers=[]",
    "hydra.sweeper.n_trials=6",
    "hydra.sweeper.sampler.name=random",
    "optim.lr=tag(log, interval(1e-4, 0.3))",
]


def test_a_pruned_search_takes_fewer_steps_and_finds_the_same_best_trial(tmp_path):
    plain = started(*SEARCH, "hydra.sweep.dir=plain", cwd=tmp_path)  # both at once
    pruned = started(
        *SEARCH,
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.pruner.n_warmup_steps=1",
        "hydra.sweeper.storage=sqlite:///pruned.db",
        "hydra.sweep.dir=pruned",
        cwd=tmp_path,
    )
    finished(plain)
    pruned_log = finished(pruned)  # exit 0: pruned trials are no failures
    runs = {d: [json.loads((j / "metrics.json").read_text()) for j in jobs(tmp_path / d).values()] for d in SWEEPS}
    steps = {d: sum(m["steps"] for m in ms) for d, ms in runs.items()}
    assert steps["pruned"] < steps["plain"], steps
    best = {d: yaml.safe_load((tmp_path / d / "optimization_results.yaml").read_text()) for d in SWEEPS}
    assert best["pruned"]["best_job"] == best["plain"]["best_job"]
    assert best["pruned"]["best_params"] == best["plain"]["best_params"]
    assert best["pruned"]["best_value"] == best["plain"]["best_value"]

    # Pruned trials: so in metrics.json, the summary and the study, never failed.
    statuses = [m["status"] for m in runs["pruned"]]
    n = statuses.count("pruned")
    assert n > 0 and set(statuses) == {"completed", "pruned"}, statuses
    assert all(m["epochs"] < 6 for m in runs["pruned"] if m["status"] == "pruned")
    states = [t.state.name for t in trials(tmp_path / "pruned.db")]
    assert states.count("PRUNED") == n and "FAIL" not in states
    md = (tmp_path / "pruned" / "summary.md").read_text()
    assert f"6 job(s): {6 - n} completed, {n} pruned" in md or f"{n} pruned, " in md, md
    rows = (tmp_path / "pruned" / "summary.csv").read_text().splitlines()
    assert sum(",pruned," in row for row in rows) == n
    assert rows[1].split(",")[1] == str(best["pruned"]["best_job"])  # ranked first: pruned ones after the complete
    assert "failed" not in pruned_log


SWEEPS = ("plain", "pruned")


@pytest.mark.parametrize(
    "overrides, says",
    [
        (
            ["hydra.sweeper.foo=1"],
            "hydra.sweeper.foo: unknown key of the Optuna sweeper; valid keys in hydra.sweeper: ",
        ),
        (
            ["hydra.sweeper.pruner.fo=1"],
            "hydra.sweeper.pruner.fo: unknown key; valid keys in hydra.sweeper.pruner: name, ",
        ),
        (["hydra.sweeper.pruner=bogus"], "hydra.sweeper.pruner.name: unknown pruner 'bogus'; valid: none, median, "),
        (["hydra.sweeper.pruner.min_resource=2"], "hydra.sweeper.pruner.min_resource: not an option of the none"),
        (
            ["hydra.sweeper.sampler.name=anneal"],
            "hydra.sweeper.sampler.name: unknown sampler 'anneal'; valid: tpe, random, gp, cmaes, qmc, nsgaii",
        ),
        (
            ["hydra.sweeper.sampler=qmc", "hydra.sweeper.sampler.qmc_type=lhs"],
            "hydra.sweeper.sampler.qmc_type: 'lhs'; ",
        ),
        (["hydra.sweeper.sampler=nsgaii", "hydra.sweeper.sampler.multivariate=true"], "hydra.sweeper.sampler.multiv"),
        (["hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs: 0; valid: an integer >= 1"),
        (["hydra.sweeper.sampler.seed=x"], "hydra.sweeper.sampler.seed: 'x'; valid: an integer"),
        (
            ["hydra.sweeper.pruner=median", "hydra.sweeper.pruner.n_warmup_steps=-2"],  # the short name, then options
            "hydra.sweeper.pruner.n_warmup_steps: -2; valid: an integer >= 0",
        ),
        (["hydra.sweeper.storage=optuna.db"], "hydra.sweeper.storage: 'optuna.db'; valid: null (in memory) or a "),
        (["hydra.sweeper.params.optim.lr=interval(0.1, 0.01)"], "hydra.sweeper.params.optim.lr: interval(0.1, 0.01): "),
        (["hydra.sweeper.params.optim.lr=oops(1)"], "hydra.sweeper.params.optim.lr: "),
        (["hydra/launcher=parallel", "hydra.sweeper.pruner=median"], "hydra.sweeper.pruner: median prunes trials run "),
    ],
)
def test_bad_sweeper_settings_are_refused_in_one_line_before_any_trial(overrides, says):
    from mlptrain.compose import precompose
    from mlptrain.errors import ConfigError
    from mlptrain.study_config import sweeper_argv

    if "hydra/launcher=parallel" in overrides:
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    with pytest.raises(ConfigError) as e:
        precompose(sweeper_argv(["-m", "hparams_search=optuna", *overrides]))  # as mlptrain does, before Hydra
    assert str(e.value).startswith(says) and "\n" not in str(e.value), str(e.value)


def test_the_command_refuses_a_bad_setting_with_exit_2_and_writes_nothing(tmp_path):
    r = mlptrain("-m", "hparams_search=optuna", "hydra.sweeper.pruner=bogus", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("mlptrain: error: hydra.sweeper.pruner.name: unknown pruner 'bogus'"), r.stderr
    assert not (tmp_path / "outputs").exists()

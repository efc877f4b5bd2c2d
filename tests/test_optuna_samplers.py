"""Optuna's samplers beyond TPE: each runs a study to its end; a sampler whose package is missing is refused in
one line before any trial."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import mlptrain

optuna = pytest.importorskip("optuna")

STUDY = [
    "-m",
    "hparams_search=optuna",
    "dataset.n_samples=120",
    "model.hidden=[8]",
    "trainer.epochs=1",
    "trainer.progress=none",
    "trainer.num_threads=1",
    "trainer.loggers=[]",
    "hydra.sweeper.n_trials=3",
]


@pytest.mark.parametrize(
    "sampler",
    [
        ["hydra.sweeper.sampler=nsgaii", "hydra.sweeper.sampler.population_size=2"],
        ["hydra.sweeper.sampler=qmc", "hydra.sweeper.sampler.qmc_type=halton", "hydra.sweeper.sampler.scramble=true"],
        ["hydra.sweeper.sampler=gp", "hydra.sweeper.sampler.n_startup_trials=2"],
        ["hydra.sweeper.sampler=cmaes", "hydra.sweeper.sampler.n_startup_trials=1"],
    ],
    ids=["nsgaii", "qmc", "gp", "cmaes"],
)
def test_a_study_runs_to_its_end_with_each_sampler(tmp_path, sampler):
    name = sampler[0].split("=")[1]
    needs = {"qmc": "scipy", "gp": "scipy", "cmaes": "cmaes"}.get(name)
    if needs and importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} is not installed")
    r = mlptrain(*STUDY, *sampler, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = sorted(p.parent for p in (tmp_path / "s").glob("*/metrics.json"))
    assert [json.loads((j / "metrics.json").read_text())["status"] for j in jobs] == ["completed"] * 3
    asked = {(j / ".hydra" / "overrides.yaml").read_text() for j in jobs}
    assert len(asked) == 3  # three different trials


def test_a_sampler_whose_package_is_missing_is_refused_in_one_line(monkeypatch):
    from mlptrain.compose import precompose
    from mlptrain.errors import ConfigError
    from mlptrain.study_config import sweeper_argv

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cmaes" else real(name, *a))
    with pytest.raises(ConfigError) as e:
        precompose(sweeper_argv([*STUDY, "hydra.sweeper.sampler=cmaes"]))
    assert str(e.value) == "hydra.sweeper.sampler.name: the cmaes sampler needs cmaes: pip install cmaes"

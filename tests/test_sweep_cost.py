"""What a sweep job costs beyond its training: the shortcuts taken must give what the long way gives."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import TINY, mlptrain, python
from mlptrain import compose, config
from mlptrain.errors import ConfigError


def test_hydra_files_are_what_hydra_writes(tmp_path):
    """``.hydra/*.yaml`` through libyaml's emitter hold exactly the YAML OmegaConf.to_yaml gives."""
    r = mlptrain("-m", *TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = sorted(p for p in (tmp_path / "s").iterdir() if (p / ".hydra").is_dir())
    assert len(jobs) == 2
    for job in jobs:
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            text = (job / ".hydra" / name).read_text()
            cfg = OmegaConf.load(job / ".hydra" / name)
            assert yaml.safe_load(text) == yaml.safe_load(OmegaConf.to_yaml(cfg))
        assert OmegaConf.load(job / ".hydra" / "config.yaml").seed == int(job.name.split("=")[-1])
        assert OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.help.app_name == "mlptrain"


@pytest.mark.skipif(compose.yaml_dumper() is None, reason="PyYAML without libyaml")
def test_fast_yaml_keeps_omegaconf_quoting(make_cfg):
    cfg = OmegaConf.create({"a": "1", "b": "true", "c": "1e-3", "d": "text", "e": [1, "2"], "f": "${a}", "g": None})
    assert compose.to_yaml(cfg) == OmegaConf.to_yaml(cfg)
    full = make_cfg("seed=3")
    assert yaml.safe_load(compose.to_yaml(full)) == yaml.safe_load(OmegaConf.to_yaml(full))


def test_typed_groups_are_cached_per_value(make_cfg):
    """Two configs that differ in one group share the typed objects of the others (copies: a change to one
    run's objects does not reach another's), and a bad value is refused whatever was cached before."""
    a = config.parse(make_cfg(*TINY, "seed=1"))
    b = config.parse(make_cfg(*TINY, "seed=2"))
    assert (a.seed, b.seed) == (1, 2)
    assert a.model == b.model and a.model is not b.model
    a.model.hidden.append(99)
    assert config.parse(make_cfg(*TINY, "seed=1")).model.hidden == [8]
    with pytest.raises(ConfigError, match="trainer.epochs"):
        config.parse(make_cfg(*TINY, "trainer.epochs=-1"))
    assert config.parse(make_cfg(*TINY, "trainer.epochs=3")).trainer.epochs == 3


def test_the_command_freezes_its_imports_for_the_collector_and_a_python_caller_is_left_alone(
    tmp_path, train, monkeypatch
):
    import gc

    from mlptrain.cli import train as cli

    monkeypatch.setattr(cli, "_in_command", False)  # (an in-process main() of another test sets it)
    before = gc.get_freeze_count()
    train()  # the Python entry point: the caller's process is not the command's to tune
    assert cli._in_command is False and gc.get_freeze_count() == before
    code = (
        "import gc, sys; from mlptrain.cli.train import main; "
        f"sys.argv = ['mlptrain', *{TINY!r}, 'hydra.run.dir={tmp_path / 'r'}']\n"
        "try:\n    main()\nfinally:\n    print('frozen', gc.get_freeze_count())"
    )
    r = python("-c", code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    frozen = int(r.stdout.split("frozen")[-1])
    assert frozen > 100_000  # torch, Hydra and the rest: kept out of every full collection

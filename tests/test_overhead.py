"""Per-job costs of an in-process sweep. The jobs parse each config once (precompose did it): the memo in
mlptrain.config hands out independent copies, so a job that changes its own leaves the next unchanged."""

import pytest

from mlptrain import config
from mlptrain.errors import ConfigError


def test_parse_reuses_a_config_already_parsed(make_cfg):
    cfg = make_cfg("seed=3", "trainer.epochs=2")
    config._parsed.clear()
    first = config.parse(cfg)
    assert len(config._parsed) == 1
    again = config.parse(make_cfg("seed=3", "trainer.epochs=2"))  # composed again: same values
    assert len(config._parsed) == 1 and again == first
    config.parse(make_cfg("seed=4", "trainer.epochs=2"))
    assert len(config._parsed) == 2


def test_a_parsed_config_is_the_callers_own(make_cfg):
    cfg = make_cfg("seed=3")
    run = config.parse(cfg)
    run.trainer.num_threads = 7  # what a DDP rank does with its copy
    run.raw["trainer"]["num_threads"] = 7
    fresh = config.parse(cfg)
    assert fresh.trainer.num_threads != 7 and fresh.raw["trainer"]["num_threads"] != 7


def test_a_bad_config_is_refused_every_time(make_cfg):
    cfg = make_cfg("trainer.epochs=-1")
    for _ in range(2):
        with pytest.raises(ConfigError, match="trainer.epochs"):
            config.parse(cfg)


def test_the_summary_reads_a_rewritten_overrides_file_again(tmp_path):
    from mlptrain import sweep

    job = tmp_path / "0_seed=0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    assert sweep.read_job(job)["params"] == {"seed": "0"}
    assert sweep.read_job(job)["params"] == {"seed": "0"}  # from the memo
    (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n- optim.lr=0.1\n")
    assert sweep.read_job(job)["params"] == {"seed": "1", "optim.lr": "0.1"}

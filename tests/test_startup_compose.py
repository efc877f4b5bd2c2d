"""One Hydra composition per run: later compositions with the same overrides reuse the first one's work."""

from __future__ import annotations

from dataclasses import dataclass

from hydra import compose, initialize_config_module
from hydra._internal import config_loader_impl
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from mlptrain import compose as mlp_compose


def _compose(overrides):
    with initialize_config_module(config_module=mlp_compose.CONFIG_PACKAGE, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_a_second_composition_reuses_the_first_and_sees_a_changed_config_store(monkeypatch):
    # the patch is undone after the test, like every other Hydra state this process keeps
    monkeypatch.setattr(config_loader_impl, "create_defaults_list", config_loader_impl.create_defaults_list)
    monkeypatch.setattr(
        ConfigLoaderImpl, "_compose_config_from_defaults_list", ConfigLoaderImpl._compose_config_from_defaults_list
    )
    monkeypatch.setattr(mlp_compose, "_reused", {})
    overrides = ["dataset=moons", "trainer.epochs=3"]
    plain = _compose(overrides)
    mlp_compose.reuse_compositions()
    first, second = _compose(overrides), _compose(overrides)
    ((_, kept, _),) = mlp_compose._reused.values()  # one entry, its merged config kept, served both
    assert kept is not None
    second.trainer.epochs = 5  # each caller gets its own copy
    third = _compose([*overrides, "hydra.mode=RUN"])  # what Hydra appends for the run: same files, one more value
    for cfg in (first, third):
        assert OmegaConf.to_container(cfg.trainer) == OmegaConf.to_container(plain.trainer)
        assert cfg.dataset == plain.dataset and cfg.hydra.sweeper == plain.hydra.sweeper
    assert str(third.hydra.mode) == "RunMode.RUN" and first.hydra.mode is None

    @dataclass
    class OtherSweeper:
        _target_: str = "somewhere.Else"
        max_batch_size: int | None = None
        params: dict | None = None

    store = ConfigStore.instance()
    before = store.repo["hydra"]["sweeper"]["basic.yaml"]
    try:
        store.store(group="hydra/sweeper", name="basic", node=OtherSweeper, provider="test")
        assert _compose(overrides).hydra.sweeper._target_ == "somewhere.Else"  # not the kept composition
    finally:
        store.repo["hydra"]["sweeper"]["basic.yaml"] = before


def test_compositions_that_differ_in_plain_values_share_one_merge(monkeypatch):
    """seed=1 and seed=2 (a sweep's jobs) merge the same files: one kept entry, each with its own values, each
    equal to Hydra's own composition; a group choice or a dict value is part of the key."""
    monkeypatch.setattr(config_loader_impl, "create_defaults_list", config_loader_impl.create_defaults_list)
    monkeypatch.setattr(
        ConfigLoaderImpl, "_compose_config_from_defaults_list", ConfigLoaderImpl._compose_config_from_defaults_list
    )
    monkeypatch.setattr(mlp_compose, "_reused", {})
    variants = [
        ["dataset=moons", "seed=1", "trainer.epochs=3"],
        ["dataset=moons", "seed=2", "model.hidden=[4,4]"],
        ["dataset=moons", "seed=3", "~trainer.early_stopping", "+trainer.extra=1"],
    ]
    hydra_own = [OmegaConf.to_container(_compose(v), resolve=False) for v in variants]
    mlp_compose.reuse_compositions()
    reused = [OmegaConf.to_container(_compose(v), resolve=False) for v in variants]
    assert len(mlp_compose._reused) == 1
    for own, ours in zip(hydra_own, reused):
        for volatile in ("runtime", "job"):  # the cwd, output dir and the like are filled anew
            own["hydra"].pop(volatile), ours["hydra"].pop(volatile)
        assert ours == own
    assert reused[1]["model"]["hidden"] == [4, 4] and reused[0]["seed"] == 1
    assert "early_stopping" not in reused[2]["trainer"] and reused[2]["trainer"]["extra"] == 1
    _compose(["dataset=circles", "seed=1"])  # another group choice: another entry
    assert len(mlp_compose._reused) == 2


def test_a_group_left_missing_for_the_sweep_is_composed_leniently_and_not_kept(monkeypatch):
    """A multirun's master config may leave a '???' group to its jobs (grp=a,b): the strict composition
    fails, the lenient one serves the master and is not kept for the jobs, whose own choice composes."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException
    from hydra.types import RunMode

    monkeypatch.setattr(config_loader_impl, "create_defaults_list", config_loader_impl.create_defaults_list)
    monkeypatch.setattr(
        ConfigLoaderImpl, "_compose_config_from_defaults_list", ConfigLoaderImpl._compose_config_from_defaults_list
    )
    monkeypatch.setattr(mlp_compose, "_reused", {})
    store = ConfigStore.instance()
    monkeypatch.setattr(store, "repo", {**store.repo})  # the entries below go with the test
    store.store(name="test_missing_group", node={"defaults": [{"test_grp": "???"}, "_self_"], "x": 1})
    store.store(group="test_grp", name="a", node={"y": 2})
    mlp_compose.reuse_compositions()
    with initialize_config_module(config_module=mlp_compose.CONFIG_PACKAGE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("test_missing_group", ["x=3", "test_grp=a,b"], RunMode.MULTIRUN)
        assert master.x == 3 and "test_grp" not in master
        assert not mlp_compose._reused  # lenient: not kept
        job = loader.load_configuration("test_missing_group", ["x=4", "test_grp=a"], RunMode.RUN)
        assert job.x == 4 and job.test_grp.y == 2
        try:
            loader.load_configuration("test_missing_group", ["x=5"], RunMode.RUN)
            raise AssertionError("a strict composition with the group missing must fail")
        except ConfigCompositionException as e:
            assert "You must specify 'test_grp'" in str(e)

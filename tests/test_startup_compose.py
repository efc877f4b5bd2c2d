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

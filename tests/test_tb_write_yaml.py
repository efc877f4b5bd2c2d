"""The config text of a run's TensorBoard header: libyaml's dumper writes what PyYAML's own writes."""

from __future__ import annotations

import yaml
from omegaconf import OmegaConf

from mlptrain.loggers import config_yaml


def test_the_config_text_is_pyyamls(make_cfg):
    assert yaml.__with_libyaml__  # (the wheel's; else config_yaml falls back to the pure-Python dumper)
    for overrides in [(), ("dataset=mnist", "optim=sgd"), ("dataset=csv", "dataset.path=/x/y z.csv")]:
        config = OmegaConf.to_container(make_cfg(*overrides), resolve=False)
        config["extra"] = {
            "long": "word " * 60,
            "text": "héllo ✓\nline two",
            "none": None,
            "nested": [[1, 2], {"a": 1}],
        }
        config["floats"] = [1e-3, 1.5e10, float("inf"), float("nan"), True, "yes", "0123"]
        assert config_yaml(config) == config_yaml(config, yaml.SafeDumper)

"""Loggers, chosen with ``trainer.loggers=[tensorboard,csv]`` (docs/loggers.md).

``registry.LOGGERS`` maps each name to its class; :func:`build_loggers` imports a class on first use
(TensorBoard's writer comes in only when a run logs to it).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from mlptrain.errors import ConfigError
from mlptrain.loggers.base import Fanout, Logger, NullLogger, ResumePoint, write_failure
from mlptrain.loggers.hparams import resolved
from mlptrain.registry import LOGGERS

__all__ = ["LOGGERS", "Fanout", "Logger", "NullLogger", "ResumePoint", "build_loggers", "logger_class"]


def logger_class(name: str) -> type:
    """The class ``LOGGERS[name]`` names, imported now."""
    if name not in LOGGERS:
        raise ConfigError(f"trainer.loggers: unknown value {name!r}; valid choices: {', '.join(LOGGERS)}")
    module, _, attr = LOGGERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def config_yaml(config: dict, base: type | None = None) -> str:
    """The resolved config as YAML, in the config's own key order (lists of values on one line).
    ``base``: the PyYAML dumper to build on; libyaml's when PyYAML has it (the same text, 5x faster)."""
    import yaml

    class Dumper(base or getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
        pass

    def short_list(dumper, data):
        flow = all(not isinstance(v, (dict, list)) for v in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    Dumper.add_representer(list, short_list)
    return yaml.dump(config, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=120)


def build_loggers(
    names: list[str],
    out_dir: Path,
    resume: ResumePoint | None = None,
    *,
    config: dict | None = None,
    hparams: dict | None = None,
    metric_tags: list[str] = (),
) -> Fanout:
    """Open the loggers ``names`` in the run dir ``out_dir``, each cut back to ``resume`` (the resume
    contract, :mod:`mlptrain.loggers.base`).  A logger that starts a new record gets the run's header:
    the resolved ``config`` as text and the HParams; one that continues a stopped run's has them."""
    out_dir = Path(out_dir)
    opened: list[Logger] = []
    try:
        for name in names:
            logger = logger_class(name).open(out_dir, resume)
            opened.append(logger)
            if not logger.continued:
                if config is not None:
                    logger.text("config", "```yaml\n" + config_yaml(config) + "```")
                logger.hparams_start(resolved(hparams or {}, config or {}), list(metric_tags))
    except BaseException as e:
        try:
            Fanout(opened).close()
        except Exception:  # noqa: BLE001 - the error that stopped the opening is the one to report
            pass
        if isinstance(e, OSError):  # a resume cutting its logs back on a full disk: one line
            raise write_failure(logger_class(name).__name__, e, out_dir) from None
        raise
    return Fanout(opened, out_dir)

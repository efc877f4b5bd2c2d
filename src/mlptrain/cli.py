"""The ``mlptrain`` command: compose with Hydra, validate, build, fit, test, return the objective.

Only Hydra and the torch-free config schema are imported at module level, so
``mlptrain --help`` and a bad override answer quickly; torch comes in with the
first real run.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import resources
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mlptrain.config import ConfigError

log = logging.getLogger("mlptrain")

CONFIG_PACKAGE = "mlptrain.configs"
# Exit codes: 2 = bad input (config, data, checkpoint), 1 = training failed (divergence, failed jobs).
EXIT_BAD_INPUT, EXIT_FAILED = 2, 1

_failed_jobs: list[str] = []


# ----------------------------------------------------------------------------- output dirs
_reserved: dict[str, str] = {}


def unique_dir(path: str) -> str:
    """Reserve ``path`` (or ``path-1``, ``path-2`` ...) by creating it, so two runs started in
    the same second never share a folder.  Memoised: Hydra resolves the run dir more than once."""
    if path not in _reserved:
        candidate, n = path, 0
        while True:
            try:
                os.makedirs(os.path.dirname(candidate) or ".", exist_ok=True)
                os.mkdir(candidate)
                break
            except FileExistsError:
                n += 1
                candidate = f"{path}-{n}"
        _reserved[path] = candidate
    return _reserved[path]


if not OmegaConf.has_resolver("mlptrain.unique_dir"):
    OmegaConf.register_new_resolver("mlptrain.unique_dir", unique_dir, use_cache=True)


# ----------------------------------------------------------------------------- group checks
def config_groups() -> dict[str, list[str]]:
    """Each config group (a folder under configs/) and its options (the YAML files in it)."""
    root = resources.files(CONFIG_PACKAGE)
    groups = {}
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith(("_", ".")):
            groups[d.name] = sorted(f.name[:-5] for f in d.iterdir() if f.name.endswith(".yaml"))
    return groups


def check_group_overrides(args: list[str]) -> None:
    """Fail fast, in one line, on ``group=option`` overrides naming an option that does not exist."""
    groups = None
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra") or "." in key or key.startswith("override "):
            continue
        groups = groups if groups is not None else config_groups()
        if key not in groups:
            continue
        for option in _sweep_values(value):
            if option not in groups[key] and option != "null":
                raise ConfigError(f"{key}={option}: unknown option for group '{key}'; valid choices: "
                                  f"{', '.join(groups[key])}")


def _sweep_values(value: str) -> list[str]:
    """Options of a plain ``a,b,c`` sweep; sweep functions (choice(...), range) are left to Hydra."""
    if "(" in value or "[" in value or "$" in value:
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


# ----------------------------------------------------------------------------- the task
def hparams_of(raw: dict, choices: dict, overrides: list[str]) -> dict:
    """HParams for TensorBoard: the same keys for every job (group choices and the main knobs),
    plus every key overridden on the command line (identical across the jobs of one sweep)."""
    flat = _flatten(raw)
    keys = ["seed", "optim.lr", "optim.weight_decay", "trainer.batch_size", "trainer.epochs", "model.hidden",
            "model.activation", "model.dropout", "model.norm"]
    out = {g: str(choices.get(g)) for g in ("dataset", "model", "loss", "optim", "scheduler")}
    for o in overrides:
        k = o.split("=", 1)[0].lstrip("+~")
        if k in flat and k not in keys:
            keys.append(k)
    for k in keys:
        v = flat.get(k, "")
        out[k] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run(cfg: DictConfig, out_dir: Path, choices: dict | None = None, overrides: list[str] | None = None) -> dict:
    """Validate and train one job; returns the metrics dict (also written to ``out_dir/metrics.json``)."""
    from mlptrain.config import parse

    run_cfg = parse(cfg)
    from mlptrain.trainer import Trainer  # torch is imported here, after validation

    out_dir.mkdir(parents=True, exist_ok=True)
    choices = choices or {}
    hp = hparams_of(run_cfg.raw, choices, overrides or [])
    return Trainer(run_cfg, out_dir, hparams=hp).fit()


def _user_errors():
    from mlptrain.checkpoint import CheckpointError
    from mlptrain.data import DataError
    from mlptrain.trainer import TrainingError

    return (ConfigError, DataError, CheckpointError), TrainingError


@hydra.main(version_base="1.3", config_path="pkg://" + CONFIG_PACKAGE, config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        bad_input, training_error = _user_errors()
        try:
            result = run(cfg, out_dir, dict(hc.runtime.choices), list(hc.overrides.task))
        except bad_input as e:
            code, msg = EXIT_BAD_INPUT, str(e)
        except training_error as e:
            code, msg = EXIT_FAILED, str(e)
        else:
            objective = result["objective"]
            return float("nan") if objective is None else float(objective)
    except KeyboardInterrupt:
        code, msg = 130, "interrupted"
    _record_failure(out_dir, msg)
    if multirun:  # keep the sweep going; the summary lists the failure and main() exits non-zero
        _failed_jobs.append(f"{hc.job.num}: {msg}")
        log.error("job %s failed: %s", hc.job.num, msg)
        return float("nan")
    print(f"mlptrain: error: {msg}", file=sys.stderr)
    sys.exit(code)


def _record_failure(out_dir: Path, msg: str) -> None:
    """Leave the error beside the run so sweeps and users can see why it stopped."""
    import json

    from mlptrain.checkpoint import atomic_write

    try:
        metrics = out_dir / "metrics.json"
        data = json.loads(metrics.read_text()) if metrics.is_file() else {}
        data.update({"status": data.get("status") if data.get("status") == "diverged" else "failed", "error": msg})
        atomic_write(metrics, lambda f: f.write(json.dumps(data, indent=2).encode()))
    except OSError:
        pass


def compose_error(e: Exception) -> ConfigError:
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return ConfigError(text.split(" full_key:")[0])


def precompose(argv: list[str]) -> None:
    """Compose the config once before Hydra does, so that any compose-time problem (a key that
    does not exist, a malformed override) is reported in one line instead of Hydra's multi-line
    report.  A sweep is composed once per distinct structure (every combination of its swept
    config-group choices and Hydra settings, the first value of every other swept key): a
    plain value cannot make composition fail, and parse() checks values when each job starts.
    This is all the checking a sweep gets before its first job (see hydra_plugins.mlptrain_sweeper)."""
    import itertools

    from hydra import compose, initialize_config_module
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = get_args_parser().parse_args(argv)
    if (args.help or args.hydra_help or args.info or args.cfg or args.shell_completion or args.config_dir
            or args.config_path or args.config_name or args.experimental_rerun):
        return
    check_group_overrides(args.overrides)
    groups = config_groups()
    try:
        slots = []  # per override, the alternatives to compose with
        for o in OverridesParser.create().parse_overrides(args.overrides):
            if not o.is_sweep_override():
                slots.append([o.input_line])
                continue
            values = list(o.sweep_string_iterator()) if o.is_discrete_sweep() else []
            if values:
                key = o.get_key_element()
                name = key.lstrip("+~").split("@", 1)[0]
                structural = name in groups or name.startswith("hydra")
                slots.append([f"{key}={v}" for v in (values if structural else values[:1])])
        with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
            cfgs = [compose(config_name="config", overrides=list(c)) for c in itertools.product(*slots)]
    except Exception as e:  # Hydra's own errors: keep their words, on one line
        raise compose_error(e) from None
    from mlptrain.config import parse

    for cfg in cfgs:
        parse(cfg)  # typed schema and ranges (torch-free): a sweep fails before its first job


def main() -> None:
    """Console entry point."""
    try:
        if {"--help", "-h"} & set(sys.argv[1:]):
            from mlptrain.help import app_help

            if app_help(sys.argv[1:]):  # Hydra's own --help takes over a second
                return
        precompose(sys.argv[1:])
    except ConfigError as e:
        print(f"mlptrain: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    from hydra_plugins.mlptrain_sweeper import register

    register()  # hydra/sweeper=mlptrain (config.yaml)
    _hydra_main()
    if _failed_jobs:
        print(f"mlptrain: error: {len(_failed_jobs)} job(s) failed: " + "; ".join(_failed_jobs), file=sys.stderr)
        sys.exit(EXIT_FAILED)



"""Every Hydra composition mlptrain does, and every use of Hydra's private API, in one place.

Hydra composes the config of each run; this module composes it ahead of Hydra where mlptrain
needs an answer in one line: a bad override or group option before a sweep starts
(:func:`precompose`), ``--help`` (one compose, no group scan), ``mlptrain-eval`` overrides on a
checkpoint's config (:func:`with_overrides`), and the resume command a stopped run prints.
Torch-free: the CLI imports it before anything heavy.
"""

from __future__ import annotations

import itertools
import os
import shlex
import sys
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.hydra import Hydra
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from mlptrain import naming
from mlptrain.config import parse
from mlptrain.errors import EXIT_BAD_INPUT, ConfigError, printable
from mlptrain.parallel.env import from_rank0
from mlptrain.registry import check_direction, objective_mode, sweep_direction

CONFIG_PACKAGE = "mlptrain.configs"
RESUME_KEY = "trainer.resume"


def parse_args(argv: list[str]):
    """Hydra's own command-line parser (flags such as -m, --cfg; the rest are overrides)."""
    return get_args_parser().parse_args(argv)


def args_help() -> str:
    """Hydra's help text for its flags, as ``--help`` shows it."""
    return Hydra.format_args_help(get_args_parser())


def compose_config(overrides: list[str], hydra: bool = False) -> DictConfig:
    """The config these overrides compose to (``hydra``: with Hydra's own node), errors as one line."""
    check_group_overrides(overrides)
    try:
        with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
            return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)
    except Exception as e:  # Hydra's compose errors, as one line
        raise compose_error(e) from None


# ----------------------------------------------------------------------------- output dirs
reserved_dirs: dict[str, str] = {}


def unique_dir(path: str) -> str:
    """Reserve ``path`` (or ``path-1``, ``path-2`` ...) by creating it, so two runs started in
    the same second never share a folder.  Memoised: Hydra resolves the run dir more than once.
    Under torchrun only rank 0 reserves one, and every rank gets rank 0's (its clock may differ)."""
    if path not in reserved_dirs:
        reserved_dirs[path] = from_rank0(lambda: _reserve(path))
    return reserved_dirs[path]


def _reserve(path: str) -> str:
    candidate, n = path, 0
    while True:
        try:
            os.makedirs(os.path.dirname(candidate) or ".", exist_ok=True)
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{path}-{n}"
        except OSError as e:  # raised inside Hydra's resolution: leave with one line, not its traceback
            print(f"mlptrain: error: cannot create the run dir {candidate}: {e.strerror or e}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)


def register_resolvers() -> None:
    """The resolvers configs/config.yaml uses (``${mlptrain.unique_dir:...}`` for run dirs)."""
    if not OmegaConf.has_resolver("mlptrain.unique_dir"):
        OmegaConf.register_new_resolver("mlptrain.unique_dir", unique_dir, use_cache=True)
    if not OmegaConf.has_resolver("mlptrain.run_suffix"):  # a single run's dir: <time>_<its overrides or name=>
        OmegaConf.register_new_resolver("mlptrain.run_suffix", naming.run_suffix)


# ----------------------------------------------------------------------------- group checks
def config_groups() -> dict[str, list[str]]:
    """Each config group (a folder under configs/) and its options (the YAML files in it)."""
    root = resources.files(CONFIG_PACKAGE)
    groups = {}
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith(("_", ".")) and d.name != "hydra":  # hydra/: launcher presets
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
                raise ConfigError(
                    f"{key}={printable(option)}: unknown option for group '{key}'; valid choices: "
                    f"{', '.join(groups[key])}"
                )


def check_output_dirs(overrides) -> None:
    """An explicit ``hydra.run.dir``/``hydra.sweep.dir`` that cannot be created fails here, in one line
    (Hydra would create it later and report the failure with a traceback)."""
    for o in overrides:
        if o.key_or_group not in ("hydra.run.dir", "hydra.sweep.dir") or o.is_sweep_override():
            continue
        value = o.value()
        if not isinstance(value, str):
            continue
        # Of an interpolated value only the folders before it are known: resolving it here would
        # run its resolvers (mlptrain.unique_dir would reserve a folder).
        static = value.split("${")[0]
        path = os.path.abspath(static if static == value or static.endswith("/") else os.path.dirname(static))
        while not os.path.lexists(path):
            path = os.path.dirname(path)
        if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
            why = "not writable" if os.path.isdir(path) else "not a directory"
            raise ConfigError(f"{o.key_or_group}: cannot create {value}: {path} is {why}")


def _sweep_values(value: str) -> list[str]:
    """Options of a plain ``a,b,c`` sweep; sweep functions (choice(...), range) are left to Hydra."""
    if "(" in value or "[" in value or "$" in value:
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


# ----------------------------------------------------------------------------- ahead of Hydra
def compose_error(e: Exception) -> ConfigError:
    """Hydra's composition error, in its own words, on one line."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    text = text.split(" full_key:")[0].split(" Config search path:")[0]  # the folders searched: noise here
    return ConfigError(text + _plugin_hint(text))


def precompose(argv: list[str]) -> None:
    """Compose the config once before Hydra does, so that any compose-time problem (a key that
    does not exist, a malformed override) is reported in one line instead of Hydra's multi-line
    report.  A sweep (its command-line sweeps and, for the basic sweeper, ``hydra.sweeper.params``
    as experiment presets set them) is composed once per distinct structure: every combination of
    its swept config-group choices and Hydra settings, the first value of every other swept key (a
    plain value cannot make composition fail).  That is the check Hydra's basic sweeper would
    repeat for every job (see hydra_plugins.mlptrain_sweeper); the first combination is also parsed."""
    args = parse_args(argv)
    if (
        args.help
        or args.hydra_help
        or args.shell_completion
        or args.config_dir
        or args.config_path
        or args.config_name
        or args.experimental_rerun
    ):
        return  # answered without this config, or from another one
    # Options found through hydra.searchpath are not in config_groups(): composing judges them.
    if not any(a.lstrip("+~").startswith("hydra.searchpath=") for a in args.overrides):
        check_group_overrides(args.overrides)
    composed: dict[tuple, DictConfig] = {}

    def compose_once(overrides: list[str]) -> DictConfig:
        if tuple(overrides) not in composed:
            composed[tuple(overrides)] = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        return composed[tuple(overrides)]

    try:
        with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
            # With the config loader, glob() sweeps can list a group's options.
            parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
            parsed = parser.parse_overrides(args.overrides)
            sweep, primary = parsed, None
            if args.multirun:  # the sweeper starts from the config without the swept values
                primary = compose_once([o.input_line for o in parsed if not o.is_sweep_override()])
                sweep = parser.parse_overrides(sweeper_params(primary)) + parsed
                _check_hydra_sweeps(sweep)
            cfgs = [compose_once(c) for c in structures(sweep, primary)]
    except Exception as e:  # Hydra's own errors: keep their words, on one line
        raise compose_error(e) from None
    if args.cfg or args.info:
        return  # Hydra only prints the config: no run dir is made and nothing is trained
    check_output_dirs(parsed)
    cfg = cfgs[0]  # the other structures only had to compose: a value problem fails its own jobs
    with open_dict(cfg):
        sweeper = cfg.pop("hydra").get("sweeper")
    parse(cfg)  # typed schema and ranges (torch-free): a sweep fails before its first job
    check_direction(
        sweep_direction(sweeper), objective_mode(cfg.trainer, cfg.dataset), f"trainer.monitor={cfg.trainer.monitor}"
    )


def sweeper_params(cfg: DictConfig) -> list[str]:
    """``hydra.sweeper.params`` as overrides, as the basic sweeper reads them (other sweepers,
    e.g. Optuna's, give them another meaning)."""
    if cfg.hydra.runtime.choices.get("hydra/sweeper") != "basic":
        return []
    return [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]


def _check_hydra_sweeps(overrides) -> None:
    """Hydra refuses, in several lines and only once the sweep starts, to sweep its own settings."""
    for o in overrides:
        if o.is_sweep_override() and o.is_hydra_override():
            raise ConfigError(
                f"{o.key_or_group}: Hydra's own settings cannot be swept ({printable(o.input_line)}); "
                f"give it one value, and sweep mlptrain's keys and groups"
            )


def names_a_value(key: str, cfg: DictConfig) -> bool:
    """Whether an override of ``key`` sets a value of the composed ``cfg`` rather than choosing a config
    group: a dotted key always does; an undotted one when ``cfg`` has it and it is not a group (a key it
    lacks may name a group that only a search path has)."""
    return "." in key or (key in cfg and key not in cfg.hydra.runtime.choices)


def structures(overrides, primary: DictConfig | None) -> list[list[str]]:
    """The override lists to compose a sweep with: one per combination of its swept group choices
    and Hydra settings.  A later override of a key replaces an earlier one, as in the basic sweeper.
    ``primary``: the sweep's config without its swept values (None: no sweep)."""
    slots: dict[str, list[str]] = {}  # per key, the alternatives to compose with
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            slots[key] = [o.input_line]
            continue
        values = list(o.sweep_string_iterator()) if o.is_discrete_sweep() else []
        if values:
            name = key.lstrip("+~").split("@", 1)[0]
            structural = primary is None or name.startswith("hydra") or not names_a_value(name, primary)
            slots[key] = [f"{key}={v}" for v in (values if structural else values[:1])]
    return [list(c) for c in itertools.product(*slots.values())]


PLUGINS = {"optuna": "optuna", "joblib": "joblib", "submitit": "submitit"}


def _plugin_hint(text: str) -> str:
    """Name the extra to install when a sweeper/launcher config cannot be found."""
    if "Could not find" in text or "Could not load" in text:
        for needle, extra in PLUGINS.items():
            if f"hydra/sweeper/{needle}" in text or f"hydra/launcher/{needle}" in text:
                return f" (install the plugin: pip install 'mlptrain[{extra}]')"
    return ""


# ----------------------------------------------------------------------------- checkpoints' configs
def with_overrides(raw: dict, overrides: list[str]) -> DictConfig:
    """A checkpoint's config with command-line overrides applied, as the training command would."""
    cfg = OmegaConf.create(raw)
    if not overrides:
        return cfg
    check_group_overrides(overrides)
    groups = config_groups()
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        chosen = {o.key_or_group for o in parsed if o.key_or_group in groups and not o.is_delete()}
        if chosen:  # a group picked anew (dataset=moons): its option file, plus overrides inside it
            fresh = compose_config([o.input_line for o in parsed if o.key_or_group.split(".")[0] in chosen])
            for g in chosen:
                cfg[g] = fresh[g]
        OmegaConf.set_struct(cfg, True)
        ConfigLoaderImpl._apply_overrides_to_config(
            [o for o in parsed if o.key_or_group.split(".")[0] not in chosen], cfg
        )
    except ConfigError:
        raise
    except Exception as e:  # Hydra/OmegaConf's own words, on one line
        raise compose_error(e) from None
    OmegaConf.set_struct(cfg, False)
    return cfg


# ----------------------------------------------------------------------------- resume commands
def hydra_value(text: str) -> str:
    """``text`` as a Hydra override value: bare if it parses back unchanged, else single-quoted."""
    parser = OverridesParser.create()
    for candidate in (text, "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"):
        try:
            if parser.parse_overrides([f"k={candidate}"])[0].value() == text:
                return candidate
        except Exception:  # Hydra's grammar errors: try the quoted form
            continue
    return "'" + text + "'"


def resume_command(run_dir: Path) -> str:
    """The exact shell command that resumes ``run_dir`` (relative to the working dir when inside it)."""
    run_dir = Path(run_dir).resolve()
    rel = os.path.relpath(run_dir)
    shown = rel if not rel.startswith("..") else str(run_dir)
    return "mlptrain " + shlex.quote(f"{RESUME_KEY}={hydra_value(shown)}")

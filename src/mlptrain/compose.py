"""Every Hydra composition mlptrain does, and every use of Hydra's private API, in one place.

Hydra composes the config of each run; this module composes it ahead of Hydra where mlptrain
needs an answer in one line: a bad override or group option before a sweep starts
(:func:`precompose`), ``--help`` (one compose, no group scan), ``mlptrain-eval`` overrides on a
checkpoint's config (:func:`with_overrides`), and the resume command a stopped run prints.
Torch-free: the CLI imports it before anything heavy.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import itertools
import os
import re
import shlex
import sys
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra._internal import config_loader_impl
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.hydra import Hydra
from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict

from mlptrain import dataset_config, naming, schemas, study_config
from mlptrain.config import parse
from mlptrain.errors import EXIT_BAD_INPUT, ConfigError, printable
from mlptrain.parallel.env import from_rank0
from mlptrain.registry import LOSSES, check_direction, objective_mode, sweep_direction

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
    check_grammar(overrides)
    try:
        with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
            return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)
    except Exception as e:  # Hydra's compose errors, as one line
        raise compose_error(e, overrides) from None


# ----------------------------------------------------------------------------- plain words
def check_grammar(overrides: list[str]) -> None:
    """An override Hydra's grammar cannot read (``optim.lr=1;2``, ``model.hidden=[8,]``) fails here,
    one at a time so the message names it, in plain words instead of the parser's."""
    parser = OverridesParser.create()
    for arg in overrides:
        try:
            parser.parse_overrides([arg])
        except OverrideParseException:
            raise ConfigError(grammar_message(arg)) from None


def grammar_message(arg: str) -> str:
    key, sep, value = arg.partition("=")
    if not sep:
        return f"{printable(arg)}: expected key=value (e.g. trainer.epochs=10) or group=option (e.g. dataset=moons)"
    text = value.replace("\\", "\\\\").replace('"', '\\"')
    hint = "a list is written [8,16] (no trailing comma); " if "[" in value or "]" in value else ""
    return (
        f"{key}: cannot read the value {printable(value)}: {hint}characters such as ; , [ ] ( ) = quotes and "
        f"spaces have a meaning in an override; to pass them as text, put double quotes inside shell quotes: "
        f"'{key}=\"{printable(text)}\"'"
    )


def _list_keys() -> set[str]:
    """The keys whose value is a list (model.hidden, trainer.loggers, dataset.features, ...), from the schemas."""
    keys = set()
    for prefix, module in (("", schemas), ("dataset.", dataset_config)):
        for cls in vars(module).values():
            if isinstance(cls, type) and dataclasses.is_dataclass(cls):
                group = prefix or cls.__name__.removesuffix("Config").lower() + "."
                keys.update(group + f.name for f in dataclasses.fields(cls) if str(f.type).startswith("list"))
    return keys


def listify(argv: list[str]) -> list[str]:
    """A list key given one plain value (``model.hidden=64``, a sweep ``model.hidden=64,128``) means a list of
    that one value: rewrite it as ``model.hidden=[64]`` (``[64],[128]``) before Hydra, which refuses it."""
    keys, out = _list_keys(), []
    parser = OverridesParser.create()
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in keys and value and not re.search(r"[\[\](){}$'\"]", value):
            try:
                o = parser.parse_overrides([arg])[0]
            except OverrideParseException:
                out.append(arg)  # check_grammar words it
                continue
            if o.value() is not None and (not o.is_sweep_override() or o.is_discrete_sweep()):
                arg = f"{key}=" + ",".join(f"[{v.strip()}]" for v in value.split(","))
        out.append(arg)
    return out


def _base_config(overrides: list[str]) -> DictConfig:
    """The config of the group choices among ``overrides`` (the first option of a swept group), for naming
    the keys that exist; the plain defaults if even that cannot compose."""
    groups = config_groups()
    chosen = []
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key in groups and value:
            chosen.append(f"{key}={value.split(',')[0]}")
    for attempt in (chosen, []):
        try:
            with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
                return compose(config_name="config", overrides=attempt, return_hydra_config=True)
        except Exception:  # a bad group option is check_group_overrides' to word
            continue
    return OmegaConf.create({})


def _keys_of(node, prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        out.append(prefix + str(k))
        if isinstance(v, dict):
            out += _keys_of(v, f"{prefix}{k}.")
    return out


def unknown_key_message(key: str, cfg: DictConfig) -> str:
    """``trainer.batchsize: unknown key; did you mean trainer.batch_size? valid keys in trainer: ...``."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    choices = (tree.pop("hydra", None) or {}).get("runtime", {}).get("choices", {})
    every = _keys_of(tree)
    top = sorted(set(tree) | set(config_groups()))
    parent, _, leaf = key.rpartition(".")
    node = tree
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, dict) else None
    if "." not in key:
        nested = [k for k in every if k.endswith("." + key)]  # a nested key given at the top level
        guesses = nested or difflib.get_close_matches(key, top, n=3)
    elif isinstance(node, dict):  # a typo inside an existing group: trainer.batchsize
        guesses = [f"{parent}.{g}" for g in difflib.get_close_matches(leaf, [str(k) for k in node], n=3, cutoff=0.7)]
    else:  # a typo in the group: traner.epochs
        guesses = difflib.get_close_matches(key, every, n=3, cutoff=0.75)
    if isinstance(node, dict) and parent:
        where, valid = parent, list(node)
        if choices.get(parent):  # a group's keys depend on its option
            where += f" ({parent}={choices[parent]})"
    else:
        where, valid = "the config", top
    if len(guesses) > 1:  # only the ones as close as the closest
        score = lambda g: difflib.SequenceMatcher(None, key, g).ratio()  # noqa: E731
        guesses = [g for g in guesses if score(g) >= score(guesses[0]) - 0.05]
    users = [name for name, spec in LOSSES.items() if leaf in spec.params] if parent == "loss" else []
    if users and choices.get("loss") not in users:  # a key of other losses (loss=mse loss.class_weight=...)
        return f"{printable(key)}: only applies to loss={' or '.join(users)}, not loss={choices.get('loss')}"
    hint = f"did you mean {' or '.join(guesses)}? " if guesses else ""
    return f"{printable(key)}: unknown key; {hint}valid keys in {where}: {', '.join(map(str, valid))}"


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
UNKNOWN_KEY = re.compile(r"Could not (?:override|delete from config\. The key) '([^']+)'")


def compose_error(e: Exception, base: list[str] | DictConfig | None = None) -> ConfigError:
    """Hydra's composition error on one line: an unknown key named with its likely meaning (``base``: the
    overrides, or the config, it was composed from), the scalar-for-a-list mismatch in plain words, any
    other in Hydra's own words."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    if isinstance(e, OverrideParseException):
        bad = re.search(r"(\S+=\S*)", text)
        return ConfigError(grammar_message(bad.group(1)) if bad else text.split(" See https")[0])
    unknown = UNKNOWN_KEY.search(text)
    if unknown and isinstance(base, list) and any(o.endswith("=optuna") for o in base):  # its sweeper's keys
        message = study_config.unknown_key(unknown.group(1).lstrip("+~"))
        if message:
            return ConfigError(message)
    if unknown and base is not None:
        cfg = base if isinstance(base, DictConfig) else _base_config(list(base))
        return ConfigError(unknown_key_message(unknown.group(1).lstrip("+~"), cfg))
    if "is not a ListConfig" in text:
        key = text.split(":")[0]
        return ConfigError(f"{key}: expected a list, e.g. {key}=[64,64] (brackets, comma-separated)")
    text = text.split(" full_key:")[0].split(" Config search path:")[0]  # the folders searched: noise here
    return ConfigError(text + _plugin_hint(text))


def precompose(argv: list[str]) -> DictConfig | None:
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
    check_grammar(args.overrides)
    if study_config.installed():
        study_config.store()  # hydra/sweeper=optuna (hparams_search=optuna): mlptrain's own sweeper
    composed: dict[tuple, DictConfig] = {}
    failing = None  # the sweep structure being composed (its group choices name the keys that exist)

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
            cfgs, failing = [], None
            for failing in structures(sweep, primary):
                cfgs.append(compose_once(failing))
            failing = None
    except Exception as e:  # Hydra's own errors: keep their words, on one line
        raise compose_error(e, args.overrides if failing is None else failing) from None
    if args.cfg or args.info:
        return  # Hydra only prints the config: no run dir is made and nothing is trained
    check_output_dirs(parsed)
    cfg = cfgs[0]  # the other structures only had to compose; every swept value is checked below
    with open_dict(cfg):
        hydra_cfg = cfg.pop("hydra")
    sweeper = hydra_cfg.get("sweeper")
    parse(cfg)  # typed schema and ranges (torch-free): a sweep fails before its first job
    if args.multirun:
        check_swept_values(sweep, primary, cfgs)
    check_direction(
        sweep_direction(sweeper), objective_mode(cfg.trainer, cfg.dataset), f"trainer.monitor={cfg.trainer.monitor}"
    )
    if args.multirun and hydra_cfg.runtime.choices.get("hydra/sweeper") == "optuna":
        study_config.check(hydra_cfg, [o.input_line for o in parsed if not o.is_hydra_override()])
    return cfg  # the (first) job's config, without Hydra's node


def check_swept_values(overrides, primary: DictConfig, cfgs: list[DictConfig]) -> None:
    """Every value of every swept key (``model.norm=batch,layr``) is put through the schema before the first
    job: applied to each composed structure in turn, a value is refused when it fits none of them."""
    bases = []
    for c in cfgs:
        c = c.copy()
        with open_dict(c):
            c.pop("hydra", None)
        bases.append(c)
    parser = OverridesParser.create()
    for o in overrides:
        name = o.get_key_element().lstrip("+~").split("@", 1)[0]
        if not (o.is_sweep_override() and o.is_discrete_sweep()) or name.startswith("hydra"):
            continue
        if not names_a_value(name, primary):
            continue  # a group's options: check_group_overrides and the structures judged them
        for value in list(o.sweep_string_iterator())[1:]:
            line = parser.parse_overrides([f"{o.get_key_element()}={value}"])
            first = None
            for base in bases:
                cfg = base.copy()
                try:
                    ConfigLoaderImpl._apply_overrides_to_config(line, cfg)
                    parse(cfg)
                    break
                except ConfigError as e:
                    first = first or e
                except Exception as e:  # OmegaConf's words for a value it refuses
                    first = first or ConfigError(f"{name}={printable(value)}: {str(e).splitlines()[0]}")
            else:
                raise ConfigError(f"sweep value {name}={printable(value)}: {first}")


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


# ----------------------------------------------------------------------------- one composition
# A plain run is composed three times with the same overrides: by precompose, by Hydra to learn the run mode
# (Hydra.get_mode) and by Hydra for the run itself; each builds the same defaults list and merges the same
# YAML files (~0.2 s on 2 cores). reuse_compositions() keeps the last few of those two results, so the later
# compositions only apply their overrides and fill Hydra's runtime fields, which Hydra does anew each time.
# Overrides that set plain values are left out of the key: a sweep's master config, its first job and (in a
# worker process of another launcher) each further job differ only in those.
_reused: dict[tuple, tuple] = {}  # key -> (defaults list, a pristine copy of its merged config, the nodes)
_REUSE_MAX = 8  # a sweep composes a few structures (its jobs' own plain values share one)


def scan_plugins() -> None:
    """Hydra's plugin scan (it runs once, at the first use of its plugin registry): it imports every
    hydra_plugins module and stores their configs (hydra/launcher=joblib, hydra/sweeper=optuna...)."""
    from hydra.core.plugins import Plugins

    Plugins.instance()


def _structured_configs() -> tuple:
    """Which node each ConfigStore entry holds now: a plugin scan or a registration (the mlptrain sweeper's
    hydra/sweeper=basic) between two compositions changes what they compose to. Each entry keeps the nodes
    alive (:data:`_reused`), so an id in its key is not reused while it is kept."""
    out, stack = [], [("", ConfigStore.instance().repo)]
    while stack:
        path, node = stack.pop()
        for name, child in node.items():
            if isinstance(child, dict):
                stack.append((f"{path}/{name}", child))
            else:
                out.append((f"{path}/{name}", child))
    return tuple(out)


def reuse_compositions() -> None:
    """Let every later Hydra composition in this process with the same config, overrides and search path reuse
    the defaults list and merged YAML of an earlier one (the ``mlptrain`` command calls this first)."""
    if getattr(config_loader_impl.create_defaults_list, "_mlptrain_reuse", False):
        return
    build, merge = config_loader_impl.create_defaults_list, ConfigLoaderImpl._compose_config_from_defaults_list

    def create_defaults_list(repo, config_name, overrides_list, prepend_hydra, skip_missing):
        # A plain value (seed=3, hydra.mode=RUN, which Hydra appends for the run itself) is applied after the
        # merge, as Hydra's defaults list sorts it (hydra._internal.defaults_list.Overrides): it cannot change
        # which YAML files are merged, so the jobs of a sweep over values share one list and one merge, each
        # with its own values.
        # Sweeps (seed=0,1,2 in the multirun's master config) are skipped there as well.
        plain = [
            o
            for o in overrides_list
            if not o.is_sweep_override() and (isinstance(o.value(), dict) or not repo.group_exists(o.key_or_group))
        ]
        lines = tuple(o.input_line for o in overrides_list if o not in plain and not o.is_sweep_override())
        sources = tuple((s.provider, s.path) for s in repo.get_sources())
        nodes = _structured_configs()
        key = (config_name, lines, prepend_hydra, sources, tuple((p, id(n)) for p, n in nodes))
        if key in _reused:
            return dataclasses.replace(_reused[key][0], config_overrides=plain)
        # skip_missing (Hydra's multirun mode) only drops a '???' group a strict composition would refuse: a
        # strict one that succeeds serves both (the master config of a sweep and its first job); when it fails,
        # the lenient one is not kept.
        try:
            result = build(repo, config_name, overrides_list, prepend_hydra, False)
        except (ConfigCompositionException, ValueError):  # Hydra's words for a '???' default
            if not skip_missing:
                raise
            return build(repo, config_name, overrides_list, prepend_hydra, True)
        if len(_reused) >= _REUSE_MAX:
            _reused.pop(next(iter(_reused)))
        _reused[key] = (result, None, nodes)
        return result

    def compose_from_defaults(self, defaults, repo):
        for key, (kept, cfg, nodes) in _reused.items():
            if kept.defaults is defaults:  # the same list object: a hit above
                if cfg is None:  # the first composition of these defaults: merge, keep a copy
                    cfg = merge(self, defaults, repo)
                    _reused[key] = (kept, copy.deepcopy(cfg), nodes)
                    return cfg
                return copy.deepcopy(cfg)  # the caller sets flags and applies overrides on its own copy
        return merge(self, defaults, repo)

    create_defaults_list._mlptrain_reuse = True
    config_loader_impl.create_defaults_list = create_defaults_list
    ConfigLoaderImpl._compose_config_from_defaults_list = compose_from_defaults


# ----------------------------------------------------------------------------- checkpoints' configs
def with_overrides(raw: dict, overrides: list[str]) -> DictConfig:
    """A checkpoint's config with command-line overrides applied, as the training command would."""
    cfg = OmegaConf.create(raw)
    if not overrides:
        return cfg
    check_group_overrides(overrides)
    check_grammar(overrides)
    groups = config_groups()
    base = cfg
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
        raise compose_error(e, base) from None
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
    """The exact shell command that resumes ``run_dir``, from any directory (its path is absolute; where the
    data lies comes from the checkpoint: see mlptrain.cli.resume)."""
    return "mlptrain " + shlex.quote(f"{RESUME_KEY}={hydra_value(str(Path(run_dir).resolve()))}")


@functools.cache
def yaml_dumper():
    """OmegaConf's YAML dumper (strings that read as numbers or booleans quoted) on libyaml's emitter, or None
    without libyaml.  A sweep job's ``.hydra/`` files cost ~15 ms in PyYAML's pure-Python emitter, ~4 ms in
    libyaml's; the text differs only in how long double-quoted strings are folded (the same YAML)."""
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    if not getattr(yaml, "__with_libyaml__", False):
        return None

    class Dumper(yaml.CDumper):
        pass

    Dumper.add_representer(str, get_omega_conf_dumper().str_representer)
    return Dumper


def to_yaml(cfg) -> str:
    """``OmegaConf.to_yaml(cfg)`` (unresolved, in the config's own order), through :func:`yaml_dumper`."""
    import yaml

    container = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=yaml_dumper())


def guard_hydra_writes() -> None:
    """Hydra writes a job's ``.hydra/`` files before the task runs; on a full disk or past a file-size limit
    the OSError would reach Hydra's reporter as two chained tracebacks.  Here it is one line naming the
    file, and the command exits 2 (as other write failures): nothing has trained yet, so nothing is lost."""
    from hydra.core import utils

    save = utils._save_config
    if getattr(save, "_mlptrain_guard", False):
        return

    def guarded(cfg, filename, output_dir):
        try:
            if yaml_dumper() is None:
                save(cfg, filename, output_dir)
            else:  # what Hydra's _save_config writes, emitted by libyaml
                Path(output_dir).mkdir(parents=True, exist_ok=True)
                (Path(output_dir) / filename).write_text(to_yaml(cfg), encoding="utf-8")
        except OSError as e:
            where = Path(output_dir) / filename
            print(f"mlptrain: error: cannot write {where}: {e.strerror or e} (nothing was trained)", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None  # as the other write failures; Hydra lets SystemExit through

    guarded._mlptrain_guard = True
    utils._save_config = guarded

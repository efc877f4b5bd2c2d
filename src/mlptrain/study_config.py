"""``hydra/sweeper=optuna`` (``hparams_search=optuna``): its settings, their check, its search space.

The sweeper itself (``hydra_plugins.mlptrain_sweeper._optuna``) runs the study with Optuna; what is
here needs neither Optuna nor torch, so ``mlptrain`` checks a search before Hydra starts (one line,
exit 2, nothing written) and stores the sweeper's config before the first composition.

* :class:`OptunaConf` (``hydra.sweeper``), with :class:`SamplerConf` and :class:`PrunerConf`;
  ``hydra.sweeper.pruner=median`` is short for ``hydra.sweeper.pruner.name=median``.
* :func:`search_space`: ``hydra.sweeper.params`` and the command line's own sweeps (``optim.lr=
  'tag(log, interval(1e-4, 1e-1))'``) in Hydra's sweep grammar, as :class:`Param` (a distribution
  described by plain data: the sweeper turns it into Optuna's).
* :func:`check`: every setting, with the key and what would be valid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mlptrain.errors import ConfigError, printable

SWEEPER_TARGET = "hydra_plugins.mlptrain_sweeper._optuna.MlptrainOptunaSweeper"
DIRECTIONS = ("minimize", "maximize")
SAMPLERS = {  # name -> the SamplerConf keys it takes (besides name and seed)
    "tpe": ("n_startup_trials", "multivariate"),
    "random": (),
    "gp": ("n_startup_trials",),  # Gaussian-process Bayesian optimisation (Optuna's GPSampler: scipy, torch)
    "cmaes": ("n_startup_trials",),  # CMA-ES (the cmaes package)
    "qmc": ("qmc_type", "scramble"),  # a quasi-random sequence (scipy)
    "nsgaii": ("population_size",),  # a genetic algorithm
}
# Grid search is the basic sweeper's (mlptrain -m a=1,2 b=3,4); Optuna's GridSampler stops a study from inside
# optimize(), which an ask/tell study has not.
NEEDS = {"gp": "scipy", "qmc": "scipy", "cmaes": "cmaes"}  # sampler -> the module it imports
PRUNERS = {  # name -> the PrunerConf keys it takes (besides name)
    "none": (),
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps"),
    "successive_halving": ("min_resource", "reduction_factor", "min_early_stopping_rate"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor"),
}
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


# Typed Any: a wrong value gets mlptrain's one line (check), not OmegaConf's.
@dataclass
class SamplerConf:
    name: Any = "tpe"
    seed: Any = None  # per job: seed + job number, so a continued study asks the same trials
    n_startup_trials: Any = None  # None: Optuna's default
    multivariate: Any = None
    qmc_type: Any = None  # sobol | halton
    scramble: Any = None
    population_size: Any = None


@dataclass
class PrunerConf:
    name: Any = "none"
    n_startup_trials: Any = None
    n_warmup_steps: Any = None
    interval_steps: Any = None
    min_resource: Any = None  # an int, or "auto"
    max_resource: Any = None
    reduction_factor: Any = None
    min_early_stopping_rate: Any = None


@dataclass
class OptunaConf:
    _target_: str = SWEEPER_TARGET
    direction: Any = "minimize"
    study_name: Any = None
    storage: Any = None  # None: in memory; sqlite:///file.db survives the process
    n_trials: Any = 20
    n_jobs: Any = 1
    max_failure_rate: Any = 0.0
    sampler: Any = field(default_factory=SamplerConf)
    pruner: Any = field(default_factory=PrunerConf)
    params: dict | None = field(default_factory=dict)


KEYS = [f.name for f in dataclasses.fields(OptunaConf) if f.name != "_target_"]


def installed() -> bool:
    """Whether Optuna can be imported (without importing it: ~0.5 s)."""
    import importlib.util

    return importlib.util.find_spec("optuna") is not None


def store() -> None:
    """``hydra/sweeper=optuna`` in Hydra's config store (before the first composition)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaConf, provider="mlptrain")


# ----------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` float | int (low, high, log, step) or choice (choices, as override text
    or plain values); ``text`` is how the search spelled it."""

    key: str
    kind: str
    text: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()


def _plain(value: Any) -> Any:
    """A config node as plain data (a dict, a list, a scalar)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _flat(params: Any, prefix: str = "") -> dict[str, Any]:
    """``params`` as ``{"optim.lr": value}``: the preset's flat keys and the command line's nested ones
    (``hydra.sweeper.params.optim.lr=...`` nests) alike."""
    out: dict[str, Any] = {}
    for k, v in (params or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):  # a YAML list: the values to choose from
        return "choice(" + ", ".join(_text(v) for v in value) + ")"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def search_space(sweeper: Any, task_overrides: list[str]) -> tuple[list[Param], list[str]]:
    """(the searched keys, the fixed overrides): ``hydra.sweeper.params``, then the command line's
    overrides, a later one of a key replacing an earlier one; a sweep is searched, a value fixed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = _flat(_plain(sweeper.get("params")))
    lines = {k: f"{k}={_text(v)}" for k, v in params.items()}
    parser = OverridesParser.create()
    for line in task_overrides:
        key = line.split("=", 1)[0]
        lines.pop(key, None)
        lines[key] = line
    searched, fixed = [], []
    for key, line in lines.items():
        try:
            o = parser.parse_overrides([line])[0]
        except Exception:  # Hydra's grammar error: say what the grammar offers
            where = f"hydra.sweeper.params.{key}" if key in params else key
            raise ConfigError(
                f"{where}: {printable(line.split('=', 1)[1])}: not Hydra's sweep grammar; valid: "
                f"interval(a, b), tag(log, interval(a, b)), int(interval(a, b)), range(a, b), "
                f"choice(a, b, ...), a, b, ..."
            ) from None
        if not o.is_sweep_override():
            fixed.append(line)
            continue
        try:
            searched.append(_param(o, key, line.split("=", 1)[1]))
        except ConfigError as e:
            raise ConfigError(f"hydra.sweeper.params.{e}" if key in params else str(e)) from None
    return searched, fixed


def _param(o: Any, key: str, text: str) -> Param:
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep, Transformer

    value = o.value()
    log = "log" in (getattr(value, "tags", None) or ())
    where = f"{key}: {printable(text)}"
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        if not low < high or (log and low <= 0):
            raise ConfigError(f"{where}: an interval needs low < high{' and low > 0 (log)' if log else ''}")
        return Param(key, kind, text, low=low, high=high, log=log)
    if isinstance(value, RangeSweep) and not value.shuffle:
        values = list(o.sweep_iterator())
        if not values:
            raise ConfigError(f"{where}: an empty range")
        kind = "int" if all(isinstance(v, int) for v in (value.start, value.stop, value.step)) else "float"
        high = values[-1] if kind == "int" else value.start + value.step * (len(values) - 1)
        return Param(key, kind, text, low=value.start, high=high, log=log, step=value.step)
    choices = []
    for encoded, plain in zip(o.sweep_iterator(transformer=Transformer.encode), o.sweep_iterator()):
        choices.append(plain if isinstance(plain, (int, float, bool)) or plain is None else str(encoded))
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"{where}: the same value twice")
    return Param(key, "choice", text, choices=tuple(choices))


def override(param: Param, value: Any) -> str:
    """The override that sets ``param`` to a value the study chose."""
    if isinstance(value, bool):
        return f"{param.key}={'true' if value else 'false'}"
    if value is None:
        return f"{param.key}=null"
    return f"{param.key}={value!r}" if isinstance(value, float) else f"{param.key}={value}"


# ----------------------------------------------------------------------------- the check
def _options(conf: Any, kind: str, table: dict[str, tuple], extra: tuple) -> tuple[str, dict]:
    """(name, the options given) of ``hydra.sweeper.<kind>``: a name alone or a dict with ``name``."""
    conf = _plain(conf)
    if conf is None:
        conf = {"name": "none" if kind == "pruner" else "tpe"}
    if isinstance(conf, str):
        conf = {"name": conf}
    if not isinstance(conf, dict):
        raise ConfigError(f"hydra.sweeper.{kind}: expected a name, one of {', '.join(table)}")
    name = str(conf.get("name"))
    if name not in table:
        raise ConfigError(f"hydra.sweeper.{kind}.name: unknown {kind} {printable(name)!r}; valid: {', '.join(table)}")
    given = {k: v for k, v in conf.items() if k != "name" and v is not None}
    for k, v in given.items():
        if k not in table[name] + extra:
            valid = ", ".join(table[name] + extra) or "none"
            raise ConfigError(f"hydra.sweeper.{kind}.{k}: not an option of the {name} {kind}; valid: {valid}")
        valid = _valid(k, v)
        if valid:
            raise ConfigError(f"hydra.sweeper.{kind}.{k}: {printable(repr(v))}; valid: {valid}")
    return name, given


# The least value of each integer option of a sampler or pruner (None: any integer).
MINIMUM = {"seed": None, "n_startup_trials": 0, "n_warmup_steps": 0, "min_early_stopping_rate": 0}
MINIMUM |= {"interval_steps": 1, "min_resource": 1, "max_resource": 1, "reduction_factor": 2, "population_size": 2}


def _valid(key: str, value: Any) -> str | None:
    """What would be valid for a sampler's or pruner's option, or None when ``value`` is."""
    if key in ("multivariate", "scramble"):
        return None if isinstance(value, bool) else "true or false"
    if key == "qmc_type":
        return None if value in ("sobol", "halton") else "sobol or halton"
    if key.endswith("_resource") and value == "auto":
        return None
    low = MINIMUM[key]
    if isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low):
        return None
    return "an integer" + ("" if low is None else f" >= {low}") + (" or auto" if key.endswith("_resource") else "")


def sampler_options(conf: Any) -> tuple[str, dict]:
    import importlib.util

    name, given = _options(conf, "sampler", SAMPLERS, ("seed",))
    needs = NEEDS.get(name)
    if needs and importlib.util.find_spec(needs) is None:
        raise ConfigError(f"hydra.sweeper.sampler.name: the {name} sampler needs {needs}: pip install {needs}")
    return name, given


def pruner_options(conf: Any) -> tuple[str, dict]:
    return _options(conf, "pruner", PRUNERS, ())


def check(hydra_cfg: Any, task_overrides: list[str]) -> list[Param]:
    """Every ``hydra.sweeper`` setting of an Optuna search, before Hydra starts; returns the search space."""
    s = hydra_cfg.sweeper
    if s.direction not in DIRECTIONS:
        raise ConfigError(f"hydra.sweeper.direction: {printable(str(s.direction))!r}; valid: {', '.join(DIRECTIONS)}")
    for key, low in (("n_trials", 0), ("n_jobs", 1)):
        v = s.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ConfigError(f"hydra.sweeper.{key}: {v!r}; valid: an integer >= {low}")
    rate = s.max_failure_rate
    if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ConfigError(f"hydra.sweeper.max_failure_rate: {rate!r}; valid: a number from 0.0 to 1.0")
    if s.storage is not None and (not isinstance(s.storage, str) or "://" not in s.storage):
        raise ConfigError(
            f"hydra.sweeper.storage: {printable(str(s.storage))!r}; valid: null (in memory) or a database URL, "
            "e.g. sqlite:///optuna.db"
        )
    if s.storage is not None and not s.study_name:
        raise ConfigError("hydra.sweeper.study_name: a study kept in hydra.sweeper.storage needs a name")
    sampler_options(s.sampler)
    pruner, _ = pruner_options(s.pruner)
    launcher = hydra_cfg.launcher.get("_target_")
    if pruner != "none" and launcher != BASIC_LAUNCHER:
        raise ConfigError(
            f"hydra.sweeper.pruner: {pruner} prunes trials run in this process only (hydra/launcher=basic, "
            f"the default), not with {launcher}; valid with this launcher: none"
        )
    searched, _ = search_space(s, task_overrides)
    if not searched:
        raise ConfigError(
            "hydra.sweeper.params: nothing to search; give keys in Hydra's sweep grammar, e.g. "
            "hydra.sweeper.params.optim.lr='tag(log, interval(1e-4, 1e-1))'"
        )
    return searched


def unknown_key(key: str) -> str | None:
    """The one line for an unknown ``hydra.sweeper`` key of an Optuna search (None: another key)."""
    parts = key.split(".")
    if parts[:2] != ["hydra", "sweeper"] or len(parts) < 3:
        return None
    if len(parts) == 3:
        return f"{key}: unknown key of the Optuna sweeper; valid keys in hydra.sweeper: {', '.join(KEYS)}"
    if parts[2] in ("sampler", "pruner") and len(parts) == 4:
        conf = SamplerConf if parts[2] == "sampler" else PrunerConf
        valid = ", ".join(f.name for f in dataclasses.fields(conf))
        return f"{key}: unknown key; valid keys in hydra.sweeper.{parts[2]}: {valid}"
    return None


def sweeper_argv(argv: list[str]) -> list[str]:
    """The command line as the Optuna sweeper reads it: ``hydra.sweeper.params.<key>=<sweep>`` quoted (the value
    is the text of a search: Hydra would take ``interval(...)`` there for a sweep of its own setting) and added
    or replaced (``++``); ``hydra.sweeper.pruner=median`` (or ``sampler=random``) as ``...pruner.name=median``,
    so that options may follow it."""
    out = []
    for a in argv:
        key, eq, value = a.partition("=")
        if eq and key in ("hydra.sweeper.pruner", "hydra.sweeper.sampler") and value.isidentifier():
            a = f"{key}.name={value}"
        if eq and key.lstrip("+").startswith("hydra.sweeper.params."):
            if value and value[0] not in "'\"":
                value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
            a = f"++{key.lstrip('+')}={value}"  # a key the preset may not have
        out.append(a)
    return out

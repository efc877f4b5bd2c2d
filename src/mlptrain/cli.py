"""The ``mlptrain`` command: compose with Hydra, validate, build, fit, test, return the objective.

Only Hydra and the torch-free config schema are imported at module level, so
``mlptrain --help`` and a bad override answer quickly; torch comes in with the
first real run.
"""

from __future__ import annotations

import logging
import os
import sys
from enum import Enum
from importlib import resources
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mlptrain import distributed
from mlptrain.config import ConfigError

log = logging.getLogger("mlptrain")

CONFIG_PACKAGE = "mlptrain.configs"
# Exit codes: 2 = bad input (config, data, checkpoint), 1 = training failed (divergence, failed jobs).
EXIT_BAD_INPUT, EXIT_FAILED = 2, 1

_failed_jobs: list[str] = []


class TrialFailed(RuntimeError):
    """A job of an optimising sweep failed (its one-line reason is the message)."""


# ----------------------------------------------------------------------------- output dirs
_reserved: dict[str, str] = {}


def unique_dir(path: str) -> str:
    """Reserve ``path`` (or ``path-1``, ``path-2`` ...) by creating it, so two runs started in
    the same second never share a folder.  Memoised: Hydra resolves the run dir more than once.
    Under torchrun only rank 0 reserves one, and every rank gets rank 0's (its clock may differ)."""
    if path not in _reserved:
        _reserved[path] = distributed.from_rank0(lambda: _reserve(path))
    return _reserved[path]


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


if not OmegaConf.has_resolver("mlptrain.unique_dir"):
    OmegaConf.register_new_resolver("mlptrain.unique_dir", unique_dir, use_cache=True)


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
                raise ConfigError(f"{key}={_printable(option)}: unknown option for group '{key}'; valid choices: "
                                  f"{', '.join(groups[key])}")


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


def _printable(text: str) -> str:
    """Text for a one-line message: control characters (a newline in an option name) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


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


def run(cfg: DictConfig, out_dir: Path, choices: dict | None = None, overrides: list[str] | None = None,
        direction: str | None = None) -> dict:
    """Validate and train one job; returns the metrics dict (also written to ``out_dir/metrics.json``).
    ``direction`` (minimize/maximize): the sweeper's, checked against the objective's mode."""
    from mlptrain.config import parse

    run_cfg = parse(cfg)
    from mlptrain.trainer import Trainer  # torch is imported here, after validation

    from mlptrain.checkpoint import check_writable

    check_writable(out_dir)
    choices = choices or {}
    hp = hparams_of(run_cfg.raw, choices, overrides or [])
    if distributed.should_launch(run_cfg.trainer.devices):  # trainer.devices=N: start N ranks, like torchrun
        check_direction(direction, cfg)  # the ranks' data is not loaded here: the config's mode
        return distributed.launch(run_cfg, out_dir, hp, overrides)
    try:
        trainer = Trainer(run_cfg, out_dir, hparams=hp, overrides=overrides)
        check_direction(direction, cfg, trainer.mode, trainer.monitor)  # where only the data could tell (csv)
        return trainer.fit()
    except (MemoryError, RuntimeError) as e:
        from mlptrain.trainer import out_of_memory

        raise out_of_memory(e) or e


def launcher_threads(launcher, cpus: int | None = None) -> int:
    """Torch threads per job for parallel launchers, so N jobs share the cores instead of each
    taking all of them: joblib -> cores // n_jobs, submitit -> cpus_per_task; 0 = leave torch's default."""
    cpus = cpus or os.cpu_count() or 1
    if launcher is None:
        return 0
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, int) and n_jobs != 1:
        n = n_jobs if n_jobs > 0 else max(1, cpus + 1 + n_jobs)  # joblib: -1 = every core
        return max(1, cpus // n)
    return 0


def _sweep_direction(sweeper) -> str | None:
    """The sweeper's single optimisation direction (Optuna: Direction enum or string), if it has one."""
    d = sweeper.get("direction") if sweeper is not None else None
    if d is None or not isinstance(d, (str, Enum)):
        return None
    return str(getattr(d, "name", d)).rsplit(".", 1)[-1]


def _user_errors():
    from mlptrain.checkpoint import CheckpointError
    from mlptrain.data import DataError
    from mlptrain.trainer import TrainingError

    return (ConfigError, DataError, CheckpointError), TrainingError


def _exit_code(e: BaseException, default: int) -> int:
    """Interrupts exit like the shell reports a signal: 130 for SIGINT, 143 for SIGTERM."""
    return getattr(e, "exit_code", default)


@hydra.main(version_base="1.3", config_path="pkg://" + CONFIG_PACKAGE, config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    distributed.quiet_logging()  # under torchrun, ranks > 0 log warnings to the console only
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    direction = None
    if multirun:
        threads = launcher_threads(hc.launcher)
        if threads and cfg.trainer.num_threads == 0:
            cfg.trainer.num_threads = threads
        direction = _sweep_direction(hc.sweeper)
    try:
        bad_input, training_error = _user_errors()
        try:
            result = run(cfg, out_dir, dict(hc.runtime.choices), list(hc.overrides.task), direction)
        except bad_input as e:
            code, msg = EXIT_BAD_INPUT, str(e)
        except training_error as e:
            code, msg = _exit_code(e, EXIT_FAILED), str(e)
        else:
            objective = result["objective"]
            return float("nan") if objective is None else float(objective)
    except KeyboardInterrupt as e:  # before training started, or a second Ctrl-C (signals.Abort)
        code, msg = _exit_code(e, 130), str(e) or "interrupted"
    if distributed.env_rank() == 0:
        _record_failure(out_dir, msg)
    if code > 128:  # interrupted: stop here, a sweep included
        print(f"mlptrain: {_printable(msg)}", file=sys.stderr)
        sys.exit(code)
    if multirun:  # keep the sweep going; the summary lists the failure and main() exits non-zero
        _failed_jobs.append(f"{hc.job.num}: {msg}")
        log.error("job %s failed: %s", hc.job.num, msg)
        if direction is not None:
            # An optimising sweeper (Optuna) cannot take nan; a raised error marks the trial failed
            # and, with hydra.sweeper.max_failure_rate, lets the study go on.
            raise TrialFailed(msg)
        return float("nan")
    print(f"mlptrain: error: {_printable(msg)}", file=sys.stderr)
    sys.exit(code)


def _record_failure(out_dir: Path, msg: str) -> None:
    """Leave the error beside the run so sweeps and users can see why it stopped."""
    import json

    from mlptrain.checkpoint import CheckpointError, write_json

    try:
        metrics = out_dir / "metrics.json"
        data = json.loads(metrics.read_text()) if metrics.is_file() else {}
        status = data.get("status")
        data.update({"status": status if status in ("diverged", "interrupted") else "failed", "error": msg})
        write_json(metrics, data)
    except (OSError, CheckpointError):  # the error itself is still printed
        pass


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
    from hydra import compose, initialize_config_module
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = get_args_parser().parse_args(argv)
    if (args.help or args.hydra_help or args.shell_completion or args.config_dir or args.config_path
            or args.config_name or args.experimental_rerun):
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
                sweep = parser.parse_overrides(_sweeper_params(primary)) + parsed
                _check_hydra_sweeps(sweep)
            cfgs = [compose_once(c) for c in _structures(sweep, primary)]
    except Exception as e:  # Hydra's own errors: keep their words, on one line
        raise compose_error(e) from None
    if args.cfg or args.info:
        return  # Hydra only prints the config: no run dir is made and nothing is trained
    check_output_dirs(parsed)
    from omegaconf import open_dict

    from mlptrain.config import parse

    cfg = cfgs[0]  # the other structures only had to compose: a value problem fails its own jobs
    with open_dict(cfg):
        sweeper = cfg.pop("hydra").get("sweeper")
    parse(cfg)  # typed schema and ranges (torch-free): a sweep fails before its first job
    check_direction(_sweep_direction(sweeper), cfg)


def _sweeper_params(cfg: DictConfig) -> list[str]:
    """``hydra.sweeper.params`` as overrides, as the basic sweeper reads them (other sweepers,
    e.g. Optuna's, give them another meaning)."""
    if cfg.hydra.runtime.choices.get("hydra/sweeper") != "basic":
        return []
    return [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]


def _check_hydra_sweeps(overrides) -> None:
    """Hydra refuses, in several lines and only once the sweep starts, to sweep its own settings."""
    for o in overrides:
        if o.is_sweep_override() and o.is_hydra_override():
            raise ConfigError(f"{o.key_or_group}: Hydra's own settings cannot be swept ({_printable(o.input_line)}); "
                              f"give it one value, and sweep mlptrain's keys and groups")


def names_a_value(key: str, cfg: DictConfig) -> bool:
    """Whether an override of ``key`` sets a value of the composed ``cfg`` rather than choosing a config
    group: a dotted key always does; an undotted one when ``cfg`` has it and it is not a group (a key it
    lacks may name a group that only a search path has)."""
    return "." in key or (key in cfg and key not in cfg.hydra.runtime.choices)


def _structures(overrides, primary: DictConfig | None) -> list[list[str]]:
    """The override lists to compose a sweep with: one per combination of its swept group choices
    and Hydra settings.  A later override of a key replaces an earlier one, as in the basic sweeper.
    ``primary``: the sweep's config without its swept values (None: no sweep)."""
    import itertools

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


MAXIMISED = ("acc", "r2")  # as losses.MAXIMISE (kept torch-free here; a test checks they agree)
DIRECTIONS = {"min": "minimize", "max": "maximize"}


def objective_mode(cfg: DictConfig) -> str | None:
    """min/max of the objective as far as the config alone decides it (None: only the data can tell)."""
    from mlptrain import config as C

    t = cfg.trainer
    if t.mode != "auto":
        return t.mode
    monitor = str(t.monitor).removeprefix("val/")
    if monitor == "auto":  # the task's default: accuracy for classification, an error for regression
        name = cfg.dataset.get("name")
        if name in C.SYNTHETIC_CLASSIFICATION + C.VISION:
            return "max"
        return "min" if name in C.SYNTHETIC_REGRESSION else None
    return "max" if monitor in MAXIMISED else "min"


def check_direction(direction: str | None, cfg: DictConfig, mode: str | None = None, monitor: str = "") -> None:
    """An optimising sweeper's direction must agree with the mode of the objective the jobs return."""
    mode = mode or objective_mode(cfg)
    if direction is None or mode is None or direction == DIRECTIONS[mode]:
        return
    what = f"val/{monitor}" if monitor else f"trainer.monitor={cfg.trainer.monitor}"
    raise ConfigError(f"hydra.sweeper.direction: {direction} does not match the objective {what} (mode {mode}); "
                      f"valid: {DIRECTIONS[mode]} (or change trainer.monitor / trainer.mode)")


def main() -> None:
    """Console entry point."""
    try:
        if {"--help", "-h"} & set(sys.argv[1:]):
            from mlptrain.help import app_help

            if app_help(sys.argv[1:]):  # Hydra's own --help takes over a second
                return
        if any(".resume=" in a for a in sys.argv[1:]):
            from mlptrain.checkpoint import CheckpointError
            from mlptrain.resume import resume_argv

            try:  # continue in the resumed run's dir, with its own overrides first
                sys.argv[1:] = resume_argv(sys.argv[1:])
            except CheckpointError as e:
                raise ConfigError(str(e)) from None
        precompose(sys.argv[1:])
    except ConfigError as e:
        print(f"mlptrain: error: {_printable(str(e))}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    from hydra_plugins.mlptrain_slurm import register as register_slurm
    from hydra_plugins.mlptrain_sweeper import register as register_sweeper

    register_sweeper()  # the basic sweeper, minus the per-job composition precompose has made redundant
    register_slurm()  # hydra/launcher=slurm
    sys.argv += distributed.hydra_overrides()  # torchrun: ranks > 0 keep no .hydra/ of their own
    try:
        _hydra_main()
    finally:
        distributed.shutdown()
    from mlptrain import sweep  # failures of jobs that ran in other processes (joblib, submitit)

    failed = _failed_jobs + [f for f in sweep.failed_jobs if f not in _failed_jobs]
    if failed:
        print(f"mlptrain: error: {len(failed)} job(s) failed: " + "; ".join(failed), file=sys.stderr)
        sys.exit(EXIT_FAILED)



"""``mlptrain trainer.resume=<run dir or checkpoint>``: continue a run where it stopped, in its own dir.

Before Hydra composes anything, the command line is rewritten so that

* the run's own overrides (stored in its checkpoint) come first and the ones given now apply on
  top, so ``mlptrain trainer.resume=<dir>`` alone is the whole resume command, and a changed
  setting (``trainer.epochs=100`` to train longer) is simply added to it;
* ``hydra.run.dir`` is the run dir being resumed: TensorBoard, metrics.json, the log and
  ``.hydra/`` continue there instead of in a new timestamped dir.

``trainer.init_from=<run dir or checkpoint>`` is a new run from a run's weights: the run's overrides are
inherited the same way, but it gets a new dir, a fresh optimizer and a fresh schedule.

Where the data is (``dataset.data_dir``, ``dataset.path``, ``dataset.test_path``) is pinned to where the
run found it, as an absolute path: the printed resume command works from any directory and in a shell
without ``$MLPTRAIN_DATA``.  What the resume cannot do is refused by :func:`check_resume` before Hydra
starts, so a refused resume rewrites nothing in the run dir.

Torch is imported only when a resume is asked for (the checkpoint has to be read).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mlptrain.compose import RESUME_KEY, hydra_value, parse_args
from mlptrain.config import parse
from mlptrain.errors import ConfigError
from mlptrain.registry import DEFAULT_MONITOR

INIT_KEY = "trainer.init_from"
# Where the data lies, not what it is (the data itself is compared after loading): pinned, never compared.
DATA_PATHS = ("dataset.data_dir", "dataset.path", "dataset.test_path")


@dataclass
class Resuming:
    """What :func:`plan` read from the checkpoint, for :func:`check_resume`."""

    key: str  # trainer.resume or trainer.init_from
    target: str
    config: dict  # the checkpoint's resolved config


def run_dir_of(target: str | Path) -> Path | None:
    """The run dir a resume target belongs to: the dir itself, or the dir of a checkpoint that sits
    in a run dir.  ``None`` for a checkpoint copied elsewhere (the resumed run gets a new dir)."""
    target = Path(target)
    if target.is_dir():
        return target.resolve()
    parent = target.resolve().parent
    if (parent / ".hydra").is_dir() or (parent / "metrics.json").is_file():
        return parent
    return None


def _key(parsed) -> str:
    return parsed.key_or_group


def resume_argv(argv: list[str]) -> list[str]:
    """Rewrite a ``trainer.resume=...`` command line as described in the module docstring."""
    return plan(argv)[0]


def plan(argv: list[str]) -> tuple[list[str], Resuming | None]:
    """The rewritten command line, and what it resumes (None: neither a resume nor an init_from)."""
    if not any(a.lstrip("+~").startswith((RESUME_KEY + "=", INIT_KEY + "=")) for a in argv):
        return argv, None
    args = parse_args(argv)
    parser = OverridesParser.create()
    try:
        given = parser.parse_overrides(args.overrides)
    except Exception:
        return argv, None  # precompose reports the malformed override in one line
    named = {_key(o) for o in given if not o.is_sweep_override() and o.value() not in (None, "")}
    if {RESUME_KEY, INIT_KEY} <= named:
        raise ConfigError(f"{INIT_KEY}: give either {RESUME_KEY} (continue a run) or {INIT_KEY} (a new run), not both")
    for key in (RESUME_KEY, INIT_KEY):
        found = [o for o in given if _key(o) == key]
        if found and not found[-1].is_sweep_override() and found[-1].value() not in (None, ""):
            break
    else:
        return argv, None
    if key == RESUME_KEY and args.multirun:
        raise ConfigError(f"{RESUME_KEY}: resume one run at a time (without -m/--multirun)")
    target = str(found[-1].value())

    from mlptrain import checkpoint  # torch: a resume has to read the checkpoint

    ckpt = checkpoint.load(target, mmap=True)  # the weights are not read
    stored = ckpt.get("overrides") or []
    try:
        stored_parsed = parser.parse_overrides(list(stored))
    except Exception:
        stored_parsed = []
    run_dir = run_dir_of(target)
    mine = {_key(o) for o in given}
    pinned = pinned_paths(ckpt.get("config") or {}, run_dir, mine)
    skip = {RESUME_KEY, INIT_KEY, *(p.split("=", 1)[0] for p in pinned)}
    inherited = [
        o.input_line
        for o in stored_parsed
        if _key(o) not in mine and _key(o) not in skip and not _key(o).startswith("hydra")
    ]
    if key == RESUME_KEY:  # a new run (init_from) takes today's defaults
        inherited += pinned_defaults(ckpt, mine | {_key(o) for o in stored_parsed})
    extra = list(pinned)
    if key == RESUME_KEY and run_dir is not None and "hydra.run.dir" not in mine:
        extra.append(f"hydra.run.dir={hydra_value(str(run_dir))}")
    flags = [a for a in argv if a not in args.overrides]
    return inherited + list(args.overrides) + extra + flags, Resuming(key, target, ckpt.get("config") or {})


def _original_cwd(run_dir: Path | None) -> str | None:
    """The directory the run was started from (Hydra records it), against which its relative paths count."""
    try:
        return str(OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.cwd)
    except Exception:  # no run dir, an old or hand-made one: relative paths count from here
        return None


def pinned_paths(config: dict, run_dir: Path | None, mine: set[str]) -> list[str]:
    """``dataset.path=<absolute>`` (and data_dir, test_path) as the run resolved them, unless given now."""
    dataset = config.get("dataset") or {}
    # A relative path counted from where the run started; failing that (the run dir was moved, with its
    # table beside it), from here or from the run dir.
    bases = [b for b in (_original_cwd(run_dir), os.getcwd(), run_dir and str(run_dir)) if b]
    out = []
    for key in DATA_PATHS:
        value = dataset.get(key.split(".", 1)[1])
        if key in mine or not isinstance(value, str) or not value:
            continue
        found = [os.path.join(b, os.path.expanduser(value)) for b in bases]  # an absolute value stays as it is
        path = next((f for f in found if os.path.exists(f)), found[0])
        out.append(f"{key}={hydra_value(os.path.normpath(path))}")
    return out


def check_resume(resuming: Resuming, cfg: DictConfig) -> None:
    """Refuse, before Hydra writes anything into the run dir, a resume the checkpoint cannot continue:
    a changed setting it depends on, or a new length under a schedule planned over the whole run."""
    from mlptrain.training.state import incompatible, length_change  # torch: only for a resume

    run = parse(cfg)
    where = resuming.target
    if resuming.key == INIT_KEY:
        old, new = resuming.config.get("model") or {}, run.raw.get("model") or {}
        diff = [k for k in ("name", "hidden", "norm") if old.get(k) != new.get(k)]  # what shapes the weights
        if diff:
            raise ConfigError(
                f"{INIT_KEY}: {where} holds a different model ("
                + ", ".join(f"model.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:3])
                + "); its weights cannot start this one"
            )
        return
    mismatch = incompatible(resuming.config, run.raw)
    if mismatch:
        raise ConfigError(
            f"{RESUME_KEY}: {where} was trained with a different {mismatch}; resume with "
            f"the run's own settings (start a new run to change them)"
        )
    problem = length_change(resuming.config, run.raw)
    if problem:
        before, now = problem
        source = Path(where).resolve()
        key, length = now.split("=", 1)
        was = before.split("=", 1)[1]
        if (
            key == "trainer.epochs"
            and before.startswith(key)
            and length.isdigit()
            and was.isdigit()
            and int(length) > int(was)
        ):
            length = str(int(length) - int(was))  # the new run trains the extra epochs
        raise ConfigError(
            f"{RESUME_KEY}: scheduler={run.scheduler.name} plans the lr over the run's whole length ({before}), so "
            f"{now} cannot extend it; train on from its weights with a fresh schedule in a new run: "
            f"mlptrain {INIT_KEY}={hydra_value(str(source))} {key}={length}"
        )


# Settings whose default has changed (issue 16: the loss follows the task, sizes follow the data, the
# monitor is the validation loss): a run resumes with the values it was trained with, not today's defaults.
PINNED = ("trainer.batch_size", "trainer.epochs", "trainer.early_stopping.enabled")


def pinned_defaults(ckpt: dict, given: set[str]) -> list[str]:
    """Overrides that pin, for a resumed run, the settings in PINNED, its loss and its monitor as it was
    trained (unless they are set now or were set on its own command line)."""
    config = ckpt.get("config") or {}
    out = []
    loss = (config.get("loss") or {}).get("name")
    if "loss" not in given and isinstance(loss, str) and loss != "auto":
        out.append(f"loss={loss}")
    for key in PINNED:
        node: object = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if key not in given and isinstance(node, (bool, int, str)) and node != "auto":
            out.append(f"{key}={str(node).lower() if isinstance(node, bool) else node}")
    best = ckpt.get("best") or {}
    metric, mode = str(best.get("metric") or ""), best.get("mode")
    trainer = config.get("trainer") or {}
    dataset = config.get("dataset") or {}
    if dataset.get("name") == "csv" and "stratify" not in dataset and "dataset.stratify" not in given:
        out.append("dataset.stratify=false")  # its split was drawn before classification splits were stratified
    old_default = metric.removeprefix("val/") not in DEFAULT_MONITOR.values()
    if old_default and trainer.get("monitor") == "auto" and "trainer.monitor" not in given:
        out.append(f"trainer.monitor={metric.removeprefix('val/')}")
        if mode in ("min", "max") and "trainer.mode" not in given:
            out.append(f"trainer.mode={mode}")
    return out

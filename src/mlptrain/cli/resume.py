"""``mlptrain trainer.resume=<run dir or checkpoint>``: continue a run where it stopped, in its own dir.

Before Hydra composes anything, the command line is rewritten so that

* the run's own overrides (stored in its checkpoint) come first and the ones given now apply on
  top, so ``mlptrain trainer.resume=<dir>`` alone is the whole resume command, and a changed
  setting (``trainer.epochs=100`` to train longer) is simply added to it;
* ``hydra.run.dir`` is the run dir being resumed: TensorBoard, metrics.json, the log and
  ``.hydra/`` continue there instead of in a new timestamped dir.

Torch is imported only when a resume is asked for (the checkpoint has to be read).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from mlptrain.compose import RESUME_KEY, hydra_value, parse_args
from mlptrain.errors import ConfigError
from mlptrain.registry import DEFAULT_MONITOR


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
    if not any(a.lstrip("+~").startswith(RESUME_KEY + "=") for a in argv):
        return argv
    args = parse_args(argv)
    parser = OverridesParser.create()
    try:
        given = parser.parse_overrides(args.overrides)
    except Exception:
        return argv  # precompose reports the malformed override in one line
    resume = [o for o in given if _key(o) == RESUME_KEY]
    if not resume or resume[-1].is_sweep_override() or resume[-1].value() in (None, ""):
        return argv
    if args.multirun:
        raise ConfigError(f"{RESUME_KEY}: resume one run at a time (without -m/--multirun)")
    target = str(resume[-1].value())

    from mlptrain import checkpoint  # torch: a resume has to read the checkpoint

    ckpt = checkpoint.load(target, mmap=True)  # the weights are not read
    stored = ckpt.get("overrides") or []
    try:
        stored_parsed = parser.parse_overrides(list(stored))
    except Exception:
        stored_parsed = []
    mine = {_key(o) for o in given}
    inherited = [
        o.input_line
        for o in stored_parsed
        if _key(o) not in mine and _key(o) != RESUME_KEY and not _key(o).startswith("hydra")
    ]
    inherited += pinned_defaults(ckpt, mine | {_key(o) for o in stored_parsed})
    extra = []
    run_dir = run_dir_of(target)
    if run_dir is not None and "hydra.run.dir" not in mine:
        extra.append(f"hydra.run.dir={hydra_value(str(run_dir))}")
    flags = [a for a in argv if a not in args.overrides]
    return inherited + list(args.overrides) + extra + flags


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

"""Continuing a sweep: the same ``mlptrain -m ...`` with the same ``hydra.sweep.dir`` finishes it.

* :func:`check_same_sweep` (the summary callback's ``on_multirun_start``): a sweep folder that holds
  an earlier sweep (its ``multirun.yaml``, Hydra's own record of the command) is continued only by
  the same command; another one is refused in one line naming the difference.  Execution-only
  settings (:data:`EXECUTION_KEYS`, the launcher, ``hydra.sweep.dir``) may change.
* :class:`ContinuingLauncher` (wrapped around the launcher by mlptrain's sweepers): a job whose
  folder's ``metrics.json`` says it finished is not launched; its objective goes back to the sweeper
  as if it had run, and none of its files is touched.  The other jobs are launched with their own
  job numbers, so they run in their own folders.
* :func:`resume_in_own_dir` (the job, in whichever process runs it): a job that finds its own
  ``last.pt`` resumes from it exactly; one killed before its first checkpoint starts afresh.
* :func:`continue_command` is what an interrupted sweep prints; ``mlptrain trainer.resume=<sweep
  dir>`` is rewritten to it by :func:`sweep_resume_argv`.

Torch-free.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from mlptrain.errors import ConfigError

log = logging.getLogger("mlptrain")

DONE = ("completed", "early_stopped", "pruned")  # pruned: stopped by the Optuna sweeper
# Keys a continuation may change: how a job runs, not what it computes (CPU numbers do not depend on them).
EXECUTION_KEYS = (
    "trainer.progress",
    "trainer.num_threads",
    "trainer.device",
    "trainer.resume",
    "trainer.retries",
    "dataset.data_dir",
)
RECORD = "multirun.yaml"  # Hydra writes the sweep's config (its overrides included) there before any job
N_TRIALS = "hydra.sweeper.n_trials"
# The command that continues the sweep this process runs (set when it starts): printed if it is interrupted.
current: list[str] = []


# ----------------------------------------------------------------------------- the command
def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def identity(task: list[str], hydra: list[str]) -> list[str]:
    """What makes a sweep this sweep: its task overrides (execution-only ones left out) and its
    sweeper settings, in their order (which numbers the jobs)."""
    kept = [o for o in task if _key(o) not in EXECUTION_KEYS]
    # n_trials may grow: a seeded Optuna search asks the same trials again, then new ones
    sweeper = [o for o in hydra if _key(o).startswith(("hydra.sweeper", "hydra/sweeper")) and _key(o) != N_TRIALS]
    return kept + sweeper


def recorded(sweep_dir: Path) -> tuple[list[str], list[str]] | None:
    """(task, hydra) overrides of the sweep recorded in ``sweep_dir``, or None for a fresh folder."""
    import yaml

    try:
        conf = yaml.safe_load((Path(sweep_dir) / RECORD).read_text()) or {}
        overrides = conf["hydra"]["overrides"]
        return [str(o) for o in overrides.get("task") or []], [str(o) for o in overrides.get("hydra") or []]
    except (OSError, KeyError, TypeError, ValueError):
        return None


def difference(before: list[str], now: list[str]) -> str:
    gone = [o for o in before if o not in now]
    new = [o for o in now if o not in before]
    if not gone and not new:
        return "the same overrides in another order (the order numbers the jobs)"
    parts = []
    if gone:
        parts.append("it was run with " + " ".join(gone))
    if new:
        parts.append("this command has " + " ".join(new))
    return "; ".join(parts)


def check_same_sweep(sweep_dir: Path, task: list[str], hydra: list[str]) -> bool:
    """True when ``sweep_dir`` holds an earlier run of this sweep (to continue); False when fresh.
    Raises ConfigError when it holds another sweep."""
    found = recorded(sweep_dir)
    if found is None:
        return False
    before, now = identity(*found), identity(task, hydra)
    if before != now:
        raise ConfigError(
            f"hydra.sweep.dir: {sweep_dir} holds another sweep ({difference(before, now)}); "
            "continue it with the same command, or give this sweep another hydra.sweep.dir"
        )
    return True


def continue_command(sweep_dir: Path, task: list[str], hydra: list[str]) -> str:
    """The shell command that continues the sweep in ``sweep_dir``."""
    import os

    rel = os.path.relpath(Path(sweep_dir).resolve())
    shown = rel if not rel.startswith("..") else str(Path(sweep_dir).resolve())
    from mlptrain.compose import hydra_value

    derived = ("hydra.sweep.dir", "hydra.job.config.override_dirname.exclude_keys")  # given below / by mlptrain
    args = [*task, *(o for o in hydra if _key(o) not in derived), f"hydra.sweep.dir={hydra_value(shown)}"]
    return "mlptrain -m " + " ".join(shlex.quote(a) for a in args)


def sweep_resume_argv(argv: list[str]) -> list[str] | None:
    """``mlptrain trainer.resume=<sweep dir> [more]`` as the command that continues that sweep, or None
    when the target is not a sweep folder (a run dir or a checkpoint: a single run's resume)."""
    from mlptrain.compose import RESUME_KEY

    targets = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith(RESUME_KEY + "=")]
    if not targets:
        return None
    target = Path(targets[-1].strip("'\""))
    found = recorded(target) if target.is_dir() else None
    if found is None:
        return None
    rest = [a for a in argv if not a.lstrip("+").startswith(RESUME_KEY + "=") and a not in ("-m", "--multirun")]
    command = shlex.split(continue_command(target, *found))[1:]  # without "mlptrain"
    return command + rest


# ----------------------------------------------------------------------------- finished jobs
def find_jobs(sweep_dir: Path) -> list[Path]:
    """Every job folder under ``sweep_dir`` (one holding ``.hydra/overrides.yaml``), in job order."""
    jobs = [p.parent.parent for p in Path(sweep_dir).rglob(".hydra/overrides.yaml")]
    return sorted(jobs, key=lambda p: (_job_num(p), str(p)))


def _job_num(job: Path) -> int:
    head = job.name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def finished_jobs(sweep_dir: Path) -> dict[int, tuple[list[str], dict, Path]]:
    """Job number -> (overrides, metrics, folder) of the jobs in ``sweep_dir`` that finished."""
    import yaml

    out = {}
    if not Path(sweep_dir).is_dir():
        return out
    for job in find_jobs(sweep_dir):
        try:
            metrics = json.loads((job / "metrics.json").read_text())
            overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        except (OSError, ValueError):
            continue
        if metrics.get("status") in DONE and _job_num(job) < 1 << 30:
            out[_job_num(job)] = ([str(o) for o in overrides], metrics, job)
    return out


class ContinuingLauncher:
    """A Hydra launcher that does not launch the jobs of its sweep that have already finished, and runs
    a job again, up to ``retries`` times, after a transient failure: out of memory, or a worker process
    that died (killed by the system).  Bad input and divergence are never retried."""

    def __init__(self, launcher, sweep_dir: Path, retries: int = 0):
        self._launcher, self._sweep_dir, self._retries = launcher, Path(sweep_dir), int(retries or 0)

    @classmethod
    def around(cls, launcher, config) -> ContinuingLauncher:
        """``launcher`` in the sweep of the (master) ``config``, with its ``trainer.retries``."""
        from omegaconf import OmegaConf

        return cls(launcher, Path(str(config.hydra.sweep.dir)), OmegaConf.select(config, "trainer.retries", default=0))

    def __getattr__(self, name):
        return getattr(self._launcher, name)

    def launch(self, job_overrides, initial_job_idx: int):
        from hydra.core.utils import JobReturn, JobStatus

        done = finished_jobs(self._sweep_dir)
        results: list = [None] * len(job_overrides)
        todo: list[int] = []
        for i, overrides in enumerate(job_overrides):
            hit = done.get(initial_job_idx + i)
            # the same job (check_same_sweep has compared the commands; execution-only keys may differ)
            if hit is not None and identity(hit[0], []) == identity(list(overrides), []):
                objective = hit[1].get("objective")
                results[i] = JobReturn(
                    overrides=list(overrides),
                    working_dir=str(hit[2]),
                    task_name="mlptrain",
                    status=JobStatus.COMPLETED,
                    _return_value=float("nan") if objective is None else float(objective),
                )
                log.info("job %d finished before: skipped (%s)", initial_job_idx + i, hit[2].name)
            else:
                todo.append(i)
        attempts = dict.fromkeys(todo, 0)
        while todo:
            again = []
            for run in _consecutive(todo):
                try:
                    launched = self._launcher.launch(
                        [job_overrides[i] for i in run], initial_job_idx=initial_job_idx + run[0]
                    )
                except Exception as e:  # the launcher lost a worker process: its jobs did not return
                    if not _lost_worker(e) or min(attempts[i] for i in run) >= self._retries:
                        raise
                    finished = finished_jobs(self._sweep_dir)
                    lost = [i for i in run if initial_job_idx + i not in finished]
                    log.warning("a worker process died (%s): running job(s) %s again", type(e).__name__, lost)
                    again += lost
                    continue
                for i, ret in zip(run, launched):
                    results[i] = ret
                if any(_status(_job_dir(ret)) == "interrupted" for ret in launched):
                    # A job stopped by a signal (in a worker process, whose exit code does not reach here):
                    # the sweep stops too, and can be continued.
                    log.error("a job was interrupted: the sweep stops")
                    raise SystemExit(130)
                for i, ret in zip(run, launched):
                    if attempts[i] < self._retries and _transient(_job_dir(ret)):
                        log.warning("job %d failed (%s): running it again", initial_job_idx + i, _error(_job_dir(ret)))
                        again.append(i)
            for i in again:
                attempts[i] += 1
            todo = sorted(set(again))
        for i, n in attempts.items():
            if n and results[i] is not None:
                _record_attempts(Path(_job_dir(results[i])), n + 1)
        return results


def _job_dir(ret) -> str | None:
    """A launched job's output dir (its working dir is the sweep's own unless hydra.job.chdir)."""
    from omegaconf import OmegaConf

    found = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else None
    return str(found) if found else ret.working_dir


def _consecutive(indices: list[int]) -> list[list[int]]:
    """Runs of consecutive jobs: a launcher numbers the jobs of one call in order."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _lost_worker(e: BaseException) -> bool:
    """joblib's TerminatedWorkerError, concurrent.futures' BrokenProcessPool: a worker killed (OOM killer)."""
    return any(c.__name__ in ("TerminatedWorkerError", "BrokenProcessPool") for c in type(e).__mro__)


def _transient(job_dir) -> bool:
    return _status(job_dir) == "failed" and _error(job_dir).startswith("out of memory")


def _error(job_dir) -> str:
    try:
        return str(json.loads((Path(job_dir) / "metrics.json").read_text()).get("error") or "")
    except (OSError, TypeError, ValueError):
        return ""


def _record_attempts(job_dir: Path, n: int) -> None:
    """How many times a job ran, in its metrics.json (the summary shows it)."""
    from mlptrain.files import write_json

    try:
        metrics = json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return
    write_json(job_dir / "metrics.json", {**metrics, "attempts": n})


def _status(job_dir) -> str | None:
    try:
        return json.loads((Path(job_dir) / "metrics.json").read_text()).get("status")
    except (OSError, TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------- in the job
def resume_in_own_dir(cfg, out_dir: Path) -> None:
    """A sweep job that was stopped before: resume from its own ``last.pt`` (exactly where it was),
    or, killed before its first checkpoint, drop the stale TensorBoard events and start again."""
    out_dir = Path(out_dir)
    status = _status(out_dir)
    if status in DONE or cfg.trainer.get("resume"):
        return
    if (out_dir / "last.pt").is_file():
        log.info("this job was stopped before: resuming from %s", out_dir / "last.pt")
        cfg.trainer.resume = str(out_dir)
    elif status is not None:
        for f in out_dir.glob("events.out.tfevents.*"):
            f.unlink()

"""Sweep summaries: one table of every job of a multirun, rebuilt from what the jobs left on disk.

Each job folder holds ``.hydra/overrides.yaml`` (what makes it differ) and ``metrics.json``
(written by the trainer every epoch, and by the CLI with ``status``/``error`` when a job
fails).  :func:`write_summary` reads them all and writes ``summary.csv`` (every metric) and
``summary.md`` (the readable subset) into the sweep folder:

* one row per job, best objective first (per ``trainer.mode``), failed and unfinished jobs last
  with their error;
* jobs that differ only in ``seed`` grouped as mean +- std (sample std over completed jobs).

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks.summary`` in config.yaml): it
rewrites the summary after every job (so a sweep that crashes or is killed still has one, and
Hydra's BasicSweeper raising after a failed batch does not lose it) and once more at the end.
``mlptrain-summary DIR`` does the same for any sweep folder, finished or not.

Nothing here imports torch: the summary command answers in well under a second.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import statistics
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from mlptrain.continuation import _job_num, find_jobs
from mlptrain.errors import TrialFailed
from mlptrain.files import record_failure, write_text
from mlptrain.oof import FOLD_KEY, write_oof
from mlptrain.quick_exit import console

log = logging.getLogger("mlptrain")

SEED_KEY = "seed"
DONE = ("completed", "early_stopped", "pruned")  # pruned: stopped by the Optuna sweeper
# Failures of the last multirun, as "job: error": appended by the jobs run in this process and, at the
# end, from the summary (jobs in other processes: joblib, submitit).  Read by cli.train.main for its exit code.
failed_jobs: list[str] = []


# ----------------------------------------------------------------------------- reading jobs
def sweeps_under(folder: Path) -> list[Path]:
    """The sweeps whose jobs lie under ``folder`` (one when ``folder`` is a sweep, or holds one).  A
    job belongs to its nearest folder holding Hydra's ``multirun.yaml`` (``folder`` at the highest),
    else to the folder it sits in."""
    folder = Path(folder)

    def sweep_of(job: Path) -> Path:
        for d in job.parents:
            if (d / "multirun.yaml").is_file() or d == folder:
                return d if (d / "multirun.yaml").is_file() else job.parent
        return job.parent

    return sorted({sweep_of(j) for j in find_jobs(folder)})


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


# Each job's overrides, parsed once per version of its file: the summary is rewritten after every job
# and reads every job's, and YAML parsing (pure Python) would make a long sweep's summaries quadratic.
_overrides_read: dict[str, tuple[tuple[int, int, int], list]] = {}


def _overrides(job: Path) -> list:
    import yaml

    path = job / ".hydra" / "overrides.yaml"
    st = path.stat()
    version = (st.st_ino, st.st_mtime_ns, st.st_size)
    known = _overrides_read.get(str(path))
    if known is None or known[0] != version:
        known = _overrides_read[str(path)] = (version, yaml.safe_load(path.read_text()) or [])
    return list(known[1])


def read_job(job: Path) -> dict:
    """A job's overrides and metrics; a job without a final status is reported as incomplete."""
    overrides = _overrides(job)
    try:
        metrics = json.loads((job / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = {}
    status = metrics.get("status") or "incomplete"
    if status == "running":  # no final status: still running, or killed
        status = "incomplete"
    num = _job_num(job)
    return {
        "job": job.name,
        "num": num if num < 1 << 30 else job.name,
        "path": job,
        "overrides": [str(o) for o in overrides],
        "params": dict(_split(str(o)) for o in overrides),
        "status": status,
        "error": metrics.get("error", ""),
        "attempts": metrics.get("attempts", 1),  # > 1: run again after a transient failure (trainer.retries)
        "metrics": metrics,
    }


def flat_metrics(m: dict) -> dict[str, float]:
    """The numbers of one metrics.json, as ``val/m (best)``, ``val/x at best val/m epoch``, ``final train/x``,
    ``test/x`` ... columns."""
    out: dict[str, float] = {}
    if m.get("monitor"):
        out[f"{m['monitor']} (best)"] = m.get("objective")
    out["best_epoch"] = m.get("best_epoch")
    out["epochs"] = m.get("epochs")
    # m["best"]: every validation metric at the best epoch of the monitored one (the objective), labelled
    # so; where the loss is the nll (cross-entropy, Gaussian NLL: equal at the best epoch) one of the
    # twins is left out, as in TensorBoard: the objective's, else the nll
    best, monitor = m.get("best") or {}, m.get("monitor")
    loss, nll = best.get("val/loss"), best.get("val/nll")
    twin = isinstance(loss, float) and isinstance(nll, float) and math.isclose(loss, nll, rel_tol=1e-6, abs_tol=1e-9)
    same = {"val/loss" if monitor == "val/nll" else "val/nll"} if twin else set()
    out.update({f"{k} at best {monitor} epoch": v for k, v in best.items() if k != monitor and k not in same})
    final = {k: v for k, v in (m.get("final") or {}).items() if "/" in k and not (twin and k.endswith("/nll"))}
    out.update({f"final {k}": v for k, v in final.items()})
    out.update({f"test/{k}": v for k, v in (m.get("test") or {}).items() if not (twin and k == "nll")})
    out["train_time_s"] = m.get("train_time_s")
    return out


# ----------------------------------------------------------------------------- the summary
def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _objective_of(row: dict) -> tuple[str | None, str]:
    m = row["metrics"]
    return (m.get("monitor"), m.get("mode") or "min") if m.get("monitor") else (None, "min")


def _rank_key(objectives: list[tuple[str, str]]):
    """Best first within each objective (a sweep over datasets of different tasks has several: each
    ranked on its own, the most common first), pruned ones after those that ran to the end (their objective
    is of fewer epochs), failed and unfinished jobs last."""

    def key(row):
        objective = _objective_of(row)
        group = objectives.index(objective) if objective in objectives else len(objectives)
        sign = -1.0 if objective[1] == "max" else 1.0
        v = _number(row["metrics"].get("objective")) if row["status"] in DONE else None
        pruned = row["status"] == "pruned"
        return (v is None, pruned, group, sign * v if v is not None else 0.0, _job_num(row["path"]), row["job"])

    return key


def summarize(sweep_dir: Path) -> dict:
    """Everything the two summary files show: rows, varying keys, seed groups."""
    rows = [read_job(j) for j in find_jobs(sweep_dir)]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r["params"] if k not in keys]
    varying = [k for k in keys if len({r["params"].get(k) for r in rows}) > 1]
    common = [f"{k}={rows[0]['params'][k]}" for k in keys if k not in varying and rows]
    monitors = [_objective_of(r) for r in rows if r["metrics"].get("monitor")]
    objectives = sorted(set(monitors), key=lambda o: (-monitors.count(o), monitors.index(o)))
    objective = objectives[0] if objectives else (None, "min")
    rows.sort(key=_rank_key(objectives))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
        r["columns"] = flat_metrics(r["metrics"]) if r["metrics"] else {}
    return {
        "dir": Path(sweep_dir),
        "rows": rows,
        "varying": varying,
        "common": common,
        "objective": objective,
        "objectives": objectives,
        "groups": seed_groups(rows, varying, objective),
        "fold_groups": fold_groups(rows, varying, objective),
    }


def seed_groups(rows: list[dict], varying: list[str], objective: tuple[str, str], key: str = SEED_KEY) -> list[dict]:
    """Jobs equal in everything but the seed (or ``key``), with mean and std of every metric of their
    completed runs.  Empty unless some setting was run with more than one seed."""
    if key not in varying:
        return []
    setting_keys = [k for k in varying if k != key]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r["params"].get(k) for k in setting_keys), []).append(r)
    out = []
    for setting, members in groups.items():
        done = [r for r in members if r["status"] in DONE]
        names = [k for k in (done[0]["columns"] if done else {}) if k not in ("best_epoch", "epochs")]
        stats = {}
        for name in names:
            values = [v for r in done if (v := _number(r["columns"].get(name))) is not None]
            if values:
                stats[name] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)
        out.append(
            {
                "setting": dict(zip(setting_keys, setting)),
                "jobs": [r["job"] for r in members],
                "seeds": [r["params"].get(key) for r in members],
                "n": len(members),
                "completed": len(done),
                "stats": stats,
            }
        )
    metric = f"{objective[0]} (best)"
    sign = -1.0 if objective[1] == "max" else 1.0
    out.sort(key=lambda g: (metric not in g["stats"], sign * g["stats"][metric][0] if metric in g["stats"] else 0.0))
    return out


# ----------------------------------------------------------------------------- writing
def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _value(v: str) -> str:
    """An override value, shortened when it is a long float (Optuna's samples)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f"{f:.4g}" if len(v) > 8 and not v.lstrip("-").isdigit() else v


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_csv(s: dict) -> str:
    metric_cols: list[str] = []
    for r in s["rows"]:
        metric_cols += [c for c in r["columns"] if c not in metric_cols]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", "job", *s["varying"], "status", "attempts", *metric_cols, "error", "overrides", "dir"])
    for r in s["rows"]:
        w.writerow(
            [
                r["rank"],
                r["num"],
                *(r["params"].get(k, "") for k in s["varying"]),
                r["status"],
                r["attempts"],
                *("" if (v := r["columns"].get(c)) is None else v for c in metric_cols),
                r["error"],
                " ".join(r["overrides"]),
                r["job"],
            ]
        )
    return buf.getvalue()


def to_markdown(s: dict) -> str:
    rows, varying = s["rows"], s["varying"]
    monitor, mode = s["objective"]
    counts = {st: sum(r["status"] == st for r in rows) for st in dict.fromkeys(r["status"] for r in rows)}
    lines = [
        f"# Sweep summary: {_shown(s['dir'])}",
        "",
        f"{len(rows)} job(s): "
        + ", ".join(f"{n} {st}" for st, n in counts.items())
        + ".  "
        + (f"Objective: {monitor} ({mode}), best first." if monitor else "No job has reported metrics yet."),
    ]
    mixed = len(s["objectives"]) > 1  # jobs of different tasks: each ranked under its own objective
    if mixed:
        lines[-1] = (
            lines[-1].split("Objective:")[0]
            + "Objectives: "
            + ", ".join(f"{m} ({md})" for m, md in s["objectives"])
            + "; jobs ranked within each, best first."
        )
    if s["common"]:
        lines.append(f"Common to every job: `{' '.join(s['common'])}`.")
    test_cols: list[str] = []
    for r in rows:
        test_cols += [c for c in r["columns"] if c.startswith("test/") and c not in test_cols]
    obj_col = f"{monitor or 'objective'} (best)"
    objective_head = ["monitor", "best"] if mixed else [obj_col]
    retried = any(r["attempts"] != 1 for r in rows)
    status_head = ["status", "attempts"] if retried else ["status"]
    head = [
        "rank",
        "job",
        *varying,
        *status_head,
        *objective_head,
        "best epoch",
        "epochs",
        *test_cols,
        "train s",
        "error",
    ]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        c = r["columns"]
        own = _objective_of(r)[0]
        cells = [
            r["rank"],
            r["num"],
            *(_value(r["params"].get(k, "")) for k in varying),
            r["status"],
            *([r["attempts"]] if retried else []),
            *([own or "", c.get(f"{own} (best)")] if mixed else [c.get(obj_col)]),
            c.get("best_epoch"),
            c.get("epochs"),
            *(c.get(t) for t in test_cols),
            c.get("train_time_s"),
            r["error"],
        ]
        lines.append("| " + " | ".join(_cell(_fmt(v)) for v in cells) + " |")
    if s["groups"]:
        keys = [k for k in varying if k != SEED_KEY]
        stat_cols = [obj_col, *test_cols, "train_time_s"]
        head = [*keys, "seeds", "completed", *(f"{c} mean ± std" for c in stat_cols)]
        lines += ["", "## Mean ± std over seeds", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for g in s["groups"]:
            stats = [g["stats"].get(c) for c in stat_cols]
            cells = [
                *(g["setting"].get(k, "") for k in keys),
                ",".join(map(str, g["seeds"])),
                f"{g['completed']}/{g['n']}",
                *("" if st is None else f"{_fmt(st[0])} ± {_fmt(st[1]) if st[1] is not None else '-'}" for st in stats),
            ]
            lines.append("| " + " | ".join(_cell(str(v)) for v in cells) + " |")
    lines += fold_section(s)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- cross-validation
def fold_groups(rows: list[dict], varying: list[str], objective: tuple[str, str]) -> list[dict]:
    """k-fold cross-validation: jobs that differ only in ``dataset.fold``, one group per setting of the
    sweep's other keys, with mean and std over its finished folds."""
    return seed_groups(rows, varying, objective, key=FOLD_KEY)


def _mean_std(st) -> str:
    return "" if st is None else f"{_fmt(st[0])} ± {_fmt(st[1]) if st[1] is not None else '-'}"


def fold_stat_columns(s: dict) -> list[str]:
    """The objective, every test metric and the training time: what a fold's mean ± std is given for."""
    cols = [f"{s['objective'][0] or 'objective'} (best)"]
    for g in s["fold_groups"]:
        cols += [c for c in g["stats"] if c.startswith("test/") and c not in cols]
    return [*cols, "train_time_s"]


def fold_section(s: dict) -> list[str]:
    """The summary's "Mean ± std over folds" table: one row per setting (the sweep's other keys)."""
    if not s.get("fold_groups"):
        return []
    keys = [k for k in s["varying"] if k != FOLD_KEY]
    cols = fold_stat_columns(s)
    head = [*keys, "folds", "completed", *(f"{c} mean ± std" for c in cols)]
    lines = ["", "## Mean ± std over folds", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in s["fold_groups"]:
        folds = sorted(g["seeds"], key=lambda v: (len(str(v)), str(v)))  # 0,1,...,9,10: in numeric order
        cells = [*(g["setting"].get(k, "") for k in keys), ",".join(map(str, folds))]
        cells += [f"{g['completed']}/{g['n']}", *(_mean_std(g["stats"].get(c)) for c in cols)]
        lines.append("| " + " | ".join(_cell(str(v)) for v in cells) + " |")
    return lines


def log_folds(s: dict) -> None:
    """One console line per cross-validated setting: its folds' mean ± std."""
    cols = fold_stat_columns(s)[:-1]
    for g in s.get("fold_groups") or []:
        setting = " ".join(f"{k}={v}" for k, v in g["setting"].items())
        stats = ", ".join(f"{c} {_mean_std(g['stats'][c])}" for c in cols if c in g["stats"])
        log.info(
            "cross-validation%s: %s over %d/%d folds", f" {setting}" if setting else "", stats, g["completed"], g["n"]
        )


def write_cv(sweep_dir: Path, s: dict) -> None:
    """``oof_predictions.csv`` of a cross-validation sweep (:mod:`mlptrain.oof`)."""
    path = write_oof(Path(sweep_dir), s["rows"], [k for k in s["varying"] if k != FOLD_KEY])
    if path is not None:
        log.info("out-of-fold predictions: %s", path)


def write_summary(sweep_dir: Path, s: dict | None = None) -> dict:
    """(Re)write ``summary.csv`` and ``summary.md`` in ``sweep_dir``; returns the summary."""
    s = s or summarize(Path(sweep_dir))
    # atomic: parallel jobs may rewrite the summary at the same moment
    write_text(Path(sweep_dir) / "summary.csv", to_csv(s), "sweep summary")
    write_text(Path(sweep_dir) / "summary.md", to_markdown(s), "sweep summary")
    return s


def failures(s: dict) -> list[str]:
    return [
        f"{r['num']}: {r['error'] or r['status']}"
        for r in sorted(s["rows"], key=lambda r: _job_num(r["path"]))
        if r["status"] not in DONE
    ]


# ----------------------------------------------------------------------------- Hydra callback
class SweepSummary(Callback):
    """Keeps ``summary.csv``/``summary.md`` of a multirun up to date (see the module docstring)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from mlptrain import continuation
        from mlptrain.errors import EXIT_BAD_INPUT, ConfigError, printable

        failed_jobs.clear()
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = config.hydra.overrides
        try:  # a folder holding this sweep already is continued; one holding another sweep is refused
            continuation.check_same_sweep(sweep_dir, list(overrides.task), list(overrides.hydra))
        except ConfigError as e:
            print(f"mlptrain: error: {printable(str(e))}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        continuation.current[:] = [continuation.continue_command(sweep_dir, overrides.task, overrides.hydra)]
        if not (sweep_dir / continuation.RECORD).is_file():  # the basic sweeper writes it, Optuna's does not
            from omegaconf import OmegaConf

            sweep_dir.mkdir(parents=True, exist_ok=True)
            write_text(sweep_dir / continuation.RECORD, OmegaConf.to_yaml(config), "sweep record")

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:  # an unexpected exception: leave it beside the run
            err = job_return._return_value
            if not isinstance(err, TrialFailed):  # a TrialFailed job has recorded its own one-line error
                record_failure(job_dir, f"{type(err).__name__}: {err}".splitlines()[0])
        self._write(_sweep_dir_of(config, job_dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        s = self._write(Path(config.hydra.sweep.dir))
        if s is not None:  # this sweep's failures, for the exit code
            # every job in the folder is this sweep's (check_same_sweep), skipped ones included; the folder
            # is the record (a job that failed and then succeeded on a retry is not a failure)
            failed_jobs[:] = failures(s)
            log.info("sweep summary: %s", Path(config.hydra.sweep.dir) / "summary.md")
            try:
                write_cv(Path(config.hydra.sweep.dir), s)
                log_folds(s)
            except Exception as e:  # like the summary, never a reason to fail the sweep
                log.warning("out-of-fold predictions not written: %s", e)

    @staticmethod
    def _write(sweep_dir: Path) -> dict | None:
        try:
            return write_summary(sweep_dir)
        except Exception as e:  # a summary problem must never fail the sweep
            log.warning("sweep summary not written: %s", e)
            return None


def _sweep_dir_of(config, job_dir: Path) -> Path:
    """The sweep folder of a job: its folder minus ``hydra.sweep.subdir``.  (Resolving
    ``hydra.sweep.dir`` itself in a launcher's worker could run its resolvers again.)"""
    try:
        subdir, text = str(config.hydra.sweep.subdir), str(job_dir)
        if subdir and text.endswith(subdir) and len(text) > len(subdir):
            return Path(text[: -len(subdir)])
    except Exception:
        pass
    return job_dir.parent


def _shown(path: Path) -> str:
    """A folder as the user would type it: relative to the working directory when inside it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


# ----------------------------------------------------------------------------- mlptrain-summary
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="mlptrain-summary",
        description="Write summary.csv and summary.md for a sweep folder "
        "(finished, failed or interrupted) and print the table.",
    )
    ap.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. outputs/multirun/2024-01-01/12-00-00")
    args = ap.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"mlptrain-summary: error: {args.sweep_dir}: no such folder", file=sys.stderr)
        sys.exit(2)
    sweeps = sweeps_under(args.sweep_dir)
    if not sweeps:
        print(
            f"mlptrain-summary: error: {args.sweep_dir}: no job folders (with .hydra/overrides.yaml) under it",
            file=sys.stderr,
        )
        sys.exit(2)
    if len(sweeps) > 1:  # their job numbers collide and their objectives differ: one sweep at a time
        shown = ", ".join(_shown(d) for d in sweeps[:3]) + (", ..." if len(sweeps) > 3 else "")
        print(
            f"mlptrain-summary: error: {args.sweep_dir} holds {len(sweeps)} sweeps ({shown}); "
            "summarise one sweep folder at a time",
            file=sys.stderr,
        )
        sys.exit(2)
    args.sweep_dir = sweeps[0]  # the sweep itself, when the folder given only holds it
    s = summarize(args.sweep_dir)
    write_summary(args.sweep_dir, s)
    write_cv(args.sweep_dir, s)
    print(to_markdown(s), end="")


command = console(main)  # the console script (mlptrain.quick_exit)

if __name__ == "__main__":
    command()

"""A cross-validation sweep's ``oof_predictions.csv``: every cross-validated row once, predicted by the
model of the fold that held it out.

Gathered from the ``val_predictions.csv`` each fold's job writes in its own folder (:mod:`mlptrain.training.folds`),
so it is the same whichever launcher ran the jobs, and a continued sweep rewrites it from what is on disk.
A setting (the sweep's other keys: ``optim=sgd,adam x dataset.fold=range(5)`` has two) is written once each
of its folds has finished; its rows are sorted by their row number in the table, and the setting's keys
lead each row.  Torch-free.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from mlptrain.files import write_text

log = logging.getLogger("mlptrain")

FOLD_KEY = "dataset.fold"
FILE = "oof_predictions.csv"
PER_FOLD = "val_predictions.csv"  # mlptrain.training.folds.FILE (the core layer's name, not imported: torch)
DONE = ("completed", "early_stopped")


def _folds_of(job: Path) -> int | None:
    import yaml

    try:
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text()) or {}
        return int((cfg.get("dataset") or {}).get("folds") or 0) or None
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return None


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return (rows[0], rows[1:]) if rows else ([], [])


def gather(jobs: list[dict], setting_keys: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes) of the out-of-fold table from the summary's job rows (``params``, ``status``,
    ``path``); a note says why a setting is left out (a fold unfinished, a row held out twice)."""
    groups: dict[tuple, list[dict]] = {}
    for r in jobs:
        if FOLD_KEY in r["params"]:
            groups.setdefault(tuple(r["params"].get(k, "") for k in setting_keys), []).append(r)
    header: list[str] = []
    out: list[tuple[tuple, int, dict]] = []
    notes: list[str] = []
    for setting, members in groups.items():
        name = " ".join(f"{k}={v}" for k, v in zip(setting_keys, setting)) or "the sweep"
        folds = _folds_of(members[0]["path"])
        done = {r["params"][FOLD_KEY]: r for r in members if r["status"] in DONE and (r["path"] / PER_FOLD).is_file()}
        missing = [str(k) for k in range(folds or 0) if str(k) not in done]
        if not folds or missing:
            notes.append(f"{name}: fold(s) {', '.join(missing) or '?'} not finished")
            continue
        rows: dict[int, dict] = {}
        twice = None
        for k in range(folds):
            cols, cells = _read(done[str(k)]["path"] / PER_FOLD)
            header += [c for c in cols if c not in header]
            for cell in cells:
                row = dict(zip(cols, cell))
                n = int(row["row"])
                if n in rows and twice is None:  # folds of different tables or seeds: no out-of-fold set
                    twice = f"{name}: row {n} is in the validation part of folds {rows[n]['fold']} and {k}"
                rows[n] = row
        if twice:
            notes.append(twice)
        else:
            out += [(setting, n, rows[n]) for n in sorted(rows)]
    columns = [*setting_keys, *header]
    table = [[*setting, *(row.get(c, "") for c in header)] for setting, _, row in out]
    return columns, table, notes


def write_oof(sweep_dir: Path, jobs: list[dict], setting_keys: list[str]) -> Path | None:
    """Write ``oof_predictions.csv`` (atomically) when the sweep is a cross-validation with a finished
    setting; returns its path, or None."""
    if not any(FOLD_KEY in r["params"] for r in jobs):
        return None
    columns, table, notes = gather(jobs, setting_keys)
    for note in notes:
        log.info("oof_predictions: %s; left out", note)
    if not table:
        return None
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(table)
    path = Path(sweep_dir) / FILE
    write_text(path, buf.getvalue(), "out-of-fold predictions")
    return path

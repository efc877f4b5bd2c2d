"""Shared test helpers: compose configs exactly as the CLI does, and run the real command."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

# Tiny but real: every option of every group runs end to end in well under a second.
TINY = ["trainer.epochs=1", "dataset.n_samples=120", "model.hidden=[8]", "trainer.progress=none"]


@pytest.fixture
def make_cfg():
    """``make_cfg(*overrides)`` -> the composed DictConfig (the CLI's defaults plus overrides)."""

    def _make(*overrides: str):
        with initialize_config_module(config_module="mlptrain.configs", version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _make


@pytest.fixture
def train(make_cfg, tmp_path):
    """``train(*overrides, out=None)`` -> metrics dict of a real in-process run (tiny by default)."""
    from mlptrain.cli import run

    def _train(*overrides: str, out: Path | None = None, tiny: bool = True):
        cfg = make_cfg(*(TINY if tiny else []), *overrides)
        out = out or tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        return run(cfg, out)

    return _train


def python(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 240, **popen
) -> subprocess.CompletedProcess:
    """``python args...`` in a subprocess, output captured, as a user's shell would start it (no HYDRA_FULL_ERROR).

    ``popen``: more arguments of subprocess.run (``preexec_fn``, ``start_new_session``)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    argv = [sys.executable, *args]
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, **popen)


def mlptrain(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 240, preexec_fn=None
) -> subprocess.CompletedProcess:
    """Run the real command (``python -m mlptrain``) in a subprocess (``preexec_fn``: run in the child first)."""
    return python("-m", "mlptrain", *args, cwd=cwd, env=env, timeout=timeout, preexec_fn=preexec_fn)


def metrics_csv(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a run's metrics.csv (trainer.loggers=[...,csv])."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def assert_csv_is_the_history(run_dir: Path) -> None:
    """metrics.csv holds metrics.json's history row for row, value for value, then its test metrics."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    header, rows = metrics_csv(run_dir)
    test = {f"test/{k}": v for k, v in metrics["test"].items()}
    assert header == list(metrics["history"][0]) + list(test)
    number = lambda cell: int(cell) if cell.lstrip("-").isdigit() else float(cell)  # noqa: E731
    nan_safe = lambda rows: [
        {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}  # noqa: E731
        for r in rows
    ]
    got = [{k: number(v) for k, v in r.items() if v != ""} for r in rows]
    expected = [*metrics["history"], {"epoch": metrics["epochs"], "step": metrics["steps"], **test}]
    assert nan_safe(got) == nan_safe(expected)


def call(main, *argv: str) -> tuple[int, str, str]:
    """Run a console script's main in-process; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def refused_in_process(*args: str) -> tuple[int, str, str]:
    """``mlptrain args...`` run by the command's own ``main`` in this process: (exit code, stdout, stderr).

    For input the command refuses before Hydra runs (precompose, the resume checks), the same code path as
    the subprocess without a fresh interpreter; the CLI tests keep a subprocess case of each such path."""
    from mlptrain.cli import train as command

    def not_refused():
        raise AssertionError(f"mlptrain {' '.join(args)} was not refused before Hydra runs")

    saved, hydra_main = sys.argv[:], command._hydra_main
    sys.argv, command._hydra_main = ["mlptrain", *args], not_refused
    try:
        return call(lambda _: command.main())
    finally:
        sys.argv, command._hydra_main = saved, hydra_main


TIMING = {"time_s", "samples_per_s", "train_time_s"}  # wall-clock fields, which no two runs share


def untimed(value):
    """metrics.json without the wall-clock fields."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


@pytest.fixture
def keep_threads():
    """Restore torch's thread count: trainer.num_threads=1 in an in-process run sets it process-wide."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)

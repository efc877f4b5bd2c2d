"""TensorBoard as users see it: its own HParams data (served by a real ``tensorboard`` on 127.0.0.1)
and the event files' tags, for a sweep, a regression run and a mix of both under one logdir."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY, mlptrain

STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@contextlib.contextmanager
def tensorboard(logdir: Path):
    """A real TensorBoard over ``logdir`` (its default loader) on a free port; yields a POST helper."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def post(path: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"}
        req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
        return json.loads(urllib.request.urlopen(req, timeout=30).read())

    try:
        for _ in range(600):  # up to a minute on a loaded machine
            try:
                urllib.request.urlopen(base + "/data/runs", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "tensorboard exited"
                time.sleep(0.1)
        yield post
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def hparams_view(post) -> tuple[dict, list[dict]]:
    """The HParams plugin's experiment and its session groups, once every run is loaded."""
    for _ in range(300):
        exp = post("/data/plugin/hparams/experiment", {"experimentName": ""})
        cols = [{"hparam": h["name"], "includeInResult": True} for h in exp.get("hparamInfos", [])]
        cols += [{"metric": m["name"], "includeInResult": True} for m in exp.get("metricInfos", [])]
        body = {"experimentName": "", "allowedStatuses": STATUSES, "colParams": cols, "startIndex": 0}
        groups = post("/data/plugin/hparams/session_groups", {**body, "sliceSize": 100}).get("sessionGroups", [])
        if len(groups) == 3 and all(len(g["metricValues"]) > 1 for g in groups):
            return exp, groups
        time.sleep(0.2)  # TensorBoard is still reading the event files
    raise AssertionError(f"TensorBoard never showed the three runs: {exp}")


def test_a_mixed_logdir_shows_every_runs_columns_with_the_swept_ones_first(tmp_path):
    sweep = mlptrain("-m", *TINY, "optim=sgd,adam", "trainer.num_threads=1", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    single = mlptrain(*TINY, "dataset=sine", "loss=gaussian_nll", "trainer.num_threads=1", cwd=tmp_path)
    assert single.returncode == 0, single.stderr

    with tensorboard(tmp_path / "outputs") as post:
        exp, groups = hparams_view(post)

    infos = {h["name"]: h for h in exp["hparamInfos"]}
    # what varies across the logdir is marked so (TensorBoard shows those columns first) ...
    assert {k for k, h in infos.items() if h["differs"]} == {"optim", "optim.lr", "dataset", "loss"}
    assert [h["differs"] for h in exp["hparamInfos"]][:4] == [True] * 4
    # ... execution-only keys are no column, and integers read as integers
    assert "trainer.num_threads" not in infos and "trainer.progress" not in infos
    assert infos["seed"]["type"] == "DATA_TYPE_STRING" and infos["seed"]["domainDiscrete"] == ["0"]
    # every run's metrics: the monitored ones first, the regression run's columns included
    tags = [m["name"]["tag"] for m in exp["metricInfos"]]
    assert tags[0] == "hparam/best_val_nll" and tags[-1] == "hparam/train_time_s"  # both tasks monitor the nll
    assert {"hparam/test_acc", "hparam/test_rmse", "hparam/test_r2", "hparam/test_coverage95"} <= set(tags)
    assert [m["displayName"] for m in exp["metricInfos"]][:1] == ["best val/nll"]
    # one row per run, each with its own task's values
    by_loss = {}
    for g in groups:
        by_loss.setdefault(g["hparams"]["loss"], []).append({v["name"]["tag"] for v in g["metricValues"]})
    assert len(by_loss["cross_entropy"]) == 2 and len(by_loss["gaussian_nll"]) == 1  # loss=auto, as resolved
    (regression,) = by_loss["gaussian_nll"]
    assert {"hparam/test_rmse", "hparam/test_coverage95", "hparam/best_val_nll"} <= regression
    assert "hparam/test_nll" not in regression  # the Gaussian NLL's loss is its nll: one column, not two
    assert all("hparam/test_nll" not in m for m in by_loss["cross_entropy"])  # cross-entropy: its loss
    # auto values as resolved, integers as integers (TINY sets the epochs, the batch size is auto)
    assert {g["hparams"]["trainer.batch_size"] for g in groups} == {"32"}
    assert {g["hparams"]["trainer.epochs"] for g in groups} == {"1"}

    # a single run's folder is named after its overrides, execution-only keys left out
    (run,) = [p for p in (tmp_path / "outputs").glob("20*/*") if p.is_dir()]
    assert run.name.endswith("_epochs-1_n_samples-120_hidden-8_dataset-sine_loss-gaussian_nll")


def test_name_key_names_a_single_runs_folder(tmp_path):
    r = mlptrain(*TINY, "name=baseline", "trainer.loggers=[]", "trainer.checkpoint=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run,) = [p for p in (tmp_path / "outputs").glob("20*/*") if p.is_dir()]
    assert run.name.endswith("_baseline")


def test_run_names_are_bounded_safe_and_leave_execution_keys_out():
    from mlptrain.naming import run_name, run_suffix

    assert run_name(["optim=sgd", "trainer.num_threads=1", "trainer.device=cpu", "optim.lr=0.1"]) == "optim-sgd_lr-0.1"
    assert run_name(["model.hidden=[64,64]"]) == "hidden-64-64"
    assert run_suffix(["trainer.progress=none"]) == "" and run_suffix(["name=a/b c"]) == "_a-b-c"
    long = run_name([f"dataset.path=/x/{'y' * 99}", *(f"model.k{i}={i}" for i in range(40))])
    shorter = run_name([f"model.k{i}={i}" for i in range(39)])
    assert len(long) <= 64 and re.fullmatch(r"[A-Za-z0-9._-]+", long) and long != shorter


@pytest.fixture
def events(tmp_path):
    def read(run_dir: Path):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0, "tensors": 0})
        acc.Reload()
        return acc

    return read


def test_no_series_twice_and_the_config_as_resolved_yaml(train, events, tmp_path):
    train("trainer.epochs=2", out=tmp_path / "ce")
    acc = events(tmp_path / "ce")
    scalars = set(acc.Tags()["scalars"])
    assert {"val/loss", "train/loss", "val/acc", "lr", "step/lr"} <= scalars
    assert not {"val/nll", "lr/step", "hparam/test_nll"} & scalars  # cross-entropy: nll == loss
    (config,) = [e for e in acc.Tensors("config/text_summary")]
    text = config.tensor_proto.string_val[0].decode()
    assert "device: cpu" in text and "monitor: nll" in text and "mode: min" in text and "{" not in text

    train("dataset=sine", "loss=gaussian_nll", out=tmp_path / "nll")
    scalars = set(events(tmp_path / "nll").Tags()["scalars"])
    assert {"val/loss", "train/loss", "hparam/test_loss", "hparam/best_val_nll"} <= scalars  # loss == nll: loss
    assert not {"val/nll", "hparam/test_nll"} & scalars

    train("dataset=sine", "loss=mse", out=tmp_path / "mse")  # a loss that is not the nll keeps both
    assert {"val/loss", "val/nll"} <= set(events(tmp_path / "mse").Tags()["scalars"])

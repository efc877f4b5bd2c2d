"""trainer.precision and trainer.compile: safe on CPU, one clear line where unsupported.

The real inductor compile takes 15 s (quiet) to over 2 min (loaded) on 2 cores, so the suite
compiles with dynamo's ``eager`` backend and a failing test backend; the inductor run is opt-in
(MLPTRAIN_SLOW_TESTS=1).  GPU tests skip without CUDA.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from mlptrain import checkpoint
from mlptrain.config import ConfigError

SLOW = pytest.mark.skipif(
    not os.environ.get("MLPTRAIN_SLOW_TESTS"),
    reason="inductor compile takes 15-130 s on 2 cores; set MLPTRAIN_SLOW_TESTS=1",
)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
EPOCHS = ["trainer.epochs=2"]


def test_bf16_autocasts_on_cpu(train, tmp_path):
    fp32 = train(*EPOCHS)
    bf16 = train(*EPOCHS, "trainer.precision=bf16", out=tmp_path / "bf16")
    a, b = fp32["final"]["train/loss"], bf16["final"]["train/loss"]
    assert a != b, "bf16 gave bit-identical losses: autocast did not run"
    assert abs(a - b) < 0.05 and bf16["status"] == "completed"
    assert checkpoint.load(tmp_path / "bf16" / "last.pt")["scaler"] == {}


def test_fp16_on_cpu_uses_a_grad_scaler(train, tmp_path):
    fp32 = train(*EPOCHS)
    fp16 = train(*EPOCHS, "trainer.precision=fp16", out=tmp_path / "fp16")
    assert abs(fp32["final"]["train/loss"] - fp16["final"]["train/loss"]) < 0.05
    scaler = checkpoint.load(tmp_path / "fp16" / "last.pt")["scaler"]
    assert scaler["scale"] > 0 and scaler["_growth_tracker"] >= 1  # it stepped, and resume restores it


def test_fp16_skip_batch_keeps_the_scaler_consistent(make_cfg, tmp_path):
    # A skipped batch used to leave the scaler mid-step (unscaled), so the next step raised.
    import dataclasses

    from conftest import TINY
    from mlptrain.config import parse
    from mlptrain.data import load_dataset
    from mlptrain.training import Trainer

    run = parse(make_cfg(*TINY, "trainer.precision=fp16", "trainer.nan_policy=skip_batch", "trainer.batch_size=16"))
    data = load_dataset(run.dataset)
    x = data.x_train.clone()
    x[0] = float("nan")  # one poisoned row: its batch gives a NaN loss and is skipped
    m = Trainer(run, tmp_path, data=dataclasses.replace(data, x_train=x)).fit()
    assert m["status"] == "completed" and m["steps"] == -(-len(x) // 16) - 1


def test_precision_unavailable_on_a_device_is_a_config_error():
    from contextlib import nullcontext

    from mlptrain.accel import autocast_for

    with pytest.raises(
        ConfigError, match=r"^trainer.precision: bf16 autocast is not available on meta; valid here: fp32"
    ):
        autocast_for("bf16", torch.device("meta"))
    assert autocast_for("fp32", torch.device("meta")) is nullcontext


def test_compile_trains_and_checkpoints_like_eager(train, tmp_path):
    eager = train(*EPOCHS)
    compiled = train(*EPOCHS, "trainer.compile=true", "trainer.compile_backend=eager", out=tmp_path / "c")
    # dynamo's eager backend runs the traced graph with the same kernels: identical numbers
    assert compiled["history"][-1]["train/loss"] == eager["history"][-1]["train/loss"]
    assert compiled["test"] == eager["test"]
    state = checkpoint.load(tmp_path / "c" / "best.pt")["model"]
    assert not any(k.startswith("_orig_mod") for k in state)  # the plain module's weights, loadable anywhere


def test_compile_failure_falls_back_to_eager_with_one_warning(train, tmp_path, caplog):
    from torch._dynamo import list_backends, register_backend

    if "mlptrain_test_broken" not in list_backends(exclude_tags=()):

        @register_backend
        def mlptrain_test_broken(gm, example_inputs):  # what a missing C++ compiler looks like to dynamo
            raise RuntimeError("no working C++ compiler found")

    eager = train(*EPOCHS)
    with caplog.at_level(logging.WARNING, logger="mlptrain"):
        m = train(*EPOCHS, "trainer.compile=true", "trainer.compile_backend=mlptrain_test_broken", out=tmp_path / "b")
    warnings = [r.getMessage() for r in caplog.records if "trainer.compile" in r.getMessage()]
    assert len(warnings) == 1 and "training without it" in warnings[0] and "C++ compiler" in warnings[0]
    assert m["test"] == eager["test"]


def test_unknown_compile_backend_names_the_valid_ones(train):
    with pytest.raises(
        ConfigError, match=r"trainer.compile_backend: unknown backend 'nope'; valid choices: .*inductor"
    ):
        train("trainer.compile=true", "trainer.compile_backend=nope")


def test_bad_compile_mode_is_rejected_before_torch(make_cfg):
    from mlptrain.config import parse

    with pytest.raises(ConfigError, match="trainer.compile_mode: unknown value 'fast'; valid choices: default"):
        parse(make_cfg("trainer.compile_mode=fast"))


@SLOW
def test_inductor_compile_on_cpu(train, tmp_path):
    eager = train(*EPOCHS)
    m = train(*EPOCHS, "trainer.compile=true", out=tmp_path / "inductor")
    assert abs(m["final"]["train/loss"] - eager["final"]["train/loss"]) < 1e-4
    assert json.loads((tmp_path / "inductor" / "metrics.json").read_text())["status"] == "completed"


@CUDA
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda(train, precision):
    fp32 = train(*EPOCHS, "trainer.device=cuda")
    m = train(*EPOCHS, "trainer.device=cuda", f"trainer.precision={precision}")
    assert abs(m["final"]["train/loss"] - fp32["final"]["train/loss"]) < 0.05


@CUDA
def test_compile_on_cuda(train):
    m = train(*EPOCHS, "trainer.device=cuda", "trainer.compile=true")
    assert m["status"] == "completed"

"""A resume whose last.pt is corrupt falls back to the newest intact checkpoint it keeps (best.pt, or
last.prev.pt: the last.pt before the newest one), says so in one line, and continues exactly."""

from __future__ import annotations

import os

import pytest
import torch

from mlptrain import checkpoint
from test_checksum import MISMATCH, fit, flip_tensor_bytes

pytestmark = pytest.mark.usefixtures("keep_threads")
# a per-epoch schedule (a resume may train longer); a checkpoint after every epoch (not at most one per 30 s)
ARGS = ["trainer.batch_size=32", "scheduler=none", "trainer.checkpoint_interval_s=0"]


def test_a_corrupt_last_pt_falls_back_to_last_prev_pt_and_resumes_exactly(make_cfg, tmp_path, caplog):
    whole = fit(make_cfg, tmp_path / "whole", *ARGS, "trainer.epochs=3")
    run = tmp_path / "run"
    fit(make_cfg, run, *ARGS, "trainer.epochs=2")
    last, best, prev = run / "last.pt", run / "best.pt", run / "last.prev.pt"
    assert os.path.samefile(best, last)  # epoch 2 improved: best.pt is last.pt, damaged with it
    assert checkpoint.load(prev)["epoch"] == 1 and checkpoint.load(last)["epoch"] == 2
    step = checkpoint.load(prev)["step"]
    flip_tensor_bytes(last)
    with caplog.at_level("WARNING", logger="mlptrain"):
        metrics = fit(make_cfg, run, *ARGS, "trainer.epochs=3", f"trainer.resume={run}")
    warned = [r.getMessage() for r in caplog.records if "instead" in r.getMessage()]
    assert warned == [
        f"{last} is corrupt: {MISMATCH}; resuming from {prev} instead (epoch 1, step {step}): "
        "what was trained after it is trained again"
    ]
    assert metrics["status"] == "completed" and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    # exact: the same weights as the run that was never damaged
    a, b = checkpoint.load(tmp_path / "whole" / "last.pt")["model"], checkpoint.load(last)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics["history"][-1]["val/loss"] == whole["history"][-1]["val/loss"]
    assert checkpoint.load(prev)["epoch"] == 2  # rotated again by the resumed run's writes

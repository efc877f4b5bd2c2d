"""Checkpoints carry a sha256 of their contents, checked on every load: bytes changed inside the tensor
data of a well-formed file are one line naming the file, and a resume whose last.pt is corrupt falls
back to the newest intact checkpoint (best.pt) and says so."""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from conftest import TINY, call
from mlptrain import checkpoint
from mlptrain.errors import CheckpointError
from mlptrain.evaluate import eval_main

pytestmark = pytest.mark.usefixtures("keep_threads")
MISMATCH = "its contents do not match the checksum written with it"


def flip_tensor_bytes(path: Path, entry: str = "data/0") -> None:
    """Change bytes in the middle of one tensor's storage; the zip and the pickle stay well-formed."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/" + entry))
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size >= 8
    middle = start + info.file_size // 2
    raw[middle : middle + 4] = bytes(b ^ 0x5A for b in raw[middle : middle + 4])
    path.write_bytes(bytes(raw))
    checkpoint.load(path, mmap=True)  # still a loadable file: only its numbers changed


def fit(make_cfg, out: Path, *args: str) -> dict:
    """A tiny in-process run, with its overrides in its checkpoints as the command line puts them."""
    from mlptrain.cli import run

    return run(make_cfg(*TINY, *args), out, overrides=[*TINY, *args])


def test_a_checksum_is_written_and_checked(train, tmp_path):
    run = tmp_path / "run"
    train(out=run)
    ck = checkpoint.load(run / "last.pt")
    assert len(ck["sha256"]) == 64 and ck["sha256"] == checkpoint.digest(ck)
    shutil.copy(run / "last.pt", tmp_path / "bad.pt")
    flip_tensor_bytes(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(tmp_path / "bad.pt")
    assert str(e.value) == f"{tmp_path / 'bad.pt'} is corrupt: its contents do not match the checksum written with it"


def test_eval_of_a_corrupt_checkpoint_is_one_line(train, tmp_path):
    run = tmp_path / "run"
    train(out=run)
    flip_tensor_bytes(run / "best.pt")
    code, out, err = call(eval_main, str(run))
    assert code == 2 and out == ""
    assert err == f"mlptrain-eval: error: {run / 'best.pt'} is corrupt: {MISMATCH}\n"


def test_a_resume_with_a_corrupt_last_pt_falls_back_to_best_pt(make_cfg, tmp_path, caplog):
    """Epoch 2 does not improve on epoch 1 (lr 1e-12), so best.pt (epoch 1) and last.pt (epoch 2) are two
    files; last.pt corrupt, the resume continues from best.pt, trains epochs 2-3 again, and says so."""
    run = tmp_path / "run"
    args = ["trainer.epochs=2", "trainer.batch_size=128", "scheduler=none", "optim.lr=1e-12"]
    fit(make_cfg, run, *args)
    assert checkpoint.load(run / "best.pt")["epoch"] == 1 and checkpoint.load(run / "last.pt")["epoch"] == 2
    flip_tensor_bytes(run / "last.pt")
    with caplog.at_level("WARNING", logger="mlptrain"):
        metrics = fit(make_cfg, run, *args, "trainer.epochs=3", f"trainer.resume={run}")
    assert (
        f"{run / 'last.pt'} is corrupt: {MISMATCH}; resuming from {run / 'best.pt'} instead (epoch 1, step 1)"
    ) in caplog.text
    assert metrics["status"] == "completed" and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert checkpoint.load(run / "last.pt")["epoch"] == 3  # a whole new last.pt


def test_no_intact_checkpoint_is_one_line_and_blames_no_learning_rate(make_cfg, train, tmp_path):
    """After an improving last epoch best.pt is last.pt (a hard link): both corrupt, nothing to fall back
    to.  A file without a checksum whose weights are not finite is refused too, not trained on."""
    run = tmp_path / "run"
    fit(make_cfg, run)
    flip_tensor_bytes(run / "last.pt")
    with pytest.raises(CheckpointError) as e:
        fit(make_cfg, run, "trainer.epochs=2", f"trainer.resume={run}")
    assert str(e.value) == f"{run / 'last.pt'} is corrupt: {MISMATCH}; no intact checkpoint beside it to resume from"

    import torch

    ck = checkpoint.load(run / "best.pt", mmap=True)
    ck = {k: v for k, v in ck.items() if k != "sha256"}  # as written before checksums
    ck["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in ck["model"].items()}
    old = tmp_path / "old.pt"
    torch.save(ck, old)
    with pytest.raises(CheckpointError, match=r"old.pt is corrupt: model weight .* holds non-finite values$"):
        train("trainer.epochs=2", f"trainer.resume={old}", out=tmp_path / "again")


def test_checkpoints_without_a_checksum_still_load(train, tmp_path):
    import torch

    run = tmp_path / "run"
    train(*TINY, out=run)
    ck = checkpoint.load(run / "last.pt")
    del ck["sha256"]
    torch.save(ck, tmp_path / "old.pt")
    assert checkpoint.load(tmp_path / "old.pt")["epoch"] == 1

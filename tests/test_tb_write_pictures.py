"""Pictures are PNG-encoded by the TensorBoard logger's own thread: the file gets exactly the pixels,
at the time of the call, and they are on disk once the logger is flushed (before each checkpoint)."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlptrain import images
from mlptrain.loggers.tensorboard import TensorBoard


def _pictures():
    cm = torch.tensor([[50, 2, 0], [1, 40, 3], [0, 0, 60]])
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 1, 8, 8), generator=g, dtype=torch.uint8)
    y, pred = torch.arange(12) % 3, (torch.arange(12) + 1) % 3
    grid, _ = images.misclassified_grid(x, y, pred, torch.rand(12, generator=g), (1, 8, 8))
    return {"val/confusion_matrix": images.confusion_image(cm, ["a", "b", "c"]), "val/misclassified": grid}


def _decoded(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def test_pictures_are_encoded_off_the_main_thread_and_on_disk_after_flush(tmp_path, monkeypatch):
    encoders = []
    save = Image.Image.save

    def watched(self, *args, **kwargs):
        encoders.append(threading.current_thread())
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", watched)
    tb = TensorBoard(tmp_path)
    pictures = _pictures()
    before = time.time()
    for step in (1, 2):
        for tag, img in pictures.items():
            tb.image(tag, img, step)
    tb.image("float/picture", torch.full((3, 5, 7), 0.5), 2)  # floats in [0, 1] too
    called = time.time()
    tb.flush()
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    for tag, img in pictures.items():
        events = acc.Images(tag)
        assert [e.step for e in events] == [1, 2]
        for e in events:
            assert np.array_equal(_decoded(e), img.permute(1, 2, 0).numpy())  # pixel for pixel
            assert before <= e.wall_time <= called  # the time of the call, not of the write
    assert np.all(_decoded(acc.Images("float/picture")[0]) == 128)
    assert len(encoders) == 5 and threading.main_thread() not in encoders
    tb.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("mlptrain-pictures")]


def test_a_picture_changed_after_the_call_is_written_as_it_was(tmp_path):
    tb = TensorBoard(tmp_path)
    img = torch.full((3, 6, 6), 0.25)
    tb.image("p", img, 1)
    img.fill_(1.0)  # (float pictures are converted, i.e. copied, by the call)
    pixels = torch.zeros(3, 6, 6, dtype=torch.uint8)
    tb.image("q", pixels.permute(0, 2, 1), 1)  # uint8 pixels in any layout are copied by the call too
    hwc = torch.zeros(6, 6, 3, dtype=torch.uint8)
    tb.image("r", hwc.permute(2, 0, 1), 1)  # (the layout of mlptrain.images' pictures)
    pixels.fill_(255)
    hwc.fill_(255)
    tb.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    assert np.all(_decoded(acc.Images("p")[0]) == 64)
    assert np.all(_decoded(acc.Images("q")[0]) == 0) and np.all(_decoded(acc.Images("r")[0]) == 0)

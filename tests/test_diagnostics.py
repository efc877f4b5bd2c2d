"""TensorBoard pictures and the look inside the network: the images themselves, and what lands
in the event file (read back with TensorBoard's own EventAccumulator)."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from conftest import TINY
from mlptrain import images


def events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def decoded(event) -> torch.Tensor:
    """An image event's PNG, decoded: (H, W, 3) uint8."""
    import numpy as np

    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")).copy())


# ----------------------------------------------------------------------------- the pictures
def _unit(img: torch.Tensor) -> torch.Tensor:
    """A picture of mlptrain.images (uint8 pixels, as its PNG stores them) as floats in [0, 1]."""
    assert img.dtype == torch.uint8 and img.dim() == 3 and img.shape[0] == 3
    return img.float() / 255


def test_decision_boundary_colours_each_side_by_its_class_and_draws_the_points():
    x = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [-1.0, 1.0], [1.0, -1.0]])
    y = torch.tensor([0, 1, 0, 1])

    def proba(p):  # class 1 right of x=0, with certainty growing away from it
        p1 = torch.sigmoid(20 * p[:, 0])
        return torch.stack([1 - p1, p1], 1)

    img = _unit(images.decision_boundary(proba, x, y, 2, size=128, max_points=0, frame=False))  # the background
    assert img.shape == (3, 128, 128)
    left, right, middle = img[:, 64, 2], img[:, 64, -3], img[:, 64, 63:65].mean(1)
    orange, blue = images.PALETTE[0], images.PALETTE[1]
    # Confident regions lean to their class colour; the boundary (p = 0.5) is white.
    assert torch.dot(left - 1, orange - 1) > 0 and torch.argmax(left) == torch.argmax(orange)
    assert torch.argmax(right) == torch.argmax(blue)
    assert torch.allclose(middle, torch.ones(3), atol=0.15)
    with_points = _unit(images.decision_boundary(proba, x, y, 2, size=128, frame=False))
    changed = (with_points != img).any(0)
    assert changed.sum() > 4 * 9  # four dots, each several pixels


def test_confusion_image_shows_every_error_however_rare():
    cm = images.confusion_matrix(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    _unit(images.confusion_image(cm))
    # one error in 1000 (0.1%) is clearly tinted, an empty cell is white; the diagonal is blue
    rare = torch.tensor([[999, 1], [0, 1000]])
    assert float(images.error_tint(torch.tensor(0.001))) >= 0.25 and float(images.error_tint(torch.tensor(0.0))) == 0
    img = _unit(images.confusion_image(rare, ["cat", "dog"]))
    cell, left, top = 64, 84, 44  # the layout for two classes
    corner = lambda i, j: img[:, top + i * cell + 3, left + j * cell + 3]  # noqa: E731 (away from the text)
    assert corner(0, 1)[0] - corner(0, 1)[2] > 0.15  # red enough to see
    assert torch.allclose(corner(1, 0), torch.ones(3)) and corner(0, 0)[2] > corner(0, 0)[0] + 0.3
    big = _unit(images.confusion_image(torch.eye(10, dtype=torch.long) * 5))
    assert big.shape[1] >= 10 * 6


@pytest.mark.parametrize("shape", [(1, 28, 28), (28, 28), (32, 32, 3), (3, 32, 32)])
def test_misclassified_grid_for_image_layouts(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, *shape), generator=g, dtype=torch.uint8)
    y = torch.arange(40) % 10
    pred = torch.where(torch.arange(40) < 20, (y + 1) % 10, y)  # the first 20 are wrong
    conf = torch.linspace(0.1, 0.9, 40)
    grid, rows = images.misclassified_grid(x, y, pred, conf, shape, max_images=16, nrow=4)
    _unit(grid)
    side = max(shape) * max(1, 56 // max(shape))  # small images are enlarged for legible labels
    assert grid.shape[1:] == (2 + 4 * (side + 2), 2 + 4 * (side + 2))
    assert [r[0] for r in rows] == list(range(19, 3, -1))  # the most confident mistakes first
    assert all(true != predicted for _, true, predicted, _ in rows)
    none, no_rows = images.misclassified_grid(x, y, y, conf, shape)
    assert none is None and no_rows == []


def test_as_images_scales_uint8_and_floats_to_unit_range():
    u8 = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    assert images.as_images(u8, (1, 4, 4)).max() == 1.0
    f = torch.randn(3, 8, 8, 3) * 50
    out = images.as_images(f, (8, 8, 3))
    assert out.shape == (3, 3, 8, 8) and float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert images.is_image_shape((1, 28, 28)) and images.is_image_shape((32, 32, 3))
    assert not images.is_image_shape((2,)) and not images.is_image_shape((10,))


def test_regression_fit_draws_the_band_only_for_probabilistic_heads():
    x = torch.linspace(-3, 3, 200)[:, None]
    y = torch.sin(x[:, 0])
    band_colour = torch.tensor([0.78, 0.86, 0.97])
    with_band = _unit(
        images.regression_fit(lambda q: (torch.sin(q[:, 0]), torch.full((len(q),), 0.3)), x, y, frame=False)
    )
    without = _unit(images.regression_fit(lambda q: (torch.sin(q[:, 0]), None), x, y, frame=False))
    for img in (with_band, without):
        assert img.shape == (3, 260, 400)
    half = 0.51 / 255  # a colour as 8-bit pixels: within half a level
    is_band = lambda img: (img - band_colour[:, None, None]).abs().amax(0) < half  # noqa: E731
    assert is_band(with_band).sum() > 400 * 10 and is_band(without).sum() == 0
    line = (without - torch.tensor([0.031, 0.318, 0.612])[:, None, None]).abs().amax(0) < half
    assert line.any(0).all()  # the mean line is unbroken across the width


# ----------------------------------------------------------------------------- in the event file
def test_images_histograms_and_internals_reach_tensorboard(train, tmp_path):
    out = tmp_path / "run"
    train(
        "trainer.epochs=2",
        "trainer.image_every_n_epochs=1",
        "trainer.histogram_every_n_epochs=1",
        "model.hidden=[8,8]",
        out=out,
    )
    tags = events(out).Tags()
    assert {"images/decision_boundary", "val/confusion_matrix", "test/confusion_matrix"} <= set(tags["images"])
    for layer in ("layer1", "layer2", "output"):
        expected = {f"weights/{layer}.weight", f"weights/{layer}.bias", f"weights/{layer}.weight.grad"}
        assert expected <= set(tags["histograms"])
        assert f"grad_norm/{layer}" in tags["scalars"]
    assert {"weights/layer1.activations", "weights/layer2.activations"} <= set(tags["histograms"])
    assert {"dead_relu/layer1", "dead_relu/layer2", "grad_norm/total"} <= set(tags["scalars"])
    acc = events(out)
    assert [e.step for e in acc.Histograms("weights/layer1.weight")] == [0, 1, 2]  # before training, each epoch
    assert [e.step for e in acc.Images("images/decision_boundary")] == [1, 2]
    db = acc.Images("images/decision_boundary")[-1]
    assert db.width > 256 and db.height > 256 and decoded(db).float().std() > 10  # a framed picture, not a blank
    dead = [e.value for e in acc.Scalars("dead_relu/layer1")]
    assert all(0 <= v <= 1 for v in dead)


def test_default_is_one_round_after_training_and_minus_one_turns_it_off(train, tmp_path):
    train("trainer.epochs=3", out=tmp_path / "default")
    acc = events(tmp_path / "default")
    assert [e.step for e in acc.Images("images/decision_boundary")] == [3]
    assert [e.step for e in acc.Histograms("weights/output.weight")] == [0, 3]
    # the diagnostics' scalars are curves: before training and after every epoch
    assert [e.step for e in acc.Scalars("grad_norm/total")] == [0, 1, 2, 3]
    assert [e.step for e in acc.Scalars("dead_relu/layer1")] == [0, 1, 2, 3]
    # histograms sort after train/ and val/ in TensorBoard's Time Series, in one group
    groups = {t.split("/")[0] for t in acc.Tags()["histograms"]}
    assert groups == {"weights"} and min(groups) > "val"
    train("trainer.image_every_n_epochs=-1", "trainer.histogram_every_n_epochs=-1", out=tmp_path / "off")
    tags = events(tmp_path / "off").Tags()
    assert tags["images"] == [] and tags["histograms"] == []


def test_regression_fit_of_a_probabilistic_head(train, tmp_path):
    train("dataset=sine", "loss=gaussian_nll", "trainer.image_every_n_epochs=1", out=tmp_path / "run")
    acc = events(tmp_path / "run")
    fit = acc.Images("images/regression_fit")[-1]
    assert fit.width > 400 and fit.height > 260  # the 400x260 plot in its frame
    assert "images/decision_boundary" not in acc.Tags()["images"]


def test_every_plot_has_axes_ticks_and_a_legend():
    plot = torch.ones(3, 100, 200)
    img = _unit(images.framed(plot, (-1.0, 1.0), (0.0, 10.0), "x", "y", [((0, 0, 0), "dot", "train split")], "title"))
    _, h, w = img.shape
    assert h > 100 and w > 200
    ink = img.amin(0) < 0.5
    assert ink[:, :50].sum() > 50  # y tick labels and title, left of the plot
    assert ink[-40:, :].sum() > 50  # x tick labels and title, below it
    assert ink[:40, :].sum() > 20  # title and legend, above it
    assert images.nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]


def _image_bundle(shape=(1, 12, 12), n=60):
    from mlptrain.data import DataBundle
    from mlptrain.data.bundle import standardisation

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3 * n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 4, (3 * n,), generator=g)
    mean, std = standardisation(x[:n].flatten(1).float())
    return DataBundle(
        "tiny_images",
        "classification",
        x[:n],
        y[:n],
        x[n : 2 * n],
        y[n : 2 * n],
        x[2 * n :],
        y[2 * n :],
        mean,
        std,
        class_names=["a", "b", "c", "d"],
        input_shape=shape,
    )


@pytest.mark.parametrize("shape", [(1, 12, 12), (12, 12, 3)])
def test_image_sets_get_a_grid_of_mistakes(make_cfg, tmp_path, shape):
    from mlptrain.config import parse
    from mlptrain.training import Trainer

    run = parse(make_cfg(*TINY, "trainer.checkpoint=false"))
    Trainer(run, tmp_path, data=_image_bundle(shape)).fit()
    acc = events(tmp_path)
    assert {"val/misclassified", "test/misclassified", "test/confusion_matrix"} <= set(acc.Tags()["images"])
    assert "images/decision_boundary" not in acc.Tags()["images"]
    assert any("misclassified" in t for t in acc.Tags()["tensors"])  # the table naming each tile


def test_dead_relu_units_and_their_zero_gradient_are_reported(make_cfg, tmp_path):
    from mlptrain.config import parse
    from mlptrain.diagnostics import Diagnostics
    from mlptrain.loggers.tensorboard import TensorBoard
    from mlptrain.training import Trainer

    trainer = Trainer(parse(make_cfg(*TINY, "model.hidden=[8,8]")), tmp_path)
    first = trainer.model.body.layers[0]
    tb = TensorBoard(tmp_path)
    diag = Diagnostics(trainer, tb)
    with torch.no_grad():
        first.bias[:4] = -1e4  # half of layer 1 can never switch on
    diag.inside(0)
    with torch.no_grad():
        first.bias[:] = -1e4  # all of it: nothing flows back to layer 1
    diag.inside(1)
    tb.close()
    acc = events(tmp_path)
    assert [e.value for e in acc.Scalars("dead_relu/layer1")] == [0.5, 1.0]
    norms = [e.value for e in acc.Scalars("grad_norm/layer1")]
    assert norms[0] > 0 and norms[1] == 0.0
    assert acc.Scalars("grad_norm/output")[1].value > 0


def test_diagnostics_do_not_change_the_run(train, tmp_path):
    """Same seed, with dropout (which draws random numbers): identical numbers with or without."""
    common = ("trainer.epochs=3", "model.dropout=0.3", "model.hidden=[16]")
    on = train(*common, "trainer.image_every_n_epochs=1", "trainer.histogram_every_n_epochs=1", out=tmp_path / "on")
    off = train(*common, "trainer.image_every_n_epochs=-1", "trainer.histogram_every_n_epochs=-1", out=tmp_path / "off")
    strip = lambda m: [{k: v for k, v in r.items() if k not in ("time_s", "samples_per_s")} for r in m["history"]]  # noqa: E731
    assert strip(on) == strip(off) and on["test"] == off["test"]

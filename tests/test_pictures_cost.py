"""The cheap ways the pictures and metrics are drawn give what the plain ways give: cached text is
pixel for pixel ImageDraw.text, the one-copy grid is the tile-by-tile layout, the labels of the
misclassified tiles are those stamped one tile at a time, and the sort-once ROC-AUC is the
pairwise (Mann-Whitney) count, ties counting a half."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image, ImageDraw

from mlptrain import images
from mlptrain.losses.task import roc_auc


def pairwise_auc(p: torch.Tensor, y: torch.Tensor) -> float:
    """ROC-AUC by brute force: per one-vs-rest column, the share of (positive, negative) pairs the score
    orders right, a tie counting a half; binary: the positive class's column only."""
    k = p.shape[1]
    aucs = []
    for c in [1] if k == 2 else range(k):
        pos, neg = p[y == c, c], p[y != c, c]
        wins = (pos[:, None] > neg[None]).double().sum() + 0.5 * (pos[:, None] == neg[None]).double().sum()
        aucs.append(float(wins) / (len(pos) * len(neg)))
    return sum(aucs) / len(aucs)


@pytest.mark.parametrize("k", [2, 3, 10])
def test_roc_auc_is_the_pairwise_count_with_ties(k):
    g = torch.Generator().manual_seed(k)
    for trial in range(6):
        n = 30 + 40 * trial
        y = torch.cat([torch.arange(k), torch.randint(0, k, (n,), generator=g)])  # every class has rows
        # few distinct logits (many ties) on even trials, continuous ones on odd trials
        logits = torch.randint(0, 3, (len(y), k), generator=g).float() if trial % 2 == 0 else torch.randn(len(y), k)
        p = logits.softmax(1)
        assert roc_auc(p, y).item() == pytest.approx(pairwise_auc(p, y), abs=1e-6)


def test_roc_auc_of_nan_scores_is_nan():
    p = torch.tensor([[0.2, 0.8], [float("nan"), float("nan")], [0.6, 0.4]])
    assert math.isnan(roc_auc(p, torch.tensor([1, 0, 0])).item())


@pytest.mark.parametrize("size", [9, 11, 13])
def test_cached_text_is_imagedraw_text_pixel_for_pixel(size):
    f = images.font(size)
    cases = [("1053", (40, 40, 40)), ("96.9%", (255, 255, 255)), ("-0.5", (0, 0, 0)), ("true x1", (8, 81, 156))]
    for text, fill in cases:
        plain, cached = (Image.new("RGB", (90, 30), (200, 120, 90)) for _ in range(2))
        ImageDraw.Draw(plain).text((7, 5), text, fill=fill, font=f)
        images.put_text(cached, (7, 5), text, f, fill)
        assert plain.tobytes() == cached.tobytes(), text
        box = ImageDraw.Draw(plain).textbbox((0, 0), text, font=f)
        assert images.text_width(text, f) == box[2] - box[0]


def plain_tile(imgs: torch.Tensor, nrow: int, pad: int) -> torch.Tensor:
    n, c, h, w = imgs.shape
    cols, rows = min(nrow, n), -(-n // nrow)
    canvas = torch.ones(c, pad + rows * (h + pad), pad + cols * (w + pad))
    for i, img in enumerate(imgs):
        top, left = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        canvas[:, top : top + h, left : left + w] = img
    return canvas


@pytest.mark.parametrize("n", [1, 5, 8, 13])
def test_tile_is_the_tile_by_tile_layout(n):
    imgs = torch.rand(n, 3, 6, 4, generator=torch.Generator().manual_seed(n))
    assert torch.equal(images.tile(imgs, 4, 2), plain_tile(imgs, 4, 2))


def test_misclassified_labels_are_those_stamped_tile_by_tile():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (30, 1, 14, 14), generator=g, dtype=torch.uint8)
    y = torch.arange(30) % 12  # two-digit classes too
    pred = (y + 1 + torch.arange(30) % 3) % 12
    conf = torch.rand(30, generator=g)
    grid, rows = images.misclassified_grid(x, y, pred, conf, (1, 14, 14), max_images=10, nrow=4)
    side, pad = 14 * 4, 2  # enlarged 4x to 56 px
    assert grid.shape == (3, pad + 3 * (side + pad), pad + 4 * (side + pad)) and len(rows) == 10
    green, red = torch.tensor([0.1, 0.85, 0.1]), torch.tensor([1.0, 0.15, 0.15])
    scale = side // 28
    for n, (i, true, predicted, c) in enumerate(rows):
        assert c == pytest.approx(float(conf[i])) and (true, predicted) == (int(y[i]), int(pred[i]))
        tile = images.as_images(x[i : i + 1], (1, 14, 14))[0].expand(3, -1, -1)
        tile = tile.repeat_interleave(4, 1).repeat_interleave(4, 2).clone()
        t, p = str(true), str(predicted)
        bar = side - images.text_size(t, scale)[0] - 2 * scale
        tile[:, bar:] = 0.0
        images.draw_text(tile, t, bar + scale, scale, green, scale)
        images.draw_text(tile, p, bar + scale, side - images.text_size(p, scale)[1] - scale, red, scale)
        top, left = pad + (n // 4) * (side + pad), pad + (n % 4) * (side + pad)
        assert torch.equal(grid[:, top : top + side, left : left + side], images.to_uint8(tile))


def test_ten_classes_fit_both_lines_in_smaller_cells():
    cm = torch.full((10, 10), 3) + torch.eye(10, dtype=torch.long) * 1000
    img = images.confusion_image(cm).float() / 255
    cell, left, top = 48, 84, 44
    assert img.shape == (3, top + 10 * cell + 16, left + 10 * cell + 120)
    for i, j in [(0, 0), (3, 7), (9, 9)]:
        y, x = top + i * cell, left + j * cell
        body = img[:, y + 2 : y + cell - 2, x + 2 : x + cell - 2]
        ink = (body - body[:, :1, :1]).abs().amax(0) > 0.2  # text on the cell's tint (its corner)
        upper, lower = ink[: cell // 2 - 2], ink[cell // 2 - 2 :]
        assert upper.sum() > 10 and lower.sum() > 10  # the count and the row share, both inside the cell


def plain_dots(img, rows, cols, colours, radius, outline):
    """Disc offset after disc offset, the points of each written in turn (the last write wins)."""
    _, h, w = img.shape
    r_out = radius + (1.0 if outline is not None else 0.0)
    span = int(r_out)
    offsets = [(dy, dx) for dy in range(-span, span + 1) for dx in range(-span, span + 1)]
    for r, fixed in [(r_out, None)] if outline is None else [(r_out, outline), (radius, None)]:
        for dy, dx in offsets:
            if dy * dy + dx * dx <= r * r:
                for i in range(len(rows)):
                    y, x = int(rows[i]) + dy, int(cols[i]) + dx
                    if 0 <= y < h and 0 <= x < w:
                        img[:, y, x] = fixed if fixed is not None else colours[i]


@pytest.mark.parametrize("radius, outline", [(1.5, images.DARK), (1.0, None), (2.0, images.DARK)])
def test_dots_are_painted_in_order_as_one_at_a_time(radius, outline):
    g = torch.Generator().manual_seed(1)
    rows, cols = (
        torch.randint(-3, 23, (60,), generator=g),
        torch.randint(-3, 33, (60,), generator=g),
    )  # crowded, some off
    colours = torch.rand(60, 3, generator=g)
    fast, plain = torch.ones(3, 20, 30), torch.ones(3, 20, 30)
    images.draw_dots(fast, rows, cols, colours, radius=radius, outline=outline)
    plain_dots(plain, rows, cols, colours, radius, outline)
    assert torch.equal(fast, plain)


def test_a_long_title_or_legend_widens_the_frame_instead_of_being_cut():
    plot = torch.ones(3, 60, 80)
    legend = [((200, 0, 0), "dot", f"class {i}") for i in range(6)]
    img = images.framed(
        plot, (0.0, 1.0), (0.0, 1.0), "x", "y", legend, "predicted class (pale: unsure); dots: train split"
    )
    assert img.shape[2] > 58 + 80 + 12  # wider than the plot's own frame
    assert bool((img[:, :, -3:] == 255).all())  # and white at its right edge: nothing runs off it
    narrow = images.framed(plot, (0.0, 1.0), (0.0, 1.0), "x", "y", [], "fit")
    assert narrow.shape[2] == 58 + 80 + 12

"""Pictures for TensorBoard, drawn with plain torch ops: tensors in, ``(3, H, W)`` floats in [0, 1] out.

No plotting library: every picture is a few masks and index writes on a small
canvas, so rendering costs milliseconds and adds no dependency.  Numbers (class
indices, percentages) are stamped with a 3x5 pixel font.

* :func:`decision_boundary` - predicted class over the plane, shaded by confidence,
  with the training points on top (the TensorFlow Playground picture);
* :func:`confusion_image` - row-normalised confusion matrix (rows: true class);
* :func:`misclassified_grid` - the most confident mistakes of an image set;
* :func:`regression_fit` - a 1-D fit with its +-2 sigma band.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# Class colours: the Playground's orange and blue first, then Tableau-like hues.
PALETTE = torch.tensor(
    [
        [0.961, 0.576, 0.133],
        [0.031, 0.467, 0.741],
        [0.173, 0.627, 0.173],
        [0.839, 0.153, 0.157],
        [0.580, 0.404, 0.741],
        [0.549, 0.337, 0.294],
        [0.890, 0.467, 0.761],
        [0.498, 0.498, 0.498],
        [0.737, 0.741, 0.133],
        [0.090, 0.745, 0.812],
    ]
)
DARK = torch.tensor([0.15, 0.15, 0.15])
WHITE = torch.tensor([1.0, 1.0, 1.0])

# 3x5 digits, one string per row ('#' = ink).
_FONT = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
}
_GLYPHS = {c: torch.tensor([[ch == "#" for ch in row] for row in rows]) for c, rows in _FONT.items()}


def palette(n: int) -> torch.Tensor:
    """``n`` distinct colours (cycled with darkening beyond the base ten)."""
    reps = -(-n // len(PALETTE))
    shades = torch.cat([PALETTE * (1 - 0.35 * r / max(1, reps)) for r in range(reps)])
    return shades[:n]


# ----------------------------------------------------------------------------- primitives
def text_size(text: str, scale: int) -> tuple[int, int]:
    """(height, width) in pixels of ``text`` (digits only) at ``scale``."""
    return 5 * scale, (4 * len(text) - 1) * scale


@functools.lru_cache(maxsize=256)
def _ink(text: str, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel rows and columns of ``text``'s ink at ``scale``, from its top-left corner (a picture stamps
    the same few labels hundreds of times)."""
    ys, xs = [], []
    for i, ch in enumerate(text):
        glyph = _GLYPHS[ch].repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        y, x = glyph.nonzero(as_tuple=True)
        ys.append(y)
        xs.append(x + 4 * scale * i)
    return torch.cat(ys), torch.cat(xs)


def draw_text(img: torch.Tensor, text: str, top: int, left: int, colour: torch.Tensor, scale: int = 1) -> None:
    """Stamp digits into ``img`` (3, H, W) in place; anything outside the canvas is clipped."""
    _, h, w = img.shape
    ys, xs = _ink(text, scale)
    ys, xs = ys + top, xs + left
    if top < 0 or left < 0 or top + 5 * scale > h or left + 4 * scale * len(text) > w:
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        ys, xs = ys[keep], xs[keep]
    img[:, ys, xs] = colour[:, None].to(img.dtype)


def draw_dots(
    img: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    colours: torch.Tensor,
    radius: float = 2.0,
    outline: torch.Tensor | None = DARK,
) -> None:
    """Filled discs at integer pixel positions (vectorised over points, looped over the disc's offsets)."""
    _, h, w = img.shape
    r_out = radius + (1.0 if outline is not None else 0.0)
    span = int(r_out)
    offsets = [(dy, dx) for dy in range(-span, span + 1) for dx in range(-span, span + 1)]
    layers = [(r_out, None)] if outline is None else [(r_out, outline), (radius, None)]
    for r, fixed in layers:
        for dy, dx in offsets:
            if dy * dy + dx * dx > r * r:
                continue
            y, x = rows + dy, cols + dx
            keep = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            c = fixed[:, None].expand(3, int(keep.sum())) if fixed is not None else colours[keep].T
            img[:, y[keep], x[keep]] = c.to(img.dtype)


def _spaced(x: torch.Tensor, n: int) -> torch.Tensor:
    """At most ``n`` rows of ``x``, evenly spaced (deterministic)."""
    if len(x) <= n:
        return torch.arange(len(x))
    return torch.linspace(0, len(x) - 1, n).long()


def _extent(v: torch.Tensor, margin: float) -> tuple[float, float]:
    lo, hi = float(v.min()), float(v.max())
    pad = (hi - lo) * margin or 1.0
    return lo - pad, hi + pad


# ----------------------------------------------------------------------------- pictures
@torch.no_grad()
def decision_boundary(
    proba,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    size: int = 256,
    resolution: int = 64,
    max_points: int = 1500,
) -> torch.Tensor:
    """Predicted class over the plane of 2-D inputs, coloured by class and shaded by confidence.

    ``proba`` maps an ``(N, 2)`` float tensor of raw inputs to ``(N, K)`` class probabilities.
    White marks where the model is undecided (confidence at chance), full colour where it is sure.
    """
    x = x.float().cpu()
    (x0, x1), (y0, y1) = _extent(x[:, 0], 0.08), _extent(x[:, 1], 0.08)
    gx = torch.linspace(x0, x1, resolution)
    gy = torch.linspace(y1, y0, resolution)  # first image row = largest second coordinate
    yy, xx = torch.meshgrid(gy, gx, indexing="ij")
    p = proba(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).float().cpu()
    colours = palette(n_classes)
    conf, cls = p.max(1)
    strength = ((conf - 1 / n_classes) / (1 - 1 / n_classes)).clamp(0, 1) * 0.7
    # Colour the coarse grid, then smooth it up to the canvas: the boundary is white on both
    # sides (confidence at chance), so blending neighbouring colours draws no false edges.
    bg = (1 - strength[:, None] * (1 - colours[cls])).T.reshape(1, 3, resolution, resolution)
    img = F.interpolate(bg, size=(size, size), mode="bilinear", align_corners=True)[0]
    keep = _spaced(x, max_points)
    pts, labels = x[keep], y[keep].long().cpu()
    cols = ((pts[:, 0] - x0) / (x1 - x0) * (size - 1)).round().long()
    rows = ((y1 - pts[:, 1]) / (y1 - y0) * (size - 1)).round().long()
    draw_dots(img, rows, cols, colours[labels], radius=1.5)
    return img.clamp(0, 1)


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(K, K)`` counts: row = true class, column = predicted class."""
    idx = y_true.long().cpu() * n_classes + y_pred.long().cpu()
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@torch.no_grad()
def confusion_image(cm: torch.Tensor) -> torch.Tensor:
    """Row-normalised confusion matrix: blue diagonal (recall), red off-diagonal (errors), with the
    percentage in each cell and the class index along the top (predicted) and left (true) edges."""
    k = cm.shape[0]
    rate = cm.float() / cm.sum(1, keepdim=True).clamp_min(1)
    cell = max(6, min(40, 480 // k))
    scale = max(1, cell // 16)
    label_w = text_size(str(k - 1), scale)[1] + 4 * scale
    margin = max(label_w, 5 * scale + 4 * scale)
    size = margin + k * cell
    img = torch.ones(3, size, size)
    blue, red = torch.tensor([0.031, 0.318, 0.612]), torch.tensor([0.80, 0.10, 0.10])
    tint = torch.where(torch.eye(k, dtype=torch.bool)[..., None], blue, red)  # (k, k, 3)
    colour = 1 - rate[..., None] * (1 - tint)
    body = colour.repeat_interleave(cell, 0).repeat_interleave(cell, 1).permute(2, 0, 1)
    img[:, margin:, margin:] = body
    grid = torch.arange(k + 1) * cell + margin
    grid = grid.clamp(max=size - 1)
    img[:, margin:, grid] = 0.8
    img[:, grid, margin:] = 0.8
    for i in range(k):
        label = str(i)
        th, tw = text_size(label, scale)
        centre = margin + i * cell + cell // 2
        if cell >= th + 2:
            draw_text(img, label, (margin - th) // 2, centre - tw // 2, DARK, scale)
            draw_text(img, label, centre - th // 2, (margin - tw) // 2, DARK, scale)
    h100, w100 = text_size("100", scale)
    if cell >= w100 + 3:  # room for a percentage in every cell
        rates = rate.tolist()
        for i in range(k):
            for j in range(k):
                txt = str(int(round(100 * rates[i][j])))
                th, tw = text_size(txt, scale)
                ink = WHITE if rates[i][j] > 0.55 else DARK
                draw_text(
                    img, txt, margin + i * cell + (cell - th) // 2, margin + j * cell + (cell - tw) // 2, ink, scale
                )
    return img


def as_images(x: torch.Tensor, input_shape) -> torch.Tensor:
    """Rows of an image set -> ``(N, C, H, W)`` floats in [0, 1].  Accepts CHW (1, 28, 28), HWC
    (32, 32, 3) or HW (28, 28) shapes, uint8 pixels (/255) or floats (min-max per image)."""
    shape = tuple(int(s) for s in input_shape)
    x = x.reshape(len(x), *shape)
    if x.dim() == 3:
        x = x[:, None]
    elif x.dim() == 4 and shape[0] not in (1, 3) and shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"not an image shape: {shape}")
    if x.dtype == torch.uint8:
        return x.float() / 255
    x = x.float()
    lo = x.amin((1, 2, 3), keepdim=True)
    hi = x.amax((1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def is_image_shape(input_shape) -> bool:
    """HW, CHW or HWC with 1 or 3 channels and sides of at least 4 pixels."""
    s = tuple(int(v) for v in input_shape or ())
    if len(s) == 3:
        s = s[1:] if s[0] in (1, 3) else s[:2] if s[2] in (1, 3) else ()
    return len(s) == 2 and min(s) >= 4


def tile(images: torch.Tensor, nrow: int, pad: int) -> torch.Tensor:
    """``(N, 3, H, W)`` images in rows of ``nrow`` on a white canvas, ``pad`` pixels apart (the layout
    of torchvision's make_grid, without importing torchvision: seconds per run for one picture)."""
    n, c, h, w = images.shape
    cols, rows = min(nrow, n), -(-n // nrow)
    canvas = torch.ones(c, pad + rows * (h + pad), pad + cols * (w + pad))
    for i, img in enumerate(images):
        top, left = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        canvas[:, top : top + h, left : left + w] = img
    return canvas


@torch.no_grad()
def misclassified_grid(
    x: torch.Tensor,
    y_true: torch.Tensor,
    y_pred: torch.Tensor,
    confidence: torch.Tensor,
    input_shape,
    max_images: int = 64,
    nrow: int = 8,
):
    """The most confident mistakes, as a grid; each tile carries the true class (green, left)
    and the predicted one (red, right).  Returns ``(image, [(index, true, predicted, confidence)])``,
    or ``(None, [])`` when nothing is misclassified."""
    y_true, y_pred, confidence = y_true.cpu(), y_pred.cpu(), confidence.float().cpu()
    wrong = (y_true != y_pred).nonzero().flatten()
    if len(wrong) == 0:
        return None, []
    order = wrong[confidence[wrong].argsort(descending=True, stable=True)][:max_images]
    tiles = as_images(x[order.to(x.device)].cpu(), input_shape)
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    up = max(1, 56 // tiles.shape[-1])  # enlarge small images so the labels stay legible
    if up > 1:
        tiles = tiles.repeat_interleave(up, 2).repeat_interleave(up, 3)
    pad = 2
    grid = tile(tiles, nrow, pad)
    h, w = tiles.shape[-2:]
    scale = max(1, h // 28)
    green, red = torch.tensor([0.1, 0.85, 0.1]), torch.tensor([1.0, 0.15, 0.15])
    rows = []
    for n, i in enumerate(order.tolist()):
        top = pad + (n // nrow) * (h + pad)
        left = pad + (n % nrow) * (w + pad)
        t, p = str(int(y_true[i])), str(int(y_pred[i]))
        th, tw_t = text_size(t, scale)
        tw_p = text_size(p, scale)[1]
        bar = top + h - th - 2 * scale
        grid[:, bar : top + h, left : left + w] = 0.0  # a dark strip under the labels
        draw_text(grid, t, bar + scale, left + scale, green, scale)
        draw_text(grid, p, bar + scale, left + w - tw_p - scale, red, scale)
        rows.append((i, int(y_true[i]), int(y_pred[i]), float(confidence[i])))
    return grid.clamp(0, 1), rows


@torch.no_grad()
def regression_fit(
    predict, x: torch.Tensor, y: torch.Tensor, width: int = 400, height: int = 260, max_points: int = 2000
) -> torch.Tensor:
    """A 1-D regression: data points, the predicted mean, and the mean +- 2 sigma band when the
    head predicts a spread.  ``predict`` maps ``(N, 1)`` raw inputs to ``(mean (N,), std (N,) or None)``."""
    x = x.float().reshape(len(x), -1)[:, 0].cpu()
    y = y.float().reshape(len(y), -1)[:, 0].cpu()
    x0, x1 = _extent(x, 0.03)
    xs = torch.linspace(x0, x1, width)
    mean, std = predict(xs[:, None])
    mean = mean.float().reshape(width, -1)[:, 0].cpu()
    lo_band = hi_band = mean
    if std is not None:
        std = std.float().reshape(width, -1)[:, 0].cpu()
        lo_band, hi_band = mean - 2 * std, mean + 2 * std
    span = float(y.max() - y.min()) or 1.0
    # The axes follow the data (and the band, within reason) so a wild band cannot squash the picture.
    y0 = min(float(y.min()), float(lo_band.min().clamp_min(float(y.min()) - span)))
    y1 = max(float(y.max()), float(hi_band.max().clamp_max(float(y.max()) + span)))
    pad = (y1 - y0) * 0.06 or 1.0
    y0, y1 = y0 - pad, y1 + pad

    def row(v):
        return (y1 - v) / (y1 - y0) * (height - 1)

    img = torch.ones(3, height, width)
    r = torch.arange(height, dtype=torch.float32)[:, None]
    if std is not None:
        band = (r >= row(hi_band)[None]) & (r <= row(lo_band)[None])
        img[:, band] = torch.tensor([0.78, 0.86, 0.97])[:, None]
    keep = _spaced(x, max_points)
    cols = ((x[keep] - x0) / (x1 - x0) * (width - 1)).round().long()
    draw_dots(
        img,
        row(y[keep]).round().long(),
        cols,
        torch.tensor([0.55, 0.55, 0.55]).expand(len(keep), 3),
        radius=1.0,
        outline=None,
    )
    m = row(mean)
    prev = torch.cat([m[:1], m[:-1]])
    top, bottom = torch.minimum(m, prev) - 1.0, torch.maximum(m, prev) + 1.0  # joined, 2-3 px thick
    line = (r >= top[None].floor()) & (r <= bottom[None].ceil())
    img[:, line] = torch.tensor([0.031, 0.318, 0.612])[:, None]
    return img

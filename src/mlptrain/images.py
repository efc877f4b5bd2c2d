"""Pictures for TensorBoard, drawn with plain torch ops: tensors in, ``(3, H, W)`` uint8 pixels out (what
a PNG stores: the logger encodes them as they are, with no float round trip of ~7 ms a picture).

No plotting library: every plot is a few masks and index writes on a small canvas, and its axes,
tick labels, titles, legends and colour scales are drawn with Pillow (:func:`framed`), so a picture
costs milliseconds and adds no dependency.  The misclassified tiles' digits use a 3x5 pixel font.

* :func:`decision_boundary` - predicted class over the plane, shaded by confidence,
  with the training points on top (the TensorFlow Playground picture);
* :func:`confusion_image` - counts and row shares, true class by predicted class;
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
    """Filled discs at integer pixel positions, in place: the outlines of all points, then their fills,
    each pass point after point, the last write to a pixel winning (painter's order).  All the writes
    are laid out at once and each pixel takes the latest of its writes (``scatter_reduce`` amax of the
    write's position): one indexed write, not one per disc offset, and the same pixels at any thread count."""
    _, h, w = img.shape
    r_out = radius + (1.0 if outline is not None else 0.0)
    span = int(r_out)
    d = torch.arange(-span, span + 1)
    dy, dx = (v.flatten() for v in torch.meshgrid(d, d, indexing="ij"))  # row-major offsets
    rows, cols, colours = rows.long().cpu(), cols.long().cpu(), colours.cpu()
    layers = [(r_out, None)] if outline is None else [(r_out, outline), (radius, None)]
    ys, xs = [], []
    for r, _ in layers:
        near = dy * dy + dx * dx <= r * r
        ys.append((dy[near][:, None] + rows[None]).flatten())
        xs.append((dx[near][:, None] + cols[None]).flatten())
    y, x = torch.cat(ys), torch.cat(xs)
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    where = torch.where(inside, y * w + x, h * w)  # writes off the canvas go to a spare slot
    latest = torch.full((h * w + 1,), -1).scatter_reduce_(0, where, torch.arange(len(y)), "amax")[: h * w]
    pixel = (latest >= 0).nonzero().flatten()
    j = latest[pixel]  # the write each pixel keeps: its layer and point follow from its position
    if outline is None:
        c = colours[j % len(rows)]
    else:
        n_outline = len(ys[0])
        c = torch.where((j < n_outline)[:, None], outline.to(colours.dtype), colours[(j - n_outline) % len(rows)])
    img[:, pixel // w, pixel % w] = c.T.to(img.dtype)


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
    names: list[str] | None = None,
    frame: bool = True,
) -> torch.Tensor:
    """Predicted class over the plane of 2-D inputs, coloured by class and shaded by confidence.

    ``proba`` maps an ``(N, 2)`` float tensor of raw inputs to ``(N, K)`` class probabilities.
    White marks where the model is undecided (confidence at chance), full colour where it is sure.
    ``frame``: with axes (x1, x2), ticks and a legend of the classes (``names``).
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
    img = img.clamp(0, 1)
    if not frame:
        return to_uint8(img)
    names = names or [str(i) for i in range(n_classes)]
    legend = [(_rgb(colours[i]), "dot", str(names[i])[:12]) for i in range(min(n_classes, 6))]
    title = "predicted class (pale: unsure); dots: train split"
    return framed(img, (x0, x1), (y0, y1), "x1", "x2", legend, title)


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(K, K)`` counts: row = true class, column = predicted class."""
    idx = y_true.long().cpu() * n_classes + y_pred.long().cpu()
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def error_tint(rate: torch.Tensor) -> torch.Tensor:
    """How strongly an off-diagonal cell is tinted: 0 for no error, else at least 0.25 (clearly pink,
    however rare), rising with the square root of the rate (1% -> 0.33, 10% -> 0.49, 100% -> 1)."""
    return torch.where(rate > 0, 0.25 + 0.75 * rate.clamp(0, 1).sqrt(), torch.zeros_like(rate))


@torch.no_grad()
def confusion_image(cm: torch.Tensor, names: list[str] | None = None) -> torch.Tensor:
    """Confusion matrix: rows the true class, columns the predicted one; each cell shows its count and
    its share of the row.  The diagonal is blue by recall; any off-diagonal cell with an error is red
    (:func:`error_tint`: visible even for one error in thousands); a colour scale on the right."""
    from PIL import Image, ImageDraw

    k = cm.shape[0]
    counts = cm.long().cpu()
    rate = counts.float() / counts.sum(1, keepdim=True).clamp_min(1)
    # 64 px cells up to 9 classes; from 10, 48 px still hold both lines ("1053", "96.9%") and make
    # the picture half the pixels (cheaper to draw, encode and view: 684x540 for MNIST, not 844x700)
    cell = max(8, min(64 if k < 10 else 48, 640 // k))
    f = font(max(8, min(13, cell // 4)))
    names = [str(n) for n in (names or range(k))]
    left, top, right, bottom = 84, 44, 120, 16
    size = k * cell
    canvas = Image.new("RGB", (left + size + right, top + size + bottom), "white")
    d = ImageDraw.Draw(canvas)
    blue, red = torch.tensor([0.031, 0.318, 0.612]), torch.tensor([0.80, 0.10, 0.10])
    diag = torch.eye(k, dtype=torch.bool)
    strength = torch.where(diag, rate, error_tint(rate))
    tint = torch.where(diag[..., None], blue, red)
    colour = 1 - strength[..., None] * (1 - tint)
    # one pixel per cell, enlarged by Pillow (nearest: the same pixels as repeating them in torch)
    canvas.paste(to_pil(colour.permute(2, 0, 1)).resize((size, size), Image.NEAREST), (left, top))
    for i in range(k + 1):
        d.line([left + i * cell, top, left + i * cell, top + size], fill=GRID)
        d.line([left, top + i * cell, left + size, top + i * cell], fill=GRID)
    two_lines = cell >= 34 and k <= 20
    light, rates = (strength > 0.6).tolist(), rate.tolist()
    for (i, j), n in zip(torch.cartesian_prod(torch.arange(k), torch.arange(k)).tolist(), counts.flatten().tolist()):
        if n == 0 and i != j:
            continue
        ink = (255, 255, 255) if light[i][j] else INK
        lines = [str(n)] + ([f"{100 * rates[i][j]:.1f}%"] if two_lines else [])
        if text_width(lines[0], f) > cell - 2:
            continue  # no room: the tint still shows it
        y = top + i * cell + (cell - 13 * len(lines)) // 2
        for line in lines:
            put_text(canvas, (left + j * cell + (cell - text_width(line, f)) // 2, y), line, f, ink)
            y += 13
    step = max(1, -(-k // 20))  # at most ~20 class labels per axis
    small = font(11)
    for i in range(0, k, step):
        label = names[i][:10]
        c = left + i * cell + cell // 2
        put_text(canvas, (c - text_width(label, small) // 2, top - 16), label, small, INK)
        put_text(canvas, (left - 6 - text_width(label, small), top + i * cell + cell // 2 - 7), label, small, INK)
    title = font(13)
    put_text(canvas, (left + (size - text_width("predicted", title)) // 2, 4), "predicted", title, INK)
    ylabel = _vertical("true", title)
    canvas.paste(ylabel, (6, top + (size - ylabel.height) // 2))
    # colour scales: errors (red, square-root) and recall (blue, linear), as a share of the row
    bar_h = max(60, min(size - 20, 200))
    for n, (name, fn, c) in enumerate([("errors", error_tint, red), ("correct", lambda r: r, blue)]):
        x = left + size + 14 + n * 52
        shares = torch.linspace(1, 0, bar_h)
        col = 1 - fn(shares)[:, None] * (1 - c)
        strip = col[:, None, :].expand(bar_h, 12, 3).permute(2, 0, 1)
        canvas.paste(to_pil(strip), (x, top + 14))
        d.rectangle([x - 1, top + 13, x + 12, top + 14 + bar_h], outline=INK)
        put_text(canvas, (x - 4, top - 2), name, small, INK)
        for share in (0.01, 0.1, 0.5, 1.0) if fn is error_tint else (0.0, 0.5, 1.0):
            y = top + 14 + round((1 - share) * (bar_h - 1))
            d.line([x + 12, y, x + 15, y], fill=INK)
            put_text(canvas, (x + 17, y - 6), f"{share:.0%}", font(9), INK)
    return from_pil(canvas)


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
    # the canvas as (channel, row, y, column, x) cells: the full rows in one copy, the last one tile by tile
    cells = canvas[:, pad:, pad:].unflatten(1, (rows, h + pad)).unflatten(3, (cols, w + pad))[:, :, :h, :, :w]
    full = n // cols
    cells[:, :full] = images[: full * cols].unflatten(0, (full, cols)).permute(2, 0, 3, 1, 4)
    for i in range(full * cols, n):
        cells[:, full, :, i - full * cols] = images[i]
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
    n, c, h, w = tiles.shape
    up = max(1, 56 // w)  # enlarge small images so the labels stay legible
    # grey to three channels and the enlargement (nearest) in one copy
    tiles = tiles[:, :, :, None, :, None].expand(n, 3, h, up, w, up).reshape(n, 3, h * up, w * up)
    h, w = h * up, w * up
    scale = max(1, h // 28)
    green, red = torch.tensor([0.1, 0.85, 0.1]), torch.tensor([1.0, 0.15, 0.15])
    th = text_size("0", scale)[0]
    bar = h - th - 2 * scale
    tiles[:, :, bar:] = 0.0  # a dark strip under the labels
    trues, preds, confs = y_true[order].tolist(), y_pred[order].tolist(), confidence[order].tolist()
    # the labels stamped into every tile that carries them at once (one write per class, not per tile)
    for labels, colour, right in ((trues, green, False), (preds, red, True)):
        for label in sorted(set(labels)):
            text = str(label)
            ys, xs = _ink(text, scale)
            xs = xs + (w - text_size(text, scale)[1] - scale if right else scale)
            keep = (xs >= 0) & (xs < w)
            which = torch.tensor([i for i, v in enumerate(labels) if v == label])
            tiles[which[:, None], :, (ys[keep] + bar + scale)[None], xs[keep][None]] = colour
    rows = [(i, t, p, cf) for i, t, p, cf in zip(order.tolist(), trues, preds, confs)]
    return to_uint8(tile(tiles, nrow, 2)), rows


@torch.no_grad()
def regression_fit(
    predict,
    x: torch.Tensor,
    y: torch.Tensor,
    width: int = 400,
    height: int = 260,
    max_points: int = 2000,
    frame: bool = True,
    split: str = "train",
) -> torch.Tensor:
    """A 1-D regression: data points, the predicted mean, and the mean +- 2 sigma band when the
    head predicts a spread.  ``predict`` maps ``(N, 1)`` raw inputs to ``(mean (N,), std (N,) or None)``.
    ``frame``: with axes (x, y), ticks and a legend naming the ``split`` the points come from."""
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
        img = torch.where(band, torch.tensor([0.78, 0.86, 0.97])[:, None, None], img)  # (a mask write: 3x slower)
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
    img = torch.where(line, torch.tensor([0.031, 0.318, 0.612])[:, None, None], img)
    if not frame:
        return to_uint8(img)
    legend = [((140, 140, 140), "dot", f"{split} split"), ((8, 81, 156), "line", "predicted mean")]
    if std is not None:
        legend.append(((199, 219, 247), "box", "mean +- 2 sd"))
    return framed(img, (x0, x1), (y0, y1), "x", "y", legend, "regression fit")


# ----------------------------------------------------------------------------- axes, labels, scales
# Text, ticks and legends are drawn with Pillow's ImageDraw and its bundled FreeType font (Pillow is
# already installed with torchvision and TensorBoard, and writes these PNGs): a picture stays a few
# milliseconds, against ~1 s to import a plotting library and tens of ms a figure (docs/loggers.md).
INK = (40, 40, 40)
GRID = (200, 200, 200)


@functools.lru_cache(maxsize=8)
def font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable sans
    except TypeError:  # older Pillow: its small bitmap font
        return ImageFont.load_default()


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """A ``(3, H, W)`` float image in [0, 1] as the 8-bit pixels a PNG stores (uint8 passes through)."""
    if img.dtype == torch.uint8:
        return img
    return img.float().clamp(0, 1).mul(255).round_().to(torch.uint8)


def to_pil(img: torch.Tensor):
    from PIL import Image

    return Image.fromarray(to_uint8(img).permute(1, 2, 0).contiguous().numpy())


def from_pil(pil) -> torch.Tensor:
    """A Pillow canvas as a ``(3, H, W)`` uint8 picture: a view of one copy of its bytes (numpy's array
    interface takes two), in the canvas's own row order, so the PNG encoder takes it without another copy."""
    pil = pil if pil.mode == "RGB" else pil.convert("RGB")
    hwc = torch.frombuffer(bytearray(pil.tobytes()), dtype=torch.uint8).view(pil.height, pil.width, 3)
    return hwc.permute(2, 0, 1)


def _rgb(colour: torch.Tensor) -> tuple[int, int, int]:
    return tuple(int(round(float(c) * 255)) for c in colour.clamp(0, 1))


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values inside [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    import math

    span = hi - lo
    if not math.isfinite(span) or span <= 0:
        return [lo] if math.isfinite(lo) else []  # (a diverged model's NaN plot: no ticks)
    raw = span / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def tick_label(v: float) -> str:
    return f"{v:.4g}" if v != 0 else "0"


def text_width(text: str, f) -> int:
    """Width in pixels of ``text`` in font ``f``."""
    box = _bbox(text, f)
    return box[2] - box[0]


# A picture writes the same few hundred labels (counts, percentages, ticks) again and again, in
# every picture of a run and every job of a sweep: each is laid out and rasterised by FreeType once
# (~40 us with its box), then pasted through its mask (~2 us), pixel for pixel what ImageDraw.text draws.
@functools.lru_cache(maxsize=8192)
def _bbox(text: str, f) -> tuple[int, int, int, int]:
    return f.getbbox(text)


@functools.lru_cache(maxsize=8192)
def _mask(text: str, f):
    """``text``'s ink in font ``f`` as an ``L`` image, and where it sits from the drawing point."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = _bbox(text, f)
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=f)
    return mask, left, top


def put_text(canvas, xy: tuple[int, int], text: str, f, fill) -> None:
    """``ImageDraw.Draw(canvas).text(xy, text, fill, font=f)`` (integer ``xy``), from the cache."""
    if text:
        mask, left, top = _mask(text, f)
        canvas.paste(fill, (xy[0] + left, xy[1] + top), mask)


@functools.lru_cache(maxsize=64)
def _vertical(text: str, f):
    """An axis title turned 90 degrees (anticlockwise), on white."""
    from PIL import Image, ImageDraw

    label = Image.new("RGB", (text_width(text, f) + 4, 16), "white")
    ImageDraw.Draw(label).text((2, 0), text, fill=INK, font=f)
    return label.rotate(90, expand=True)


def framed(
    plot: torch.Tensor,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    x_title: str,
    y_title: str,
    legend: list[tuple[tuple[int, int, int], str, str]] = (),
    title: str = "",
) -> torch.Tensor:
    """``plot`` (3, H, W), whose pixels span ``x_range`` left to right and ``y_range`` bottom to top,
    with tick labels, axis titles, a title and a legend (``(colour, kind, label)``, kind ``dot``,
    ``line`` or ``box``) around it."""
    from PIL import Image, ImageDraw

    _, h, w = plot.shape
    f, small = font(13), font(11)
    left, right, top, bottom = 58, 12, 26 + (18 if legend else 0), 44
    # wide enough for the title and the legend's row (a long one would be cut at the right edge)
    legend_w = sum((18 if kind != "line" else 20) + text_width(label, small) + 14 for _, kind, label in legend)
    width = max(left + w + right, left + text_width(title, f) + 8, left + legend_w)
    canvas = Image.new("RGB", (width, top + h + bottom), "white")
    canvas.paste(to_pil(plot), (left, top))
    d = ImageDraw.Draw(canvas)
    d.rectangle([left - 1, top - 1, left + w, top + h], outline=INK)
    (x0, x1), (y0, y1) = x_range, y_range
    for v in nice_ticks(x0, x1):
        px = left + round((v - x0) / (x1 - x0) * (w - 1))
        d.line([px, top + h, px, top + h + 4], fill=INK)
        label = tick_label(v)
        put_text(canvas, (px - text_width(label, small) // 2, top + h + 6), label, small, INK)
    for v in nice_ticks(y0, y1):
        py = top + round((y1 - v) / (y1 - y0) * (h - 1))
        d.line([left - 5, py, left - 1, py], fill=INK)
        label = tick_label(v)
        put_text(canvas, (left - 7 - text_width(label, small), py - 7), label, small, INK)
    put_text(canvas, (left + (w - text_width(x_title, f)) // 2, top + h + 24), x_title, f, INK)
    ylabel = _vertical(y_title, f)
    canvas.paste(ylabel, (4, top + (h - ylabel.height) // 2))
    put_text(canvas, (left, 5), title, f, INK)
    x = left
    for colour, kind, label in legend:
        y = top - 15
        if kind == "dot":
            d.ellipse([x, y + 2, x + 8, y + 10], fill=colour, outline=INK)
        elif kind == "line":
            d.line([x, y + 6, x + 14, y + 6], fill=colour, width=3)
        else:
            d.rectangle([x, y + 1, x + 12, y + 11], fill=colour)
        x += 18 if kind != "line" else 20
        put_text(canvas, (x, y - 1), label, small, INK)
        x += text_width(label, small) + 14
    return from_pil(canvas)

"""PNG/JPEG files as inputs of an image model: converted to its channels and size, as raw 0-255 pixels.

A folder means its ``*.png``/``*.jpg``/``*.jpeg`` files (sorted by name), a pattern with ``*``, ``?``
or ``[`` its matches; images are read with Pillow (a torchvision dependency), converted to grey
(``L``) or ``RGB`` as the model was trained, and resized to the training height and width.  Any file
that cannot be read is one :class:`DataError` naming it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mlptrain.errors import DataError
from mlptrain.inputs import Rows, is_image

SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")


CSV_SUFFIXES = ("", ".csv", ".tsv", ".txt", ".dat")


def looks_like_images(args: Sequence[str]) -> bool:
    """Whether predict's inputs name images (a folder, a glob, image files) rather than one CSV file
    (or ``-``, standard input); a single file of another format is refused."""
    if len(args) != 1:
        return True
    a = args[0]
    if os.path.exists(a) and not os.path.isdir(a) and not os.path.isfile(a):
        return False  # a pipe or a device: refused (without opening it) as the CSV it would have to be
    if a == "-" or (not os.path.isdir(a) and not _is_glob(a) and Path(a).suffix.lower() in CSV_SUFFIXES):
        return False
    if os.path.isfile(a) and Path(a).suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{a}: unsupported input format {Path(a).suffix!r}; give a CSV file, or PNG/JPEG images "
            f"(files, a folder or a glob) to an image model"
        )
    return True


def _is_glob(a: str) -> bool:
    return any(c in a for c in "*?[")


def image_paths(args: Sequence[str]) -> list[Path]:
    """The files the arguments name, in order (a folder's and a pattern's sorted by name)."""
    out: list[Path] = []
    for a in args:
        if os.path.isdir(a):
            found = sorted(p for p in Path(a).iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"{a}: no PNG or JPEG files in this folder")
            out += found
        elif not os.path.exists(a) and _is_glob(a):
            found = sorted(Path(p) for p in glob.glob(a) if Path(p).suffix.lower() in SUFFIXES)
            if not found:
                raise DataError(f"{a}: no PNG or JPEG file matches")
            out += found
        elif not os.path.isfile(a):
            raise DataError(f"image not found: {a}")
        elif Path(a).suffix.lower() not in SUFFIXES:
            raise DataError(f"{a}: unsupported input format {Path(a).suffix or '(no suffix)'!r}; give PNG/JPEG files")
        else:
            out.append(Path(a))
    return out


def read_images(paths: Sequence[str | Path], meta: dict) -> Rows:
    """Images as one row each of raw pixel values in the model's (C, H, W) order; the file names are
    carried to the output as its ``file`` column."""
    if not is_image(meta):
        raise DataError(
            f"this model was trained on {meta.get('name')!r}, not images; give it a CSV of "
            f"{meta['in_features']} input column(s)"
        )
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    c, h, w = meta["input_shape"]
    if c not in (1, 3):
        raise DataError(f"images with {c} channels cannot be read from image files; give a CSV of pixel columns")
    mode = "L" if c == 1 else "RGB"
    xs = []
    for p in paths:
        try:
            with Image.open(p) as img:
                if img.format not in FORMATS:
                    raise DataError(f"{p}: a {img.format} image; give PNG or JPEG files")
                img = img.convert(mode)
                if img.size != (w, h):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                a = np.array(img, dtype=np.uint8)  # a copy: PIL's buffer is read-only
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"cannot read image {p}: {' '.join(str(e).split()) or type(e).__name__}") from None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W), PyTorch's layout
        xs.append(torch.from_numpy(np.ascontiguousarray(a)).reshape(-1))
    x = torch.stack(xs).float() if xs else torch.zeros(0, c * h * w)
    return Rows(len(xs), x, list(range(len(xs))), carried={"file": [str(p) for p in paths]})

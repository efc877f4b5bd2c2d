"""The torchvision image sets (MNIST, Fashion-MNIST, KMNIST, CIFAR-10), loaded once into uint8 tensors.

torchvision's own dataset classes find, download (their real mirrors and checksums) and
read the files; from them we keep only the ``.data``/``.targets`` arrays, as uint8
``(N, C, H, W)`` tensors (PyTorch's channel-first layout, which for CIFAR-10 is also
how the pickled batches are stored, so no copy is made).  Pixels stay uint8 in memory
and on the device; the model's ``Standardize`` layer casts and normalises each batch
with per-channel statistics from the training split.

``import torchvision`` takes over a second, so it happens here, inside the loader only.
"""

from __future__ import annotations

import ctypes
import os

import torch

from mlptrain.data.bundle import DataBundle, DataError

# dataset name -> torchvision.datasets class name
CLASSES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST", "cifar10": "CIFAR10"}


def expected_files(cls) -> tuple[str, list[tuple[str, str | None]]]:
    """The folder (relative to data_dir) where ``cls`` looks for its files, and each file with its md5
    (None: torchvision only checks that it exists).  Read from the class itself, so it is always
    what torchvision will look for."""
    if hasattr(cls, "base_folder"):  # CIFAR: unpacked pickled batches, each checked against its md5
        files = [(f, md5) for f, md5 in cls.train_list + cls.test_list] + [(cls.meta["filename"], cls.meta["md5"])]
        return cls.base_folder, files
    # MNIST family: the IDX files, unpacked from the .gz archives named in ``resources``
    return os.path.join(cls.__name__, "raw"), [(os.path.splitext(gz)[0], None) for gz, _ in cls.resources]


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _open(cls, name: str, root: str, download: bool):
    """Both splits through the torchvision class (which downloads when asked)."""
    try:
        return cls(root, train=True, download=download), cls(root, train=False, download=download)
    except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, AssertionError, pickle errors ...
        raise _files_error(cls, name, root, download, e) from None


def _files_error(cls, name: str, root: str, download: bool, err: BaseException) -> DataError:
    """One line naming the files expected, the folder to put them in, and the flag."""
    from torchvision.datasets.utils import check_integrity

    sub, files = expected_files(cls)
    folder = os.path.join(root, sub) + os.sep
    where = f"expected {', '.join(f for f, _ in files)} in {folder}"
    bad = [f for f, md5 in files if not check_integrity(os.path.join(folder, f), md5)]
    if bad and download:
        msg = f"download failed ({_one_line(err)}); {where}: put them there by hand and run with dataset.download=false"
    elif bad:
        state = "missing or corrupted" if any(os.path.exists(os.path.join(folder, f)) for f in bad) else "not found"
        msg = f"files {state}; {where}: put them there, or set dataset.download=true to fetch them"
    else:
        msg = (
            f"could not read the files ({_one_line(err)}); {where}: replace them, "
            f"or delete them and set dataset.download=true"
        )
    return DataError(f"dataset {name}: {msg}")


def _images(ds) -> torch.Tensor:
    """``ds.data`` as a uint8 ``(N, C, H, W)`` tensor, without copying."""
    data = ds.data
    if isinstance(data, torch.Tensor):  # MNIST family: (N, H, W)
        return data.unsqueeze(1)
    # CIFAR: numpy (N, H, W, C), a transposed view of the (N, C, H, W) array it was read into
    import numpy as np

    return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))


def carve_validation(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int):
    """Split off a seeded random ``val_fraction`` of rows as the validation set.

    The chosen rows are swapped to the end in place, so train and val are views of one
    buffer: memory stays at one copy of the images (a gather would briefly need two).
    The train order is irrelevant: batches are reshuffled every epoch.
    """
    n = len(x)
    n_val = max(1, round(n * val_fraction))
    n_train = n - n_val
    if n_train < 1:
        raise DataError(f"dataset: {n} training images are too few to carve a validation split")
    val = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_val]
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[val] = True
    a = val[val < n_train]  # val rows sitting in the train region ...
    b = (~is_val[n_train:]).nonzero().squeeze(1) + n_train  # ... trade places with train rows in the val region
    for t in (x, y):
        moved = t[a]  # advanced indexing copies: only len(a) <= n_val rows
        t[a] = t[b]
        t[b] = moved
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def channel_stats(x: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std of uint8 ``(N, C, H, W)`` images, from a histogram of the 256
    pixel values (no float copy of the split, which would be 4x its size)."""
    hist = torch.zeros(x.shape[1], 256, dtype=torch.float64)
    for part in x.split(chunk):
        for c in range(x.shape[1]):
            hist[c] += torch.bincount(part[:, c].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.float64)
    count = hist.sum(1)
    mean = (hist * values).sum(1) / count
    var = (hist * (values - mean[:, None]).square()).sum(1) / (count - 1).clamp_min(1)
    return mean.float(), var.sqrt().clamp_min(1e-6).float()


def _return_freed_memory() -> None:
    """Hand the file buffers and pickles freed while loading back to the OS.  glibc keeps such
    mid-sized blocks in its heap (about 10 MB for MNIST, 30 MB for CIFAR-10); elsewhere a no-op."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load_vision(cfg) -> DataBundle:
    import torchvision.datasets as tvd

    cls = getattr(tvd, CLASSES[cfg.name])
    root = os.path.expanduser(cfg.data_dir)
    train_ds, test_ds = _open(cls, cfg.name, root, cfg.download)
    x, y = _images(train_ds), torch.as_tensor(train_ds.targets, dtype=torch.long)
    x_test, y_test = _images(test_ds), torch.as_tensor(test_ds.targets, dtype=torch.long)
    classes = [str(c) for c in train_ds.classes]
    del train_ds, test_ds  # drop torchvision's references before the in-place split
    x_train, y_train, x_val, y_val = carve_validation(x, y, cfg.val_fraction, cfg.seed)
    mean, std = channel_stats(x_train)
    _return_freed_memory()
    shape = tuple(x.shape[1:])

    def per_pixel(stat: torch.Tensor) -> torch.Tensor:  # each channel's statistic over its pixels: (C, H, W)
        return stat.view(-1, 1, 1).expand(shape).contiguous()

    return DataBundle(
        name=cfg.name,
        task="classification",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        x_mean=per_pixel(mean),
        x_std=per_pixel(std),
        class_names=classes,
        input_shape=shape,
        preprocess={"layout": "NCHW", "dtype": "uint8", "channel_mean": mean.tolist(), "channel_std": std.tolist()},
    )

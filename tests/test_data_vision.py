"""torchvision image sets: tiny files in the real on-disk formats, read by the real torchvision classes.

MNIST-family sets are IDX files in ``<root>/<Class>/raw/``; CIFAR-10 is pickled batches in
``<root>/cifar-10-batches-py/``.  torchvision checks each CIFAR file against the md5 listed on
the class, so the tests list their own files' md5s there (torchvision's attribute, not ours).
No test touches the network: the download tests point torchvision's mirrors at a closed local port.
"""

from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch

from conftest import mlptrain

torchvision_datasets = pytest.importorskip("torchvision.datasets")

from mlptrain.config import VisionConfig  # noqa: E402
from mlptrain.data import DataError, load_dataset  # noqa: E402
from mlptrain.data.vision import carve_validation  # noqa: E402

FAST = ["trainer.progress=none", "model.hidden=[32]", "trainer.batch_size=32"]
CLOSED_PORT = "http://127.0.0.1:9/"  # the discard port: nothing listens, so connections are refused at once


def _images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: class k lights a block whose position depends on k; noise elsewhere.
    Pixel [..., 0, 0] holds the image's index so tests can match rows after the split."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    x = rng.integers(0, 60, size=(n, *shape), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 5)
        x[i, ..., 4 + 10 * r : 10 + 10 * r, 1 + 5 * c : 5 + 5 * c] = 250
        x[i, ..., 0, 0] = i % 256
    return x, labels.astype(np.uint8)


def _write_idx(path, array: np.ndarray) -> None:
    """IDX: magic (0, 0, type 0x08 = ubyte, n dims), each dim as big-endian int32, then the bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def write_mnist(root, cls: str = "MNIST", n_train: int = 200, n_test: int = 50):
    raw = root / cls / "raw"
    raw.mkdir(parents=True)
    data = {}
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = _images(n, (28, 28), seed)
        _write_idx(raw / f"{split}-images-idx3-ubyte", x)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", y)
        data[split] = (x, y)
    return data


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root, monkeypatch, n_per_batch: int = 40, n_test: int = 40):
    """Real layout: five ``data_batch_*`` pickles and ``test_batch`` (dicts with ``data``: uint8 (N, 3072),
    channel-planar R then G then B, and ``labels``), plus ``batches.meta`` with the label names."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    cls = torchvision_datasets.CIFAR10
    written = {}
    for i, (name, _) in enumerate(cls.train_list + cls.test_list):
        n = n_test if name == "test_batch" else n_per_batch
        x, y = _images(n, (3, 32, 32), seed=i)
        x[:, 1] //= 2  # distinct per-channel statistics
        x[:, 2] = x[:, 2] // 4 + 100
        entry = {
            "batch_label": name,
            "labels": [int(v) for v in y],
            "data": x.reshape(n, 3072),
            "filenames": [f"img_{i}_{j}.png" for j in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[name] = (x, y)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {"label_names": names, "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    # torchvision verifies every file against the md5s listed on the class: list ours.
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / "batches.meta")})
    return written


def _rows_by_index(x: torch.Tensor) -> dict[int, torch.Tensor]:
    return {int(img[..., 0, 0].flatten()[0]): img for img in x}


@pytest.mark.parametrize(
    "name, cls, first_class",
    [
        ("mnist", "MNIST", "0 - zero"),
        ("fashion_mnist", "FashionMNIST", "T-shirt/top"),
        ("kmnist", "KMNIST", "o"),
    ],
)
def test_mnist_family_loads_idx_files_through_torchvision(tmp_path, name, cls, first_class):
    written = write_mnist(tmp_path, cls)
    data = load_dataset(VisionConfig(name=name, data_dir=str(tmp_path), download=False, val_fraction=0.1, seed=3))

    assert data.task == "classification" and data.class_names[0] == first_class and data.n_outputs == 10
    assert data.input_shape == (1, 28, 28) and data.in_features == 784
    for x in (data.x_train, data.x_val, data.x_test):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (180, 20, 50)
    # train + val are exactly the training file's images, each with its own label
    x, y = written["train"]
    seen = _rows_by_index(torch.cat([data.x_train, data.x_val]))
    labels = dict(zip(seen, torch.cat([data.y_train, data.y_val]).tolist()))
    assert sorted(seen) == list(range(200))
    for i in (0, 57, 199):
        assert torch.equal(seen[i][0], torch.from_numpy(x[i])) and labels[i] == y[i]
    # the official test split is the test set, in order
    assert torch.equal(data.x_test[:, 0], torch.from_numpy(written["t10k"][0]))
    assert data.y_test.tolist() == written["t10k"][1].tolist()
    # one mean/std for the grey channel, from the training split only
    train = data.x_train.double()
    assert torch.allclose(data.x_mean, torch.full((1, 28, 28), train.mean().item()).float())
    assert torch.allclose(data.x_std, torch.full((1, 28, 28), train.std().item()).float())


def test_cifar10_loads_pickled_batches_channel_first_with_channel_stats(tmp_path, monkeypatch):
    written = write_cifar(tmp_path, monkeypatch)
    data = load_dataset(VisionConfig(name="cifar10", data_dir=str(tmp_path), download=False, val_fraction=0.25))

    assert data.class_names[:2] == ["airplane", "automobile"] and data.input_shape == (3, 32, 32)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (150, 50, 40)
    assert data.x_train.dtype == torch.uint8 and data.x_train.is_contiguous()
    # (N, 3, 32, 32) exactly as stored: the first 1024 values of a row are the red plane
    x_test, y_test = written["test_batch"]
    assert torch.equal(data.x_test, torch.from_numpy(x_test)) and data.y_test.tolist() == y_test.tolist()
    train = data.x_train.double()
    mean, std = train.mean((0, 2, 3)), train.transpose(0, 1).reshape(3, -1).std(1)
    assert mean[2] > mean[0] > mean[1]  # the channels really differ, so the check below means something
    assert torch.allclose(data.x_mean, mean.float().view(3, 1, 1).expand(3, 32, 32))
    assert torch.allclose(data.x_std, std.float().view(3, 1, 1).expand(3, 32, 32))


def test_mnist_trains_end_to_end_through_the_cli_path(tmp_path, train):
    write_mnist(tmp_path / "data", n_train=300, n_test=100)
    m = train(
        "dataset=mnist",
        f"dataset.data_dir={tmp_path / 'data'}",
        "dataset.download=false",
        "trainer.epochs=8",
        *FAST,
        tiny=False,
        out=tmp_path / "run",
    )
    assert m["status"] == "completed"
    assert m["test"]["acc"] > 0.9  # the block position decides the class: learnable only if pixels and labels line up
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ckpt["data"]["input_shape"] == [1, 28, 28] and ckpt["data"]["class_names"][3] == "3 - three"


def test_cifar10_trains_end_to_end(tmp_path, monkeypatch, train):
    write_cifar(tmp_path / "data", monkeypatch)
    m = train(
        "dataset=cifar10",
        f"dataset.data_dir={tmp_path / 'data'}",
        "dataset.download=false",
        "trainer.epochs=6",
        *FAST,
        tiny=False,
        out=tmp_path / "run",
    )
    assert m["status"] == "completed" and m["test"]["acc"] > 0.9


# ----------------------------------------------------------------------------- offline
FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"


def test_empty_dir_without_download_names_files_folder_and_flag(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(VisionConfig(name="kmnist", data_dir=str(tmp_path), download=False))
    msg = str(e.value)
    assert msg == (
        f"dataset kmnist: files not found; expected {FILES} in {tmp_path}/KMNIST/raw/: put them there, "
        "or set dataset.download=true to fetch them"
    )


def test_unreachable_mirror_names_files_folder_and_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision_datasets.MNIST, "mirrors", [CLOSED_PORT])
    with pytest.raises(DataError) as e:
        load_dataset(VisionConfig(name="mnist", data_dir=str(tmp_path), download=True))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(
        f"dataset mnist: download failed (Error downloading train-images-idx3-ubyte.gz: Tried {CLOSED_PORT}"
    )
    assert msg.endswith(
        f"); expected {FILES} in {tmp_path}/MNIST/raw/: put them there by hand and run with dataset.download=false"
    )


def test_cifar_unreachable_and_corrupted(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision_datasets.CIFAR10, "url", CLOSED_PORT + "cifar-10-python.tar.gz")
    with pytest.raises(
        DataError,
        match=r"^dataset cifar10: download failed \(.*\); expected data_batch_1, "
        r"data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch, batches.meta in "
        rf"{tmp_path}/cifar-10-batches-py/: "
        r"put them there by hand and run with dataset.download=false$",
    ):
        load_dataset(VisionConfig(name="cifar10", data_dir=str(tmp_path), download=True))
    write_cifar(tmp_path / "other", monkeypatch)
    with open(tmp_path / "other" / "cifar-10-batches-py" / "data_batch_3", "ab") as f:
        f.write(b"x")  # no longer matches its checksum
    with pytest.raises(
        DataError,
        match=r"^dataset cifar10: files missing or corrupted; expected data_batch_1, .* "
        r"set dataset.download=true to fetch them$",
    ):
        load_dataset(VisionConfig(name="cifar10", data_dir=str(tmp_path / "other"), download=False))


def test_truncated_file_is_reported_as_unreadable(tmp_path):
    write_mnist(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"^dataset mnist: could not read the files \(.*\); expected train-images"):
        load_dataset(VisionConfig(name="mnist", data_dir=str(tmp_path), download=False))


def test_offline_error_from_the_command_is_one_line(tmp_path):
    r = mlptrain(
        "dataset=fashion_mnist", f"dataset.data_dir={tmp_path / 'none'}", "dataset.download=false", cwd=tmp_path
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        f"mlptrain: error: dataset fashion_mnist: files not found; expected {FILES} in "
        f"{tmp_path}/none/FashionMNIST/raw/: put them there, or set dataset.download=true "
        "to fetch them"
    )


# ----------------------------------------------------------------------------- pieces
def test_data_dir_defaults_to_env_var_then_user_cache(make_cfg, monkeypatch):
    from mlptrain.config import parse

    monkeypatch.setenv("MLPTRAIN_DATA", "/somewhere/data")
    assert parse(make_cfg("dataset=mnist")).dataset.data_dir == "/somewhere/data"
    monkeypatch.delenv("MLPTRAIN_DATA")
    monkeypatch.setenv("HOME", "/home/someone")
    assert parse(make_cfg("dataset=cifar10")).dataset.data_dir == "/home/someone/.cache/mlptrain"


def test_validation_split_is_seeded_and_a_partition():
    x = torch.arange(1000).view(100, 10).to(torch.uint8)  # row i starts with (10 i) % 256
    y = torch.arange(100)
    splits = [carve_validation(x.clone(), y.clone(), 0.2, seed) for seed in (0, 0, 1)]
    xt, yt, xv, yv = splits[0]
    assert (len(yt), len(yv)) == (80, 20)
    assert sorted(torch.cat([yt, yv]).tolist()) == list(range(100))  # every row once
    assert torch.equal(torch.cat([xt, xv]), x[torch.cat([yt, yv])])  # rows keep their labels
    assert torch.equal(splits[1][3], yv) and not torch.equal(splits[2][3].sort().values, yv.sort().values)


def test_dataset_is_loaded_once_per_config(tmp_path):
    write_mnist(tmp_path)
    cfg = VisionConfig(name="mnist", data_dir=str(tmp_path), download=False)
    first = load_dataset(cfg)
    assert load_dataset(VisionConfig(name="mnist", data_dir=str(tmp_path), download=False)) is first
    assert load_dataset(VisionConfig(name="mnist", data_dir=str(tmp_path), download=False, seed=1)) is not first

"""Data sources through the real loaders, on small files made here."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from evoplat.platform.config import DataConfig
from evoplat.platform.data import DataError, check_available, load_dataset, minibatch_indices


def idx_bytes(array: np.ndarray) -> bytes:
    """An array in MNIST's idx format (big-endian header, uint8 payload)."""
    dims = array.shape
    return (struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(">" + "I" * len(dims), *dims)
            + array.astype(np.uint8).tobytes())


def write_mnist(folder, n_train: int = 60, n_test: int = 20, gz: bool = False) -> dict:
    """Tiny random MNIST idx files (optionally only their .gz) in `folder`; returns {file name: bytes}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(rng.integers(0, 256, (n, 28, 28)))
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(rng.integers(0, 10, (n,)))
    for name, data in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return files


@pytest.fixture
def tiny_mnist(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    return tmp_path


def test_mnist_through_torchvision(tiny_mnist):
    ds = load_dataset(DataConfig(source="mnist", val_size=10), str(tiny_mnist))
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_val.shape == (10, 1, 28, 28)
    assert ds.x_test.shape == (20, 1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64


def test_missing_dataset_names_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "MNIST" / "raw")):
        check_available(DataConfig(source="mnist", download=False), str(tmp_path))
    with pytest.raises(DataError, match="no .npz file"):
        check_available(DataConfig(source="npz"), str(tmp_path / "x.npz"))


def test_env_variable_root(tiny_mnist, monkeypatch):
    monkeypatch.setenv("EVOPLAT_DATA", str(tiny_mnist))
    ds = load_dataset(DataConfig(source="mnist", val_size=5))
    assert len(ds.x_train) == 55


def test_npz_source(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "arrays.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, 40).astype(np.uint8),
             x_test=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8),
             y_test=rng.integers(0, 10, 12).astype(np.uint8))
    ds = load_dataset(DataConfig(source="npz", val_size=8), str(path))
    assert ds.x_train.shape == (32, 3, 32, 32) and ds.x_test.shape == (12, 3, 32, 32)
    np.savez(tmp_path / "bad.npz", x_train=np.zeros(3))
    with pytest.raises(DataError, match="lacks keys"):
        load_dataset(DataConfig(source="npz", val_size=0), str(tmp_path / "bad.npz"))


def test_validation_split_is_disjoint_and_seeded():
    cfg = DataConfig(source="synthetic", val_size=50, synthetic_train=200)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert torch.equal(a.x_val, b.x_val) and len(a.x_train) == 150
    train_rows = {tuple(r.tolist()) for r in a.x_train.flatten(1)}
    assert not any(tuple(r.tolist()) in train_rows for r in a.x_val.flatten(1))


def test_minibatch_is_a_function_of_seed_and_step():
    a = minibatch_indices(100, 30, seed=5, step=7)
    assert torch.equal(a, minibatch_indices(100, 30, seed=5, step=7))
    assert not torch.equal(a, minibatch_indices(100, 30, seed=6, step=7))
    epoch0 = torch.cat([minibatch_indices(100, 25, 1, s) for s in range(4)])
    assert sorted(epoch0.tolist()) == list(range(100))


def test_digits_is_shipped_split_and_standardised():
    ds = load_dataset(DataConfig(source="digits", val_size=287))
    assert ds.x_train.shape == (1150, 1, 8, 8) and ds.x_val.shape == (287, 1, 8, 8)
    assert ds.x_test.shape == (360, 1, 8, 8) and ds.num_classes == 10
    train = torch.cat([ds.x_train, ds.x_val])
    assert abs(float(train.mean())) < 1e-3 and abs(float(train.std()) - 1) < 1e-3
    from sklearn.datasets import load_digits
    assert torch.equal(ds.y_test, torch.from_numpy(load_digits().target[-360:]).long())   # the last 360


def test_mnist_given_as_gz_only_is_unpacked(tmp_path):
    files = write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    ds = load_dataset(DataConfig(source="mnist", val_size=10, download=False), str(tmp_path))
    assert len(ds.x_train) == 50
    for name, data in files.items():
        assert (tmp_path / "MNIST" / "raw" / name).read_bytes() == data
    assert not list((tmp_path / "MNIST" / "raw").glob(".*partial"))


@pytest.mark.parametrize("damage", ["truncate", "magic", "labels"])
def test_corrupt_mnist_is_a_data_error(tiny_mnist, damage):
    raw = tiny_mnist / "MNIST" / "raw"
    if damage == "truncate":
        path = raw / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "magic":
        (raw / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file at all")
    else:
        (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(59)))   # one label short
    with pytest.raises(DataError, match="truncated or corrupt|must be \\[N"):
        load_dataset(DataConfig(source="mnist", val_size=10, download=False), str(tiny_mnist))


def _arrays(n_train=40, n_test=12, **replace):
    rng = np.random.default_rng(2)
    out = dict(x_train=rng.normal(size=(n_train, 6)).astype(np.float32), y_train=rng.integers(0, 3, n_train),
               x_test=rng.normal(size=(n_test, 6)).astype(np.float32), y_test=rng.integers(0, 3, n_test))
    out.update(replace)
    return out


@pytest.mark.parametrize("replace,message", [
    (dict(y_train=np.zeros(39, dtype=np.int64)), "must be \\[N"),
    (dict(x_train=np.full((40, 6), np.nan, dtype=np.float32)), "NaN or infinite"),
    (dict(x_test=np.full((12, 6), np.inf, dtype=np.float32)), "NaN or infinite"),
    (dict(y_test=np.full(12, -1)), "labels must lie in"),
    (dict(y_train=np.zeros(40, dtype=np.float32)), "integer class labels"),
    (dict(x_test=np.zeros((12, 7), dtype=np.float32)), "differ in shape"),
])
def test_malformed_npz_is_a_data_error(tmp_path, replace, message):
    path = tmp_path / "a.npz"
    np.savez(path, **_arrays(**replace))
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(source="npz", val_size=4), str(path))


def test_unreadable_npz_is_a_data_error(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, **_arrays())
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:300])
    (tmp_path / "junk.npz").write_bytes(b"\x00\x01junk" * 50)
    for name in ("cut.npz", "junk.npz"):
        with pytest.raises(DataError, match="not a readable .npz file"):
            load_dataset(DataConfig(source="npz", val_size=4), str(tmp_path / name))
    assert len(load_dataset(DataConfig(source="npz", val_size=4), str(good)).x_train) == 36


def test_a_users_loader_is_checked_too():
    def loader():
        a = _arrays()
        return a["x_train"], a["y_train"][:-1], a["x_test"], a["y_test"]
    with pytest.raises(DataError, match="data.target"):
        load_dataset(DataConfig(target=loader, val_size=4))

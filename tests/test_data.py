"""Data sources through the real loaders, on small files made here."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from evoplat.platform.config import DataConfig
from evoplat.platform.data import DataError, check_available, load_dataset, minibatch_indices


def _write_idx(path, array: np.ndarray):
    dims = array.shape
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, len(dims)))
        f.write(struct.pack(">" + "I" * len(dims), *dims))
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    return tmp_path


def test_mnist_through_torchvision(tiny_mnist):
    ds = load_dataset(DataConfig(source="mnist", val_size=10), str(tiny_mnist))
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_val.shape == (10, 1, 28, 28)
    assert ds.x_test.shape == (20, 1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64


def test_missing_dataset_names_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "MNIST" / "raw")):
        check_available(DataConfig(source="mnist"), str(tmp_path))
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

"""Data sources by name (the DATASETS registry): mnist and cifar10 through torchvision, npz array files,
synthetic; or a user's loader (`data.target`, or registered) returning (x_train, y_train, x_test,
y_test[, num_classes]) as tensors or arrays.

A dataset that fits is held as float32 tensors (optionally on a device); a held-out validation split is
carved from the training split with a fixed seed, so selection never touches the test split. The
minibatch of step g is a pure function of (seed, g): any process computes the same one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from evoplat.platform.registry import DATASETS, resolve_target

# Per-channel statistics of the training splits (CIFAR-10: mean/std of the 50,000 training images).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)


class DataError(FileNotFoundError):
    """A dataset is missing or malformed; the message names the path that was looked at."""


@dataclass
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> "Dataset":
        moved = {k: getattr(self, k).to(device) for k in
                 ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return Dataset(num_classes=self.num_classes, **moved)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def resolve_root(cfg_root: Optional[str], cli_root: Optional[str] = None) -> Path:
    """--data-root beats data.root beats $EVOPLAT_DATA beats the user cache folder."""
    root = cli_root or cfg_root or os.environ.get("EVOPLAT_DATA")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evoplat" / "data"


def check_available(cfg, cli_root: Optional[str] = None) -> None:
    """Fail fast, before Ray or a run directory exist, when the named dataset is not on disk."""
    if cfg.target is not None:
        return
    root = resolve_root(cfg.root, cli_root)
    if cfg.source == "mnist" and not cfg.download:
        raw = root / "MNIST" / "raw"
        need = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte"]
        missing = [n for n in need if not (raw / n).exists() and not (raw / f"{n}.gz").exists()]
        if missing:
            raise DataError(f"data error: MNIST not found in {raw} (missing {', '.join(missing)}); "
                            f"set --data-root/EVOPLAT_DATA or data.download=true")
    elif cfg.source == "cifar10" and not cfg.download:
        if not (root / "cifar-10-batches-py").is_dir():
            raise DataError(f"data error: CIFAR-10 not found in {root / 'cifar-10-batches-py'}; "
                            f"for an .npz copy use data.source=npz")
    elif cfg.source == "npz":
        path = npz_path(root)
        if not path.is_file():
            raise DataError(f"data error: no .npz file at {path}")


def npz_path(root: Path) -> Path:
    return root if root.suffix == ".npz" else root / "cifar10.npz"


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def _load_mnist(root: Path, download: bool):
    from torchvision.datasets import MNIST
    out = []
    for train in (True, False):
        ds = MNIST(root=str(root), train=train, download=download)
        x = ds.data.unsqueeze(1).float().div_(255.0)
        out += [_normalize(x, MNIST_MEAN, MNIST_STD), ds.targets.long()]
    return (*out, 10)


def _load_cifar10(root: Path, download: bool):
    from torchvision.datasets import CIFAR10
    out = []
    for train in (True, False):
        ds = CIFAR10(root=str(root), train=train, download=download)
        out += list(_images_to_tensor(ds.data, np.asarray(ds.targets)))
    return (*out, 10)


def _images_to_tensor(x: np.ndarray, y: np.ndarray):
    """uint8 NHWC (or NHW) images to normalised float NCHW."""
    x = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    else:
        x = x.permute(0, 3, 1, 2).contiguous()
    if x.shape[1] == 3:
        x = _normalize(x, CIFAR10_MEAN, CIFAR10_STD)
    else:
        x = (x - x.mean()) / x.std()
    return x, torch.from_numpy(y.astype(np.int64))


def _load_npz(root: Path):
    path = npz_path(root)
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise DataError(f"data error: {path} lacks keys {sorted(missing)}")
        xtr, ytr = _images_to_tensor(f["x_train"], f["y_train"]) if f["x_train"].dtype == np.uint8 else \
            (torch.from_numpy(f["x_train"]).float(), torch.from_numpy(f["y_train"].astype(np.int64)))
        xte, yte = _images_to_tensor(f["x_test"], f["y_test"]) if f["x_test"].dtype == np.uint8 else \
            (torch.from_numpy(f["x_test"]).float(), torch.from_numpy(f["y_test"].astype(np.int64)))
    return xtr, ytr, xte, yte, int(max(ytr.max(), yte.max())) + 1


def make_synthetic(shape, classes: int, n_train: int, n_test: int, seed: int = 1234):
    """Gaussian class clusters around random prototypes: learnable, but not trivially."""
    g = torch.Generator().manual_seed(seed)
    dim = int(np.prod(shape))
    protos = torch.randn(classes, dim, generator=g)

    def draw(n):
        y = torch.randint(0, classes, (n,), generator=g)
        x = protos[y] + 1.5 * torch.randn(n, dim, generator=g)
        return x.view(n, *shape), y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return xtr, ytr, xte, yte, classes


@DATASETS.register("mnist")
def _mnist_source(cfg, root: Path):
    return _load_mnist(root, cfg.download)


@DATASETS.register("cifar10")
def _cifar10_source(cfg, root: Path):
    return _load_cifar10(root, cfg.download)


@DATASETS.register("npz")
def _npz_source(cfg, root: Path):
    return _load_npz(root)


@DATASETS.register("synthetic")
def _synthetic_source(cfg, root: Path):
    return make_synthetic(cfg.synthetic_shape, cfg.synthetic_classes, cfg.synthetic_train, cfg.synthetic_test)


def _user_parts(cfg):
    """(x_train, y_train, x_test, y_test, classes) from a user's loader, as float inputs and long labels."""
    out = resolve_target(cfg.target, "data")(**cfg.kwargs)
    if not isinstance(out, (tuple, list)) or len(out) not in (4, 5):
        raise DataError("data error: data.target must return (x_train, y_train, x_test, y_test[, num_classes])")
    xtr, ytr, xte, yte = (torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
                          for v in out[:4])
    classes = int(out[4]) if len(out) == 5 else int(max(ytr.max(), yte.max())) + 1
    return xtr.float(), ytr.long(), xte.float(), yte.long(), classes


def load_dataset(cfg, cli_root: Optional[str] = None, device: str | torch.device = "cpu") -> Dataset:
    """Load the configured dataset as tensors, with its validation split carved out."""
    if cfg.target is not None:
        parts = _user_parts(cfg)
    else:
        check_available(cfg, cli_root)
        parts = DATASETS.get(cfg.source)(cfg, resolve_root(cfg.root, cli_root))
    xtr, ytr, xte, yte, classes = parts
    if cfg.val_size >= len(xtr):
        raise DataError(f"data error: data.val_size={cfg.val_size} leaves no training examples "
                        f"(the training split has {len(xtr)})")
    perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(cfg.split_seed))
    val_idx, train_idx = perm[:cfg.val_size], perm[cfg.val_size:]
    if cfg.train_subset:
        train_idx = train_idx[:cfg.train_subset]
    if cfg.test_subset:
        xte, yte = xte[:cfg.test_subset], yte[:cfg.test_subset]
    ds = Dataset(xtr[train_idx], ytr[train_idx], xtr[val_idx], ytr[val_idx], xte, yte, classes)
    return ds.to(device)


def minibatch_indices(n: int, batch_size: int, seed: int, step: int, device="cpu") -> torch.Tensor:
    """Indices of step `step`'s minibatch: epochs of a (seed, epoch)-keyed permutation, sliced in order.

    Depends only on (n, batch_size, seed, step), so the driver and every worker agree without talking.
    """
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    epoch, slot = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    perm = torch.randperm(n, generator=gen)
    return perm[slot * batch_size:(slot + 1) * batch_size].to(device)

"""Data sources by name (the DATASETS registry): mnist and cifar10 through torchvision (downloaded on
first use, download.py), digits (scikit-learn's 8x8 digits, shipped with the package), npz array files,
synthetic; or a user's loader (`data.target`, or registered) returning (x_train, y_train, x_test,
y_test[, num_classes]) as tensors or arrays.

A dataset that fits is held as float32 tensors (optionally on a device); a held-out validation split is
carved from the training split with a fixed seed, so selection never touches the test split. The
minibatch of step g is a pure function of (seed, g): any process computes the same one. Every file
that cannot be read, every mismatched length and every non-finite input is one DataError line.
"""
from __future__ import annotations

import functools

import gzip
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from evoplat.platform.download import TITLES, DownloadError, download, note
from evoplat.platform.registry import DATASETS, resolve_target

# Per-channel statistics of the training splits (CIFAR-10: mean/std of the 50,000 training images).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta")
DIGITS_TEST = 360          # digits: the last 360 of the 1,797 images are the test split


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


def check_available(cfg, cli_root: Optional[str] = None, fallback: bool = True) -> None:
    """Make sure the dataset is on disk before Ray or a run directory exist, downloading a missing
    mnist/cifar10 when `data.download` is true. When it cannot be had and `data.fallback` names another
    dataset (and `fallback`: never on resume), `cfg` is switched to that one in place, so the run's
    config.yaml records what ran; the split options are cut to fit it, and one line says so."""
    if cfg.target is not None:
        return
    root = resolve_root(cfg.root, cli_root)
    try:
        _ensure(cfg.source, root, cfg.download)
    except DataError as err:
        if not fallback or cfg.fallback is None or cfg.fallback == cfg.source:
            raise
        title = TITLES.get(cfg.source, cfg.source)
        _ensure(cfg.fallback, root, cfg.download)
        n_train = len(DATASETS.get(cfg.fallback)(cfg.model_copy(update={"source": cfg.fallback}), root)[0])
        cfg.source, cfg.train_subset, cfg.test_subset = cfg.fallback, None, None
        cfg.val_size = min(cfg.val_size, n_train // 5)
        note(f"evoplat: {str(err).removeprefix('data error: ')}; using data.fallback={cfg.fallback} instead. "
             f"For {title}, run once with network access (it is kept in {root}) or point "
             f"--data-root/$EVOPLAT_DATA at a folder that holds it.")


def _ensure(source: str, root: Path, allow_download: bool) -> None:
    """Raise DataError unless `source` is on disk under `root` (or was just downloaded there)."""
    if source == "npz":
        if not npz_path(root).is_file():
            raise DataError(f"data error: no .npz file at {npz_path(root)}")
        return
    if source not in TITLES:
        return
    if source == "mnist":
        where = root / "MNIST" / "raw"
        present = lambda: _mnist_present(where)   # noqa: E731
    else:
        where = root / "cifar-10-batches-py"
        present = lambda: all((where / n).is_file() for n in CIFAR10_FILES)   # noqa: E731
    if present():
        return
    if not allow_download:
        hint = "set --data-root/EVOPLAT_DATA or data.download=true"
        if source == "cifar10":
            hint += "; for an .npz copy use data.source=npz"
        raise DataError(f"data error: {TITLES[source]} not found in {where}; {hint}")
    try:
        download(source, root, present, lambda: _torchvision(source, root, True))
    except DownloadError as err:
        raise DataError(f"data error: {TITLES[source]} is not in {where} and cannot be downloaded: {err}") \
            from None


def _mnist_present(raw: Path) -> bool:
    """All four idx files there; one given only as .gz (fetched by hand) is unpacked first."""
    for name in MNIST_FILES:
        gz = raw / f"{name}.gz"
        if not (raw / name).exists() and gz.is_file():
            tmp = raw / f".{name}.partial"
            try:
                with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            except (OSError, EOFError) as err:
                tmp.unlink(missing_ok=True)
                raise DataError(f"data error: cannot unpack {gz} ({_first_line(err)}); "
                                f"replace or delete it") from None
            tmp.rename(raw / name)     # never a half-written idx file under the real name
    return all((raw / n).exists() for n in MNIST_FILES)


def _torchvision(source: str, root: Path, allow_download: bool = False):
    """The train and test torchvision datasets of `source`; unreadable files are one DataError line."""
    from torchvision.datasets import CIFAR10, MNIST
    cls = MNIST if source == "mnist" else CIFAR10
    if allow_download:
        return cls(root=str(root), train=True, download=True)
    try:
        return [cls(root=str(root), train=train, download=False) for train in (True, False)]
    except Exception as err:  # torchvision's parsers raise RuntimeError, AssertionError, ValueError, ...
        where = root / "MNIST" / "raw" if source == "mnist" else root / "cifar-10-batches-py"
        raise DataError(f"data error: {TITLES[source]} files in {where} are truncated or corrupt "
                        f"({_first_line(err)}); replace them, or delete them to download again") from None


def _first_line(err: BaseException) -> str:
    lines = [s for s in str(err).splitlines() if s.strip()]
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def npz_path(root: Path) -> Path:
    return root if root.suffix == ".npz" else root / "cifar10.npz"


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def _load_mnist(root: Path):
    out = []
    for ds in _torchvision("mnist", root):
        x = ds.data.unsqueeze(1).float().div_(255.0)
        out += [_normalize(x, MNIST_MEAN, MNIST_STD), ds.targets.long()]
    return (*out, 10)


def _load_cifar10(root: Path):
    out = []
    for ds in _torchvision("cifar10", root):
        out += list(_images_to_tensor(ds.data, np.asarray(ds.targets)))
    return (*out, 10)


def _load_digits():
    """scikit-learn's 8x8 digits (1,797 images, 0..16 grey levels): the last DIGITS_TEST are the test
    split; standardised with the training split's mean and std."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    n = len(x) - DIGITS_TEST
    mean, std = x[:n].mean(), x[:n].std()
    x = (x - mean) / std
    return x[:n], y[:n], x[n:], y[n:], 10


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
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise DataError(f"data error: {path} lacks keys {sorted(missing)}")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"data error: {path} is not a readable .npz file ({_first_line(err)})") from None
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise DataError(f"data error: {path}: x_{split} {list(x.shape)} and y_{split} {list(y.shape)} "
                            f"must be [N, ...] and [N] with N > 0")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"data error: {path}: y_{split} must hold integer class labels (got {y.dtype})")
        out += list(_images_to_tensor(x, y) if x.dtype == np.uint8 else
                    (torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))))
    return (*out, int(max(out[1].max(), out[3].max())) + 1)


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
    return _load_mnist(root)


@DATASETS.register("cifar10")
def _cifar10_source(cfg, root: Path):
    return _load_cifar10(root)


@DATASETS.register("digits")
def _digits_source(cfg, root: Path):
    return _load_digits()


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


def _checked(parts, origin: str):
    """The five parts, or a DataError naming what is wrong with them."""
    xtr, ytr, xte, yte, classes = parts
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.dim() < 2 or y.dim() != 1 or len(x) != len(y) or len(x) == 0:
            raise DataError(f"data error: {origin}: x_{split} {list(x.shape)} and y_{split} {list(y.shape)} "
                            f"must be [N, ...] and [N] with N > 0")
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise DataError(f"data error: {origin}: x_{split} holds {bad} NaN or infinite values")
        if int(y.min()) < 0 or int(y.max()) >= classes:
            raise DataError(f"data error: {origin}: y_{split} labels must lie in [0, {classes}) "
                            f"(found {int(y.min())}..{int(y.max())})")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"data error: {origin}: train inputs {list(xtr.shape[1:])} and test inputs "
                        f"{list(xte.shape[1:])} differ in shape")
    return xtr, ytr, xte, yte, classes


def load_dataset(cfg, cli_root: Optional[str] = None, device: str | torch.device = "cpu") -> Dataset:
    """Load the configured dataset as tensors, with its validation split carved out."""
    if cfg.target is not None:
        parts, origin = _user_parts(cfg), f"data.target {cfg.target!r}"
    else:
        root = resolve_root(cfg.root, cli_root)
        _ensure(cfg.source, root, cfg.download)      # never the fallback: that is decided before a run
        parts, origin = DATASETS.get(cfg.source)(cfg, root), f"dataset '{cfg.source}'"
    xtr, ytr, xte, yte, classes = _checked(parts, origin)
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
    return _epoch_permutation(n, seed, epoch)[slot * batch_size:(slot + 1) * batch_size].to(device, copy=True)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    # Drawn once per epoch, not once per step: a permutation of 60,000 indices costs ~2 ms, a
    # noticeable share of a fast ES generation.
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=gen)

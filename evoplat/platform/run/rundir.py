"""The run directory: resolved config, metrics.parquet, atomic checkpoints.

Layout:
    RUN_DIR/config.yaml            the resolved configuration
    RUN_DIR/metrics.parquet        one row per generation/epoch (pyarrow)
    RUN_DIR/checkpoints/step_<N>.pt full state, loadable with torch.load(weights_only=True)
    RUN_DIR/summary.json           final numbers, written when the run ends
Files are written to a temporary name and renamed, so a crash never leaves a half-written one.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from evoplat.platform.device import cpu_state


class RunDirError(FileExistsError):
    pass


class CheckpointError(ValueError):
    pass


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


class RunDirectory:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self.rows: list[dict] = []

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def check_new(cls, path: str | os.PathLike, overwrite: bool) -> None:
        """Refuse an existing, non-empty run directory unless --overwrite was given (touches nothing)."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"run directory error: {p} exists and is not a directory")
        if p.is_dir() and any(p.iterdir()) and not overwrite:
            raise RunDirError(f"run directory error: {p} already exists and is not empty; "
                              f"use --overwrite to replace it or --resume {p} to continue it")

    @classmethod
    def create(cls, path: str | os.PathLike, config_yaml: str, overwrite: bool = False) -> "RunDirectory":
        cls.check_new(path, overwrite)
        p = Path(path)
        if p.is_dir() and overwrite:
            shutil.rmtree(p)
        p.mkdir(parents=True, exist_ok=True)
        run = cls(p)
        run.ckpt_dir.mkdir(exist_ok=True)
        _atomic_write(p / "config.yaml", lambda t: t.write_text(config_yaml))
        return run

    @classmethod
    def open_existing(cls, path: str | os.PathLike) -> "RunDirectory":
        p = Path(path)
        if not (p / "config.yaml").is_file():
            raise RunDirError(f"resume error: {p} is not a run directory (no config.yaml)")
        run = cls(p)
        if (p / "metrics.parquet").is_file():
            run.rows = pq.read_table(p / "metrics.parquet").to_pylist()
        return run

    # -- metrics --------------------------------------------------------------------------------
    def log(self, row: dict) -> None:
        self.rows.append({k: _plain(v) for k, v in row.items()})

    def flush(self) -> None:
        if not self.rows:
            return
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in self.rows])
        _atomic_write(self.path / "metrics.parquet", lambda t: pq.write_table(table, t))

    def truncate(self, step_key: str, upto: int) -> None:
        """Drop metric rows after `upto` (rows a crashed run logged past its last checkpoint)."""
        self.rows = [r for r in self.rows if r.get(step_key, -1) <= upto]

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, step: int, state: dict, keep: int = 2) -> Path:
        path = self.ckpt_dir / f"step_{step:08d}.pt"
        self.ckpt_dir.mkdir(exist_ok=True)
        _atomic_write(path, lambda t: torch.save(state, t))
        for old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def checkpoints(self) -> list[Path]:
        return sorted(self.ckpt_dir.glob("step_*.pt"))

    def load_latest(self) -> Optional[dict]:
        ckpts = self.checkpoints()
        if not ckpts:
            return None
        return load_checkpoint(ckpts[-1])

    def save_network(self, module, input_shape: tuple, num_outputs: int, step: int) -> None:
        """model.pt: the trained network's weights (CPU) and what it was built for; replaced atomically."""
        state = {"state_dict": cpu_state(dict(module.state_dict())), "input_shape": [int(d) for d in input_shape],
                 "num_outputs": int(num_outputs), "step": int(step)}
        _atomic_write(self.path / "model.pt", lambda t: torch.save(state, t))

    def load_network(self) -> dict:
        path = self.path / "model.pt"
        if not path.is_file():
            raise CheckpointError(f"model error: {self.path} has no model.pt (no checkpoint written yet, or its "
                                  "method's result is not one network: a rec_lra population, grad_instructor)")
        return load_checkpoint(path)

    def write_summary(self, summary: dict) -> None:
        text = json.dumps({k: _plain(v) for k, v in summary.items()}, indent=2)
        _atomic_write(self.path / "summary.json", lambda t: t.write_text(text))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint safely (tensors and plain containers only); a damaged file is a clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"checkpoint error: {path} cannot be loaded ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})") from None


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v

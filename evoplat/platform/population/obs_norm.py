"""Observation normalization for policies trained by ES on an environment (Salimans et al. 2017).

A policy sees clip((obs - mean) / std, -clip, clip), with mean and std from every observation the
members met in earlier generations: training episodes count each observation a member acted on; the
statistics are frozen within a generation, so every member of it acts on the same normalization
wherever it runs. Each member's sums travel back with its fitness, one row per member, and the
driver adds the rows in member order, so the statistics, like the fitness, do not depend on the
worker count. They live in the ES state (`extra["task"]`): checkpointed, resumed bit for bit.

The exported policy (model.pt, `evoplat.load_model`) carries the final statistics in an
`ObservationNormalizer` in front of the network: it takes raw observations.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

# The variance floor of OpenAI's ES starter: a feature that barely moves is not blown up to unit scale.
MIN_VARIANCE = 1e-2


class ObservationNormalizer(nn.Module):
    """clip((x - mean) / std, -clip, clip), the statistics held as buffers (saved with the network)."""

    def __init__(self, shape: tuple, clip: float = 5.0):
        super().__init__()
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).clamp(-self.clip, self.clip)


def empty_stats(shape: tuple) -> dict:
    """No observation seen yet: the normalization is the identity."""
    d = int(np.prod(shape))
    return {"count": torch.zeros(1, dtype=torch.float64), "sum": torch.zeros(d, dtype=torch.float64),
            "sumsq": torch.zeros(d, dtype=torch.float64)}


def member_rows(n: int, shape: tuple) -> np.ndarray:
    """One row per member: [count, sum (d), sum of squares (d)], float64."""
    return np.zeros((n, 1 + 2 * int(np.prod(shape))))


def accumulate(rows: np.ndarray, members: np.ndarray, obs: np.ndarray) -> None:
    """Add the observations obs [len(members), ...] to the rows of `members` (distinct indices)."""
    o = obs.reshape(len(members), -1).astype(np.float64)
    d = o.shape[1]
    rows[members, 0] += 1.0
    rows[members, 1:1 + d] += o
    rows[members, 1 + d:] += o * o


def merge(stats: dict, rows: np.ndarray) -> dict:
    """The statistics after a generation whose members' rows are `rows` (in member order): a new dict."""
    total = torch.from_numpy(rows.sum(axis=0))
    d = len(stats["sum"])
    return {"count": stats["count"] + total[:1], "sum": stats["sum"] + total[1:1 + d],
            "sumsq": stats["sumsq"] + total[1 + d:]}


def mean_std(stats: dict, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """float32 (mean, std) of `shape`; (0, 1) before any observation."""
    n = float(stats["count"][0])
    if n == 0:
        return np.zeros(shape, np.float32), np.ones(shape, np.float32)
    mean = stats["sum"].numpy() / n
    var = np.maximum(stats["sumsq"].numpy() / n - mean * mean, MIN_VARIANCE)
    return mean.astype(np.float32).reshape(shape), np.sqrt(var).astype(np.float32).reshape(shape)

"""Fitness shaping. Non-finite fitness (NaN, +-inf) always ranks worst, so it never steers the center."""
from __future__ import annotations

import numpy as np


def sanitize(fitness) -> tuple[np.ndarray, int]:
    """Replace non-finite values by a value below every finite one; return (fitness, how many)."""
    f = np.array(fitness, dtype=np.float64)
    bad = ~np.isfinite(f)
    if bad.any():
        floor = f[~bad].min() - 1.0 if (~bad).any() else 0.0
        f[bad] = floor
    return f, int(bad.sum())


def ranks(fitness) -> np.ndarray:
    """0 for the worst member, N-1 for the best (ties broken by member order, deterministically)."""
    return _ranks(fitness, np.arange)


def centered_ranks(fitness) -> np.ndarray:
    """Ranks scaled to [-0.5, 0.5] (Salimans et al. 2017)."""
    # Scaling the rank values before they are scattered is the same arithmetic on each value, on one
    # pass fewer: this runs first after every evaluation, when each array pass costs most.
    return _ranks(fitness, lambda m: np.arange(m) / max(1, m - 1) - 0.5)


def _ranks(fitness, values) -> np.ndarray:
    """values(N)[rank of member i] for each member i."""
    f = np.asarray(fitness, dtype=np.float64)
    if not np.isfinite(f).all():
        f, _ = sanitize(f)
    r = np.empty(len(f), dtype=np.float64)
    r[np.argsort(f, kind="stable")] = values(len(f))
    return r


def nes_utilities(fitness) -> np.ndarray:
    """Rank-based NES utilities (Wierstra et al. 2014): sum to zero, best member weighted most."""
    n = len(fitness)
    rank_from_best = (n - 1) - ranks(fitness)  # 0 = best
    u = np.maximum(0.0, np.log(n / 2 + 1) - np.log(rank_from_best + 1))
    return u / u.sum() - 1.0 / n

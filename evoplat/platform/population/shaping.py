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
    """0 for the worst member, N-1 for the best; tied members share the mean of their ranks."""
    return _ranks(fitness, np.arange)


def centered_ranks(fitness) -> np.ndarray:
    """Ranks scaled to [-0.5, 0.5] (Salimans et al. 2017)."""
    # Scaling the rank values before they are scattered is the same arithmetic on each value, on one
    # pass fewer: this runs first after every evaluation, when each array pass costs most.
    return _ranks(fitness, lambda m: np.arange(m) / max(1, m - 1) - 0.5)


def nes_utilities(fitness) -> np.ndarray:
    """Rank-based NES utilities (Wierstra et al. 2014): sum to zero, best member weighted most."""
    f, order = _sorted(fitness)
    n = len(f)
    rank_from_best = np.empty(n, dtype=np.float64)
    rank_from_best[order] = np.arange(n - 1, -1, -1)        # 0 = best
    u = np.maximum(0.0, np.log(n / 2 + 1) - np.log(rank_from_best + 1))
    return _share_ties(f, order, u / u.sum() - 1.0 / n)


def _ranks(fitness, values) -> np.ndarray:
    """values(N)[rank of member i] for each member i (ties shared, `_share_ties`)."""
    f, order = _sorted(fitness)
    r = np.empty(len(f), dtype=np.float64)
    r[order] = values(len(f))
    return _share_ties(f, order, r)


def _sorted(fitness) -> tuple[np.ndarray, np.ndarray]:
    """(sanitized fitness, the member indices from worst to best)."""
    f = np.asarray(fitness, dtype=np.float64)
    if not np.isfinite(f).all():
        f, _ = sanitize(f)
    return f, np.argsort(f, kind="stable")


def _share_ties(f: np.ndarray, order: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`w` (one value per member) with members of equal fitness given the mean of their values. A tie
    says nothing about which member is better, so it must not steer the center: ranked by member order
    instead, the two members of a tied antithetic pair would get different weights, and every generation
    would step along their noise (a step Adam scales to full size), which with discrete fitness (episode
    returns, accuracy) is most generations."""
    sorted_f = f[order]
    new_value = sorted_f[1:] != sorted_f[:-1]
    if new_value.all():
        return w
    starts = np.flatnonzero(np.concatenate(([True], new_value)))
    counts = np.diff(np.append(starts, len(f)))
    w[order] = np.repeat(np.add.reduceat(w[order], starts) / counts, counts)
    return w

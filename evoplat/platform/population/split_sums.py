"""The workers of a loop sum a full-rank update together, each over its own range of the parameters.

With `runtime.loop: workers` every worker applies the same update, and at full rank its cost is the
noise sum, sum_k w_k eps_k over every key's row of the noise table. Two workers each reading all rows at
once (52 MB a generation for P-ES) made it 4.9-5.0 ms where one process alone, its other core idle, took
4.0-4.1. Here each worker sums its own range of the parameters over all keys, and the group all-gathers
the ranges: each reads its share of every row. The sums are element-wise, key by key in key order, so a
range that starts at a multiple of 64 holds the same bits as those entries of the whole sum
(`KeyedNoise._sums`): the update stays bitwise that of the driver loop. Only where the group all-gathers
through shared memory and a range fits its slots (64k parameters per worker): through gloo the gather
would cost more than the split saves, so each worker sums everything, as before.
"""
from __future__ import annotations

import numpy as np
import torch

from evoplat.platform.population.noise import KeyedNoise, NoiseTable
from evoplat.platform.runtime import collective

# Every range starts where the element-wise kernels start a vector block (64 floats) and, for a long
# table vector, on a row of the table: its sum is then a range of the table's embedding_bag sum
ALIGN = NoiseTable.ROW


def parameter_ranges(dim: int, world: int) -> list[tuple[int, int]]:
    """One contiguous range of the `dim` parameters per worker (the last may be short or empty)."""
    per = -(-dim // world)
    per = -(-per // ALIGN) * ALIGN
    return [(min(r * per, dim), min((r + 1) * per, dim)) for r in range(world)]


def update_noise(noise, rank: int, world: int):
    """`noise` as the update of worker `rank` of a group of `world` reads it: SplitSums for table noise
    where the ranges go through the shared slots, else `noise` itself (each worker sums everything). The
    same in every worker: it depends on sizes only."""
    width = max(b - a for a, b in parameter_ranges(noise.dim, world))
    if isinstance(noise, NoiseTable) and world > 1 and collective.gathers_in_shared_memory(4 * width):
        return SplitSums(noise, rank, world)
    return noise


class SplitSums:
    """Table noise as one worker's update sees it: `combine` and `combine_both` computed with the group
    (collective calls, which every worker makes at the same point of every generation); everything else
    is the noise's own."""

    def __init__(self, noise, rank: int, world: int):
        self.noise, self.rank = noise, rank
        self.ranges = parameter_ranges(noise.dim, world)
        self.width = max(b - a for a, b in self.ranges)

    def __getattr__(self, name):
        return getattr(self.noise, name)

    # The noise's own entry points, calling this class's `_sums`
    combine = KeyedNoise.combine
    combine_both = KeyedNoise.combine_both

    def _sums(self, pop, coeffs, powers: tuple, chunk: int) -> tuple:
        lo, hi = self.ranges[self.rank]
        sums = []
        for part in self.noise._sums(pop, coeffs, powers, chunk, lo, hi):
            mine = torch.zeros(self.width)
            mine[: hi - lo] = torch.from_numpy(part)
            parts = collective.all_gather(mine)
            sums.append(np.concatenate([p[: b - a].numpy() for p, (a, b) in zip(parts, self.ranges)]))
        return tuple(sums)

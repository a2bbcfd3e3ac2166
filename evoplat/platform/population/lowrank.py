"""Low-rank perturbations (`es.perturbation: lowrank`): each weight matrix's noise is A B^T / sqrt(r).

A parameter of shape (out, ...) with at least two dimensions is treated as the matrix (out, in) with
in = prod(...) (a conv kernel: (out, in*k*k)); its noise is A B^T / sqrt(r) with A [out, r] and
B [in, r] standard Gaussian, so each entry still has unit variance. 1-D parameters (biases, norms) get
full-rank noise. A key's factors are one vector of the underlying keyed noise (counter or table), so a
member's noise stays a pure function of (seed, generation, key). The forward never forms A B^T for a
linear layer: x (theta + sigma A B^T)^T = x theta^T + sigma (x B) A^T; the update is
sum_k w_k A_k B_k^T, one matrix product [out, K r] @ [K r, in] per weight.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from evoplat.platform.population.noise import KeyedNoise, Population
from evoplat.platform.population.threads import fixed_threads


class RecentFactors:
    """One generation's factor rows, [num_keys, factor dim], filled by this process's evaluation and
    shared by every LowRankNoise over the same base noise in the process: the update that follows in
    the same process (backend local; each worker in the workers' loop) reads them, the keys no chunk
    here evaluated drawn into the gaps, instead of drawing all again (after an evaluation, with the
    table rows out of cache, that costs a fifth of a low-rank P-ES update). Factors are a pure function
    of (base noise, generation, key): a remembered row is the same bits as a fresh draw.

    A fresh buffer per generation (no chunk's rows are ever overwritten); none above `max_bytes`.

    The workers of a loop on one machine can keep the rows in memory they all map (`share`): each
    worker's evaluation writes its keys' rows there and stamps them with the generation, so every
    worker's update finds the others' rows too and draws none. Two generations alternate in it: a worker
    writes generation g + 1 while a slower one may still read g, and it cannot reach g + 2 before every
    worker has sent generation g + 1's fitness, which each does only after its update of g. The stamps
    are written after the rows, and x86 (where alone the group shares memory) keeps that order.
    """

    max_bytes = 16 << 20
    _current: dict = {}           # base identity -> (generation, buffer, filled key ranges, stamps or None)
    _shared = None                # (stamps [2, K] int64, rows [2, K, dim] float32) mapped by the group

    @staticmethod
    def shared_bytes(num_keys: int, dim: int) -> int:
        """The size of the memory `share` needs for generations of `num_keys` keys of `dim` values."""
        return 2 * num_keys * (8 + 4 * dim)

    @classmethod
    def share(cls, memory, num_keys: int = 0, dim: int = 0) -> None:
        """Keep the rows of generations of `num_keys` keys in `memory` (a uint8 array of
        `shared_bytes(num_keys, dim)` bytes every worker of the group maps), or privately (None)."""
        cls._current.clear()
        if memory is None:
            cls._shared = None
            return
        stamps = np.frombuffer(memory, dtype=np.int64, count=2 * num_keys).reshape(2, num_keys)
        rows = np.frombuffer(memory, dtype=np.float32, offset=16 * num_keys).reshape(2, num_keys, dim)
        cls._shared = (stamps, torch.from_numpy(rows))

    @classmethod
    def rows(cls, base_id, generation: int, num_keys: int, dim: int, k0: int, k1: int):
        """Writable rows [k0, k1) of `generation`'s buffer (made on first use), or None if too large."""
        if num_keys * dim * 4 > cls.max_bytes or not 0 <= k0 <= k1 <= num_keys:
            return None
        gen, buf, filled, stamps = cls._current.get(base_id, (None, None, None, None))
        if gen != generation or buf.shape != (num_keys, dim):
            cls._current.clear()           # one generation of one run's noise at a time
            if cls._shared is not None and cls._shared[1].shape[1:] == (num_keys, dim):
                stamps, buf = cls._shared[0][generation % 2], cls._shared[1][generation % 2]
            else:
                stamps, buf = None, torch.empty(num_keys, dim)
            cls._current[base_id] = (generation, buf, [], stamps)
        return buf[k0:k1]

    @classmethod
    def mark(cls, base_id, generation: int, k0: int, k1: int) -> None:
        """Rows [k0, k1) of `generation`'s buffer now hold their keys' factors."""
        gen, _, filled, stamps = cls._current.get(base_id, (None, None, None, None))
        if gen == generation and stamps is not None:
            stamps[k0:k1] = generation + 1         # 0: never written
        elif gen == generation:
            filled.append((k0, k1))

    @classmethod
    def buffer(cls, base_id, generation: int):
        """(buffer, sorted filled key ranges) of `generation`, or (None, [])."""
        gen, buf, filled, stamps = cls._current.get(base_id, (None, None, [], None))
        if gen != generation:
            return None, []
        if stamps is None:
            return buf, sorted(filled)
        done = np.concatenate(([False], stamps == generation + 1, [False]))
        edges = np.flatnonzero(done[1:] != done[:-1])
        return buf, [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


class LowRankNoise(KeyedNoise):
    """Keyed low-rank directions in parameter space (dimension P) built from factor vectors of `base`."""

    def __init__(self, base: KeyedNoise, layout, rank: int = 1):
        super().__init__(base.seed, layout.size)
        self.rank = int(rank)
        self.segments = []          # (param offset, shape, factor offset, out, in or 0 for full)
        f = 0
        for shape, off in zip(layout.shapes, layout.offsets):
            n = int(np.prod(shape))
            if len(shape) >= 2:
                out, inn = shape[0], n // shape[0]
                self.segments.append((off, tuple(shape), f, out, inn))
                f += (out + inn) * self.rank
            else:
                self.segments.append((off, tuple(shape), f, n, 0))
                f += n
        if f != base.dim:
            raise ValueError(f"low-rank noise needs factor vectors of {f} values, base noise has {base.dim}")
        self.base = base

    @staticmethod
    def factor_dim(layout, rank: int) -> int:
        return sum((s[0] + int(np.prod(s)) // s[0]) * rank if len(s) >= 2 else int(np.prod(s))
                   for s in layout.shapes)

    def _split(self, factors: torch.Tensor, seg) -> tuple:
        """(A [n, out, r] scaled by 1/sqrt(r), B [n, in, r]) or the full-rank segment [n, out]."""
        _, _, f, out, inn = seg
        if not inn:
            return (factors[:, f:f + out],)
        r = self.rank
        a = factors[:, f:f + out * r].reshape(-1, out, r)
        if r > 1:                   # at rank 1 the scaling is exact: a view, not a scaled copy
            a = a * (1.0 / math.sqrt(r))
        b = factors[:, f + out * r:f + (out + inn) * r].reshape(-1, inn, r)
        return a, b

    def factors(self, generation: int, keys, device="cpu") -> torch.Tensor:
        return torch.from_numpy(self.base.block(generation, keys)).to(device)

    def _base_id(self) -> tuple:
        b = self.base
        return type(b).__name__, b.seed, b.dim, getattr(b, "size", 0)

    def _update_factors(self, generation: int, k0: int, k1: int) -> torch.Tensor:
        """Factor rows of keys [k0, k1): the evaluation's, with the keys it did not draw drawn into the gaps."""
        buf, filled = RecentFactors.buffer(self._base_id(), generation)
        if buf is None or k1 > len(buf) or not filled:
            return self.factors(generation, range(k0, k1))
        k = k0
        for a, b in filled + [(k1, k1)]:
            if a > k:
                self.base.block(generation, range(k, min(a, k1)), out=buf[k:min(a, k1)].numpy())
            k = max(k, b)
            if k >= k1:
                break
        return buf[k0:k1]

    def directions(self, generation: int, keys) -> torch.Tensor:
        return self.from_factors(self.factors(generation, keys))

    def from_factors(self, factors: torch.Tensor) -> torch.Tensor:
        """Parameter-space directions [n, P] of n keys' factor rows, on the factors' device."""
        out = torch.empty(len(factors), self.dim, device=factors.device)
        for seg in self.segments:
            parts = self._split(factors, seg)
            off, shape = seg[0], seg[1]
            n = int(np.prod(shape))
            out[:, off:off + n] = parts[0] if len(parts) == 1 else (parts[0] @ parts[1].transpose(1, 2)).flatten(1)
        return out

    def block(self, generation: int, keys, out=None) -> np.ndarray:
        d = self.directions(generation, list(keys)).numpy()
        if out is not None:
            out[...] = d
            return out
        return d

    def vector(self, generation: int, key: int) -> np.ndarray:
        return self.block(generation, [key])[0]

    def key_views(self, generation: int, keys, device="cpu") -> list:
        return list(self.directions(generation, list(keys)).to(device))

    def chunk_noise(self, generation: int, keys, device, num_keys: int = 0) -> "LowRankChunk":
        """The factors of distinct `keys` (sorted) of a generation of `num_keys` keys, remembered for
        this process's update (RecentFactors) when they are a key range.

        Off the CPU the rows are gathered where the base noise has them (a table copied to the device
        once: no upload of the chunk's factors); this process's update, on the host, then reads them itself."""
        device = torch.device(device)
        if device.type != "cpu":
            return LowRankChunk(self, self.base.chunk_noise(generation, keys, device).directions())
        rows = None
        if num_keys and keys and keys[0] >= 0 and keys[-1] - keys[0] + 1 == len(keys):
            rows = RecentFactors.rows(self._base_id(), generation, num_keys, self.base.dim, keys[0], keys[-1] + 1)
        if rows is None:
            rows = self.factors(generation, keys)
        else:
            self.base.block(generation, keys, out=rows.numpy())
            RecentFactors.mark(self._base_id(), generation, keys[0], keys[-1] + 1)
        return LowRankChunk(self, rows.to(device))

    def _sums(self, pop: Population, coeffs, powers: tuple, chunk: int) -> tuple:
        """`combine` and `combine_both` for low-rank noise: sum_k w_k (A_k B_k^T)^power per weight as one
        matrix product over all keys, w . segment^power for 1-D params, each key block's factors read
        (or drawn) once for all powers.

        The square of a rank-r matrix is a rank-r(r+1)/2 one: (sum_s a_s b_s^T)^2 = sum_{s<=t} c_st
        (a_s a_t)(b_s b_t)^T with c_st = 2 for s < t, so the second power (SNES's and PGPE's sigma
        update) is a product too, never the materialised directions (a low-rank PGPE update on P-ES took
        2.0 ms this way, 85 ms that way).
        """
        weights = [torch.from_numpy(self.key_weights(pop, coeffs, p).astype(np.float32)) for p in powers]
        if pop.num_keys == 0:
            return tuple(np.zeros(self.dim, dtype=np.float32) for _ in powers)
        # The first key block writes every entry, later ones add to it: no zero-filled 400 KB to read.
        totals = [torch.empty(self.dim) for _ in powers]
        with fixed_threads():
            # Key blocks in order: memory bounded by one block's factors (their pair products for the
            # second power: (r+1)/2 times as many), whatever the population size.
            for k0 in range(0, pop.num_keys, chunk * 16):
                k1 = min(k0 + chunk * 16, pop.num_keys)
                factors = self._update_factors(pop.generation, k0, k1)
                for power, w, total in zip(powers, weights, totals):
                    self._add_block(total, factors, w[k0:k1], power, first=k0 == 0)
        return tuple(t.numpy() for t in totals)

    def _add_block(self, total: torch.Tensor, factors: torch.Tensor, wk: torch.Tensor, power: int,
                   first: bool) -> None:
        """Write (first block) or add one key block's sum_k wk_k (noise_k)^power into `total`."""
        for seg in self.segments:
            off, _, f, out, inn = seg
            if not inn:
                e = factors[:, f:f + out]
                part = wk @ (e if power == 1 else e * e)
                total[off:off + out].copy_(part) if first else total[off:off + out].add_(part)
                continue
            a, b = self._weighted_pair(factors, seg, wk, power)
            # [K q, out]^T @ [K q, in] straight into `total`: for rank 1 and power 1 b is a view of the
            # factors (no permuted copy).
            dst = total[off:off + out * inn].view(out, inn)
            torch.mm(a.T, b, out=dst) if first else dst.addmm_(a.T, b)

    def _weighted_pair(self, factors: torch.Tensor, seg, wk: torch.Tensor, power: int) -> tuple:
        """(a [K q, out], b [K q, in]) with a^T b = sum_k wk_k (A_k B_k^T)^power for a weight segment."""
        _, _, f, out, inn = seg
        if self.rank == 1:          # A and B are plain column slices: the same operands, fewer ops
            a, b = factors[:, f:f + out], factors[:, f + out:f + out + inn]
            if power == 2:
                a, b = a * a, b * b
            return a * wk[:, None], b
        a, b = self._split(factors, seg)                    # [K, out, r], [K, in, r]
        if power == 2:
            s, t = torch.triu_indices(self.rank, self.rank)
            a = a[:, :, s] * a[:, :, t] * torch.where(s < t, 2.0, 1.0)
            b = b[:, :, s] * b[:, :, t]
        a = (a * wk[:, None, None]).transpose(1, 2).reshape(-1, out)
        return a, b.transpose(1, 2).reshape(-1, inn)


class LowRankChunk:
    """Low-rank noise of a chunk's distinct keys, read per parameter by the structured forward."""

    kind = "lowrank"

    def __init__(self, noise: LowRankNoise, factors: torch.Tensor):
        self.noise, self.factors = noise, factors
        self.by_offset = {seg[0]: seg for seg in noise.segments}

    def directions(self) -> torch.Tensor:
        """The distinct keys' directions [Kd, P], formed where the factors are."""
        return self.noise.from_factors(self.factors)

    def param(self, offset: int, shape: tuple) -> tuple:
        seg = self.by_offset[offset]
        parts = self.noise._split(self.factors, seg)
        if len(parts) == 1:
            return "stacked", parts[0].view(-1, *shape)
        return ("lowrank", *parts)


def make_perturbation(kind: str, noise, layout, rank: int = 1, table_size: int = 0, seed: int = 0):
    """The keyed noise of `es.perturbation`: `noise` ('counter'/'table') over the P parameters, or over
    the low-rank factors of each weight (`kind` 'lowrank')."""
    from evoplat.platform.population.noise import make_noise
    if kind == "full":
        return make_noise(noise, seed, layout.size, table_size)
    if kind != "lowrank":
        raise ValueError(f"unknown perturbation {kind!r}")
    return LowRankNoise(make_noise(noise, seed, LowRankNoise.factor_dim(layout, rank), table_size), layout, rank)

"""Keyed perturbations: member noise is a pure function of (run seed, generation, key).

Two sources with one interface:
- `CounterNoise`: each key's Gaussian vector comes from a Philox-4x32 stream whose 128-bit key is
  (seed, generation, key) (counter-based: any process regenerates it bit for bit);
- `NoiseTable`: a slice of a table of Gaussians that each worker builds once from the run seed (once per
  the process, at an offset keyed by (seed, generation, key).
  Slicing costs a memcpy instead of drawing P Gaussians (see BENCHMARKS.md).
Neither ships noise or per-member parameter vectors anywhere. Antithetic pairs (2k, 2k+1) share key k
with opposite signs; a strategy that evaluates its parent as member 0 gives that member no noise.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from evoplat.platform.population.threads import caller_threads, fixed_threads

if TYPE_CHECKING:                 # members.py imports this module: only the annotation needs it here
    from evoplat.platform.population.members import FullRankChunk

_MASK32 = (1 << 32) - 1


@dataclass
class Population:
    """What a generation's members are: member i = center + scale * sign_i * eps(key_i).

    This is all that travels to the workers (plus the generation number and a member range).
    """

    center: np.ndarray                      # float32 [P]
    scale: Union[float, np.ndarray]         # a scalar sigma or a float32 [P] vector
    size: int
    generation: int
    antithetic: bool = True
    parent_first: bool = False              # member 0 is the unperturbed center

    def key_sign(self, i: int) -> tuple[int, float]:
        """(noise key, sign) of member i; key -1 means no perturbation."""
        if self.parent_first:
            if i == 0:
                return -1, 0.0
            i -= 1
        if self.antithetic:
            return i // 2, (1.0 if i % 2 == 0 else -1.0)
        return i, 1.0

    @property
    def num_keys(self) -> int:
        n = self.size - (1 if self.parent_first else 0)
        return (n + 1) // 2 if self.antithetic else n

    @property
    def nbytes(self) -> int:
        return int(self.center.nbytes + (self.scale.nbytes if isinstance(self.scale, np.ndarray) else 8))


def _philox(seed: int, generation: int, key: int) -> np.random.Generator:
    k = np.array([(seed & _MASK32) | ((generation & _MASK32) << 32), key & ((1 << 64) - 1)], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=k))


def _mix64(seed: int, generation: int, keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of (seed, generation, key) for an array of keys (splitmix64 finaliser rounds)."""
    with np.errstate(over="ignore"):
        h = keys * np.uint64(0x9E3779B97F4A7C15) + np.uint64(((seed & _MASK32) << 32 | (generation & _MASK32))
                                                              * 0xBF58476D1CE4E5B9 & ((1 << 64) - 1))
        for _ in range(2):
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
    return h


class KeyedNoise:
    """Gaussian vectors of dimension `dim` keyed by (seed, generation, key); subclasses give `vector`."""

    def __init__(self, seed: int, dim: int):
        self.seed = int(seed)
        self.dim = int(dim)

    def vector(self, generation: int, key: int) -> np.ndarray:
        raise NotImplementedError

    def block(self, generation: int, keys, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Stack the vectors of `keys` as rows of a float32 [len(keys), dim] array."""
        keys = list(keys)
        if out is None:
            out = np.empty((len(keys), self.dim), dtype=np.float32)
        for row, key in enumerate(keys):
            if key < 0:
                out[row] = 0.0
            else:
                out[row] = self.vector(generation, key)
        return out

    def directions(self, generation: int, keys) -> torch.Tensor:
        """Parameter-space directions of `keys` as rows of a float32 tensor (zeros for key -1)."""
        return torch.from_numpy(self.block(generation, keys))

    def members(self, pop: Population, start: int, stop: int) -> torch.Tensor:
        """Parameter vectors of members [start, stop) as a float32 tensor [stop-start, P].

        Each distinct key is drawn once: an antithetic partner reuses its pair's vector.
        """
        keys, signs = zip(*(pop.key_sign(i) for i in range(start, stop)))
        distinct = sorted(set(keys))
        scale = pop.scale if np.isscalar(pop.scale) else readonly_tensor(pop.scale)
        return form_members(self.directions(pop.generation, distinct),
                            torch.tensor([distinct.index(k) for k in keys]),
                            torch.tensor(signs, dtype=torch.float32), scale, readonly_tensor(pop.center))

    def chunk(self, pop: Population, start: int, stop: int, device="cpu"):
        """Members [start, stop) described, not materialised (members.MemberChunk)."""
        from evoplat.platform.population.members import MemberChunk
        return MemberChunk(self, pop, start, stop, torch.device(device))

    def key_weights(self, pop: Population, coeffs, power: int = 1) -> np.ndarray:
        """Per-key coefficients: members sharing a key merged (an antithetic pair's signs folded in)."""
        c = np.asarray(coeffs, dtype=np.float64)
        i = np.arange(len(c))
        if pop.parent_first:                  # member 0 is the parent: no key
            c, i = c[1:], i[1:] - 1
        if pop.antithetic and len(c) % 2 == 0:
            # Each key's pair as (0 + c_+) -/+ c_-: the accumulation below, to the bit (a -0.0 included).
            first = 0.0 + c[0::2]
            return first - c[1::2] if power % 2 else first + c[1::2]
        keys = i // 2 if pop.antithetic else i
        if pop.antithetic and power % 2:
            c = np.where(i % 2 == 0, c, -c)
        per_key = np.zeros(pop.num_keys, dtype=np.float64)
        np.add.at(per_key, keys, c)           # in member order, like the loop it replaces: same sums
        return per_key

    def key_views(self, generation: int, keys, device="cpu") -> list:
        """One float32 tensor [dim] per key: views of the table where there is one, else fresh draws."""
        return list(torch.from_numpy(self.block(generation, keys)).to(device))

    def chunk_noise(self, generation: int, keys, device, num_keys: int = 0) -> "FullRankChunk":
        """The noise of distinct `keys` (of a generation of `num_keys` keys), read parameter by parameter
        by the structured forward."""
        from evoplat.platform.population.members import FullRankChunk
        block = torch.from_numpy(self.block(generation, keys)).to(device)
        return FullRankChunk(block.view(-1), [r * self.dim for r in range(len(block))], self.dim)

    def combine(self, pop: Population, coeffs, power: int = 1, chunk: int = 256) -> np.ndarray:
        """sum_i coeffs[i] * (sign_i * eps_i) ** power over all members, power 1 or 2.

        Members sharing a key are merged first, so an antithetic population draws each vector once. The
        sum runs key by key in key order on one thread: the result is bitwise the same whatever the
        caller's thread count (a multi-threaded BLAS product changes its summation order with it).
        """
        if power not in (1, 2):
            raise ValueError(f"combine sums first or second powers, not {power}")
        return self._sums(pop, coeffs, (power,), chunk)[0]

    def combine_both(self, pop: Population, coeffs, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(combine(pop, coeffs, 1), combine(pop, coeffs, 2)), the same bits, from one pass over the
        noise: each vector read, or with counter noise drawn, once (PGPE's and SNES's update)."""
        return self._sums(pop, coeffs, (1, 2), chunk)

    def _sums(self, pop: Population, coeffs, powers: tuple, chunk: int, lo: int = 0, hi: int | None = None) -> tuple:
        """The sums of `combine` / `combine_both` over parameters [lo, hi) (default all). Element-wise,
        key by key: a range that starts at a multiple of 64 holds the same bits as those entries of the
        whole sums (the kernels cut it into the same vector blocks)."""
        hi = self.dim if hi is None else hi
        weights = [self.key_weights(pop, coeffs, p).astype(np.float32) for p in powers]
        totals = [torch.zeros(hi - lo, dtype=torch.float32) for _ in powers]
        with fixed_threads():
            for a in range(0, pop.num_keys, chunk):
                b = min(a + chunk, pop.num_keys)
                for k, eps in zip(range(a, b), self.key_views(pop.generation, range(a, b))):
                    eps = eps[lo:hi]
                    for power, w, total in zip(powers, weights, totals):
                        if w[k] == 0.0:
                            continue
                        if power == 1:
                            total.add_(eps, alpha=float(w[k]))
                        else:               # no squared temporary: one pass instead of three
                            total.addcmul_(eps, eps, value=float(w[k]))
        return tuple(t.numpy() for t in totals)


class CounterNoise(KeyedNoise):
    """Counter-based: a fresh Philox stream per (seed, generation, key)."""

    def vector(self, generation: int, key: int) -> np.ndarray:
        return _philox(self.seed, generation, key).standard_normal(self.dim, dtype=np.float32)


class NoiseTable(KeyedNoise):
    """Slices of a table of Gaussians that each process builds once from the run seed.

    `size` 0 picks max(2**24, 8 * dim) values (64 MiB at least). The table is never sent anywhere.

    A long vector (a full-rank parameter vector, over LONG values) starts at a multiple of ROW: the table
    is then a matrix of ROW-value rows, a key's vector a run of them, and an update's sum over keys one
    `embedding_bag` call (a bag per row of the result), not a Python loop of one add per key: faster on
    one thread, and it can use a second (docs/es.md). A bag is one thread's, summed key by key in key
    order: the same bits on any thread count and over any range of rows. Short vectors (low-rank
    factors) keep offsets at any value: their update never sums table rows.
    """

    _cache: dict = {}   # (seed, size) -> table, so a process builds each table once (and its squares)
    LONG, ROW = 16384, 128
    KEY_BLOCK = 512     # keys per embedding_bag call: its indices stay a few MB at any popsize

    def __init__(self, seed: int, dim: int, size: int = 0):
        super().__init__(seed, dim)
        self.size = int(size) or max(2**24, 8 * self.dim)
        self.align = self.ROW if self.dim > self.LONG else 1
        self.rows = -(-self.dim // self.align)          # table rows a vector spans
        need = max(self.dim + 1, self.rows * self.align)
        if self.size < need:
            from evoplat.platform.config import ConfigError
            raise ConfigError(f"config error: es.noise_table_size={self.size} holds fewer values than the model's "
                              f"{dim} parameters need; use 0 (automatic) or at least {need}")
        # how many places a vector may start at, `align` values apart, all of it inside the table
        self.starts = self.size // self.align - self.rows + 1 if self.align > 1 else self.size - self.dim + 1
        key = (self.seed, self.size)
        if key not in self._cache:
            self._cache.clear()
            self._cache[key] = self._build()
        self.table = self._cache[key]
        self._device_tables: dict = {}

    def _build(self) -> np.ndarray:
        out = np.empty(self.size, dtype=np.float32)
        step = 1 << 22
        for i, a in enumerate(range(0, self.size, step)):
            n = min(step, self.size - a)
            out[a:a + n] = _philox(self.seed, _MASK32, i).standard_normal(n, dtype=np.float32)
        return out

    def offsets(self, generation: int, keys) -> np.ndarray:
        """Table offsets of `keys` (int64), a hash of (seed, generation, key): vectorised, no generator
        per key (at popsize 65,536 one Philox generator per key would cost the driver ~0.5 s)."""
        return (_mix64(self.seed, generation, np.asarray(keys, dtype=np.uint64))
                % np.uint64(self.starts)).astype(np.int64) * self.align

    def offset(self, generation: int, key: int) -> int:
        return int(self.offsets(generation, [key])[0])

    def block(self, generation: int, keys, out: Optional[np.ndarray] = None) -> np.ndarray:
        keys = np.asarray(list(keys), dtype=np.int64)
        offs = self.offsets(generation, np.maximum(keys, 0))
        if self.dim <= self.LONG:
            # Short vectors (low-rank factors): one fancy index into the table's window view, ~3x faster
            # than a slice per key at 1,188 values and ~5x faster than an index-array gather at 50.
            # Long vectors copy row by row: the window index goes through a temporary, twice the copying.
            if out is None:
                out = np.lib.stride_tricks.sliding_window_view(self.table, self.dim)[offs]
            else:                       # straight into `out`, not through a temporary
                windows = torch.from_numpy(self.table).as_strided((self.size - self.dim + 1, self.dim), (1, 1))
                torch.index_select(windows, 0, torch.from_numpy(offs), out=torch.from_numpy(out))
        else:
            if out is None:
                out = np.empty((len(keys), self.dim), dtype=np.float32)
            for row, a in enumerate(offs):
                out[row] = self.table[a:a + self.dim]
        out[keys < 0] = 0.0
        return out

    def _sums(self, pop: Population, coeffs, powers: tuple, chunk: int, lo: int = 0, hi: int | None = None) -> tuple:
        """KeyedNoise's sums; for long vectors (`lo` on a row) embedding_bag on the caller's threads."""
        hi = self.dim if hi is None else hi
        if self.align == 1 or lo % self.align or pop.num_keys == 0:
            return super()._sums(pop, coeffs, powers, chunk, lo, hi)
        weights = [torch.from_numpy(self.key_weights(pop, coeffs, p).astype(np.float32)) for p in powers]
        starts = torch.from_numpy(self.offsets(pop.generation, range(pop.num_keys)) // self.align)
        r0, r1 = lo // self.align, -(-hi // self.align)
        row_ids = torch.arange(r0, r1)
        totals = [None] * len(powers)
        with fixed_threads(caller_threads()):
            for k0 in range(0, pop.num_keys, self.KEY_BLOCK):
                k = starts[k0:k0 + self.KEY_BLOCK]
                index = (row_ids[:, None] + k[None, :]).reshape(-1)
                bags = torch.arange(0, len(index), len(k))
                for i, (power, w) in enumerate(zip(powers, weights)):
                    part = F.embedding_bag(index, self._rows(power), bags, mode="sum",
                                           per_sample_weights=w[k0:k0 + self.KEY_BLOCK].repeat(r1 - r0))
                    totals[i] = part if totals[i] is None else totals[i].add_(part)
        a = lo - r0 * self.align
        return tuple(t.view(-1)[a:a + hi - lo].numpy() for t in totals)

    def _rows(self, power: int) -> torch.Tensor:
        """The table (power 1) or its squares (power 2: PGPE's and SNES's second sums, made on first use
        and dropped with the table) as rows of `align` values."""
        table = self.table
        if power == 2:
            key = (self.seed, self.size, "squares")
            if key not in self._cache:
                self._cache[key] = np.square(self.table)
            table = self._cache[key]
        n = self.size // self.align * self.align
        return torch.from_numpy(table[:n]).view(-1, self.align)

    def vector(self, generation: int, key: int) -> np.ndarray:
        a = self.offset(generation, key)
        return self.table[a:a + self.dim]

    def device_table(self, device) -> torch.Tensor:
        """The table as a tensor on `device` (copied there once per process)."""
        device = torch.device(device)
        if device not in self._device_tables:
            self._device_tables.clear() if len(self._device_tables) > 2 else None
            self._device_tables[device] = readonly_tensor(self.table).to(device)
        return self._device_tables[device]

    def key_views(self, generation: int, keys, device="cpu") -> list:
        return self.chunk_noise(generation, keys, device).views

    def chunk_noise(self, generation: int, keys, device, num_keys: int = 0) -> "FullRankChunk":
        """Views of the table on `device` (nothing copied); key -1 (sorted first) has none."""
        from evoplat.platform.population.members import FullRankChunk
        keys = list(keys)
        offs = self.offsets(generation, [max(k, 0) for k in keys])
        return FullRankChunk(self.device_table(device), offs.tolist(), self.dim, keys.index(-1) if -1 in keys else -1)


def form_members(directions: torch.Tensor, rows: torch.Tensor, signs: torch.Tensor, scale,
                 center: torch.Tensor) -> torch.Tensor:
    """Members center + scale * sign_i * directions[rows_i], [len(rows), P], from the distinct keys'
    directions (a fresh tensor: used in place when every member has its own key). The one formula of
    KeyedNoise.members (on the host) and MemberChunk.materialize (on the chunk's device)."""
    eps = directions[rows] if len(directions) < len(rows) else directions
    eps.mul_(signs.unsqueeze(1))
    eps.mul_(scale)
    return eps.add_(center)


def make_noise(kind: str, seed: int, dim: int, table_size: int = 0) -> KeyedNoise:
    return NoiseTable(seed, dim, table_size) if kind == "table" else CounterNoise(seed, dim)


def readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a (possibly read-only, object-store backed) array, without copying it.

    Callers only read it; torch warns about read-only memory regardless, so the warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(array))

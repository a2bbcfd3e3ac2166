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

from evoplat.platform.population.noise import KeyedNoise, Population, fixed_threads


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

    def directions(self, generation: int, keys) -> torch.Tensor:
        factors = self.factors(generation, keys)
        out = torch.empty(len(factors), self.dim)
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

    def chunk_noise(self, generation: int, keys, device) -> "LowRankChunk":
        return LowRankChunk(self, self.factors(generation, keys, device))

    def combine(self, pop: Population, coeffs, power: int = 1, chunk: int = 256) -> np.ndarray:
        """sum_k w_k A_k B_k^T per weight (one product over all keys), w . segment for 1-D params.

        power 2 (SNES) squares the materialised directions key by key (the base class's sum).
        """
        if power != 1:
            return super().combine(pop, coeffs, power, chunk)
        w = torch.from_numpy(self.key_weights(pop, coeffs).astype(np.float32))
        total = torch.zeros(self.dim)
        with fixed_threads():
            for k0 in range(0, pop.num_keys, chunk * 16):      # key blocks in order: bounded memory
                k1 = min(k0 + chunk * 16, pop.num_keys)
                factors, wk = self.factors(pop.generation, range(k0, k1)), w[k0:k1]
                for seg in self.segments:
                    off, _, f, out, inn = seg
                    if not inn:
                        total[off:off + out] += wk @ factors[:, f:f + out]
                        continue
                    a, b = self._split(factors, seg)
                    a = (a * wk[:, None, None]).transpose(1, 2).reshape(-1, out)
                    b = b.transpose(1, 2).reshape(-1, inn)
                    # [K r, out]^T @ [K r, in] accumulated in place: for rank 1 b is a view of the factors
                    # (no permuted copy) and the product lands in `total` directly.
                    total[off:off + out * inn].view(out, inn).addmm_(a.T, b)
        return total.numpy()


class LowRankChunk:
    """Low-rank noise of a chunk's distinct keys, read per parameter by the structured forward."""

    kind = "lowrank"

    def __init__(self, noise: LowRankNoise, factors: torch.Tensor):
        self.noise, self.factors = noise, factors
        self.by_offset = {seg[0]: seg for seg in noise.segments}

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

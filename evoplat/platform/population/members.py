"""A chunk of a population's members described, not materialised: center + scale * sign * direction(key).

The structured forward (chain.py) reads one parameter's noise at a time through `param_noise`: for
full-rank noise a list of per-key views (of the noise table where there is one: nothing is copied), for
low-rank noise the factors (A, B) of each weight matrix. `materialize()` builds the [K, P] parameter
vectors, on the chunk's device, for any forward that needs them (other models, per-member inputs, the
elitist's winner).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from evoplat.platform.population.kept import KeptValue
from evoplat.platform.population.noise import form_members, readonly_tensor


class FullRankChunk:
    """Full-rank noise of a chunk's distinct keys: key row k's direction is source[starts[k]:starts[k] + P]
    (a window of the noise table, or a row of freshly drawn vectors), zeros for row `keyless` (key -1)."""

    kind = "full"

    def __init__(self, source: torch.Tensor, starts: list, dim: int, keyless: int = -1):
        self.source, self.keyless = source, keyless
        self.starts = torch.tensor(starts, dtype=torch.int64, device=source.device)
        self.views = [source.new_zeros(dim) if r == keyless else source[a:a + dim] for r, a in enumerate(starts)]

    def directions(self) -> torch.Tensor:
        """The distinct keys' directions [Kd, P] (a fresh tensor), where the views are."""
        return torch.stack(self.views)

    def param(self, offset: int, shape: tuple) -> tuple:
        n = int(np.prod(shape))
        return "views", [v[offset:offset + n].view(shape) for v in self.views]

    def gather(self, offset: int, shape: tuple, rows: torch.Tensor) -> torch.Tensor:
        """One parameter's noise for key rows `rows`, [len(rows), *shape] (a fresh tensor): one indexing
        op over the source's windows. Stacking a view per member instead cost 5.4 ms of Python per
        full-rank P-ES evaluation (~60 ms), 1.4 ms this way."""
        n = int(np.prod(shape))
        windows = self.source.as_strided((self.source.numel() - n + 1, n), (1, 1))
        e = windows[self.starts[rows] + offset]
        if self.keyless >= 0:
            e.masked_fill_((rows == self.keyless).unsqueeze(1), 0.0)
        return e.view(-1, *shape)


_uploaded = KeptValue()      # the last population's center and scale on a device


def _placed(pop, device: torch.device) -> tuple:
    """The population's center and scale (a float, or a per-parameter tensor) on `device`. Off the CPU,
    uploaded once per population, not once per chunk: every chunk of a work item (and of a generation
    in the workers' loop) reads the same copy."""
    scale = float(pop.scale) if np.isscalar(pop.scale) else readonly_tensor(pop.scale)
    if device.type == "cpu":            # views of the arrays: nothing to upload
        return readonly_tensor(pop.center), scale
    return _uploaded.get((pop,), lambda: (readonly_tensor(pop.center).to(device),
                                          scale if isinstance(scale, float) else scale.to(device)), tag=device)


class MemberChunk:
    def __init__(self, noise, pop, start: int, stop: int, device: torch.device):
        self.noise, self.pop, self.start, self.stop, self.device = noise, pop, start, stop, device
        keys, signs = zip(*(pop.key_sign(i) for i in range(start, stop)))
        self.keys = sorted(set(keys))
        index = {k: r for r, k in enumerate(self.keys)}
        self.rows = torch.tensor([index[k] for k in keys], device=device)      # each member's key row
        self.signs = torch.tensor(signs, dtype=torch.float32, device=device)
        self.size = stop - start
        # Antithetic pairs in order (+eps, -eps, +eps', ...): the forward broadcasts a key over its pair.
        self.paired = self.size == 2 * len(self.keys) and keys[::2] == keys[1::2] and keys[::2] == tuple(self.keys)
        self.key_range = (0, len(self.keys))      # distinct keys [k0, k1) of the pairs, when paired
        self.scalar = bool(np.isscalar(pop.scale))
        self.center, self.scale = _placed(pop, device)
        # What multiplies a layer's noise term per member: sigma * sign for a scalar sigma; with a
        # per-parameter sigma the noise itself is scaled (param_noise) and only the sign is left.
        self.mult = self.signs * self.scale if self.scalar else self.signs
        self.source = noise.chunk_noise(pop.generation, self.keys, device, pop.num_keys)

    def block(self, start: int, stop: int) -> "MemberChunk":
        """Members [start, stop) of this chunk (positions within it), sharing its noise."""
        blk = copy.copy(self)
        blk.rows, blk.signs, blk.mult = self.rows[start:stop], self.signs[start:stop], self.mult[start:stop]
        blk.size = stop - start
        blk.paired = self.paired and start % 2 == 0 and stop % 2 == 0
        blk.key_range = (start // 2, stop // 2)
        return blk

    @property
    def distinct(self) -> int:
        return len(self.keys)

    def materialize(self) -> torch.Tensor:
        """Parameter vectors [K, P] of the chunk's members, formed on the chunk's device from its noise (on
        a GPU: not on the host and uploaded). KeyedNoise.members's formula, so the same bits."""
        return form_members(self.source.directions(), self.rows, self.signs, self.scale, self.center)

    def center_param(self, offset: int, shape: tuple) -> torch.Tensor:
        return self.center[offset:offset + int(np.prod(shape))].view(shape)

    def param_noise(self, offset: int, shape: tuple) -> tuple:
        """Noise of one parameter for the distinct keys: ("views", [Kd tensors shaped `shape`]),
        ("stacked", [Kd, *shape]) or ("lowrank", A [Kd, out, r], B [Kd, in, r]) with direction A_k B_k^T
        (1/sqrt(r) folded into A).

        With a per-parameter sigma the noise comes back multiplied by it, always as views.
        """
        kind, *parts = self.source.param(offset, shape)
        if self.scalar:
            return (kind, *parts)
        sigma = self.sigma_param(offset, shape)
        if kind == "lowrank":
            a, b = parts
            parts = [list((a @ b.transpose(1, 2)).view(-1, *shape))]
        return "views", [sigma * v for v in parts[0]]

    def sigma_param(self, offset: int, shape: tuple) -> torch.Tensor:
        return self.scale[offset:offset + int(np.prod(shape))].view(shape)

    def stacked(self, offset: int, shape: tuple) -> torch.Tensor:
        """The parameter's noise as one tensor [Kd, *shape] (materialised from factors if low rank)."""
        kind, *parts = self.param_noise(offset, shape)
        if kind == "stacked":
            return parts[0]
        if kind == "views":
            return torch.stack(parts[0])
        a, b = parts
        return (a @ b.transpose(1, 2)).view(-1, *shape)

    def member_noise(self, offset: int, shape: tuple) -> torch.Tensor:
        """The parameter's noise per member, [size, *shape]: a fresh tensor (safe to scale in place),
        picked on the device by the member rows (one indexing op or one batched product, whatever the
        source), then scaled by a per-parameter sigma if there is one."""
        if self.source.kind == "full":
            e = self.source.gather(offset, shape, self.rows)
        else:
            kind, *parts = self.source.param(offset, shape)
            if kind == "stacked":
                e = parts[0][self.rows]
            else:
                a, b = parts
                e = torch.bmm(a[self.rows], b[self.rows].transpose(1, 2)).view(-1, *shape)
        return e if self.scalar else e.mul_(self.sigma_param(offset, shape))

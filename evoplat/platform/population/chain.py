"""The structured population forward: members described by a MemberChunk, a model that is a chain of
layers (nn.Sequential, or a module whose children applied in order are its forward).

Every member of a chunk sees the same input batch, so the first weight layer is shared:
x (theta + sigma eps)^T = x theta^T + sigma x eps^T. x theta^T is computed once per population, x eps^T once
per distinct key (an antithetic pair shares it with opposite signs), from views of the noise table
(full rank) or as (x B) A^T (low rank). Later layers see per-member inputs h_k and apply each
member's own weight theta + sigma_k eps_k in one batched product. Parameter-free layers run on the
[K*B, ...] batch.

After the first layer everything is per member, so on a CPU the members of a chunk go through the rest
of the network a block at a time, sized so that a block's activations stay in cache: the shared
terms are computed once per chunk, and a block's hidden activations are written, rectified and read
by the next layer while still cached, not streamed through memory. A member linear layer computes
W_k h_k^T ([out, B] per member): for the narrow outputs of a classifier head, on cached blocks, that
product ran about twice as fast as h_k W_k^T on the CPU's BLAS.

Supported layers: Linear, Conv2d (groups 1) and parameter-free modules; anything else (batch norm,
residual blocks) makes `ChainForward.build` return None and the caller uses the vmap forward.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from evoplat.platform.population.kept import KeptValue


def _leaves(module: nn.Module, prefix: str = "") -> list:
    """(name, module) of the chain's layers, expanding containers in registration order."""
    children = list(module.named_children())
    if not children:
        return [(prefix.rstrip("."), module)]
    if any(True for _ in module.parameters(recurse=False)):
        return [(prefix.rstrip("."), module)]        # a module with own parameters and children: opaque
    out = []
    for name, child in children:
        out += _leaves(child, f"{prefix}{name}.")
    return out


class ChainForward:
    # Bytes of one layer's activations per member block: inside a core's share of the last-level cache.
    BLOCK_BYTES = 4 << 20

    def __init__(self, model: nn.Module, layout, layers: list):
        self.model, self.layout, self.layers = model, layout, layers
        self.where = {n: (off, shape) for n, shape, off in zip(layout.names, layout.shapes, layout.offsets)}
        weights = [i for i, (_, m) in enumerate(layers) if isinstance(m, (nn.Linear, nn.Conv2d))]
        self.first_weight = weights[0] if weights else -1
        self.last_weight = weights[-1] if weights else -1
        # Hidden activations are tens of MB per chunk; a fresh allocation that large is mapped from the
        # OS and zero-filled page by page on first touch, which cost more than the arithmetic (a
        # [256, 256, 128] fill: 6.4 ms fresh vs 1.6 ms reused). So each layer writes into its own
        # buffer, reused from block to block and chunk to chunk; only what the forward returns is fresh.
        self._buffers: dict = {}
        self._fresh_last = True
        self._base = KeptValue()                   # the first layer's base for a (population, input batch)
        self.block_members: Optional[int] = None   # members per block; None: from BLOCK_BYTES (CPU only)

    @classmethod
    def build(cls, model: nn.Module, layout) -> Optional["ChainForward"]:
        layers = _leaves(model)
        for _, m in layers:
            has_params = any(True for _ in m.parameters())
            if has_params and not (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1
                                                                and m.padding_mode == "zeros")):
                return None
            if any(True for _ in m.buffers()):
                return None
        return cls(model, layout, layers)

    def matches(self, x: torch.Tensor) -> bool:
        """Whether applying the layers in order is the model's forward (checked once on real inputs)."""
        with torch.no_grad():
            h = x[:2]
            for _, m in self.layers:
                h = m(h)
            return h.shape == self.model(x[:2]).shape and torch.equal(h, self.model(x[:2]))

    def buffer(self, slot, shape, like: torch.Tensor) -> Optional[torch.Tensor]:
        """A reusable output tensor of `shape` for `slot` = (layer index, tag), or None where the output
        must be fresh (the last weight layer's "out", when it is what the forward returns)."""
        if slot == (self.last_weight, "out") and self._fresh_last:
            return None
        shape = torch.Size(shape)
        t = self._buffers.get(slot)
        if t is None or t.shape[1:] != shape[1:] or t.shape[0] < shape[0] or t.dtype != like.dtype \
                or t.device != like.device:
            t = like.new_empty(shape)
            self._buffers[slot] = t
        return t[:shape[0]]

    def _param(self, chunk, name: str, attr: str):
        off, shape = self.where[f"{name}.{attr}" if name else attr]
        return chunk.center_param(off, shape), off, shape

    def _weights(self, chunk, name: str, m: nn.Module):
        w0, w_off, w_shape = self._param(chunk, name, "weight")
        b0, *b_at = self._param(chunk, name, "bias") if m.bias is not None else (None,)
        return w0, w_off, w_shape, b0, b_at

    @torch.no_grad()
    def logits(self, chunk, x: torch.Tensor) -> torch.Tensor:
        first = self.first_weight
        h = x
        for _, m in self.layers[:first if first >= 0 else None]:
            h = m(h)
        if first < 0:                               # no weight layer at all: every member is the same
            return h.unsqueeze(0).expand(chunk.size, *h.shape)
        name, m = self.layers[first]
        shared = self._shared_terms(chunk, first, name, m, h)
        per_member = max(1, shared[1][0].numel() * x.element_size())
        step = self.block_members or (chunk.size if x.device.type != "cpu" else self.BLOCK_BYTES // per_member)
        step = max(1, min(chunk.size, step))
        self._fresh_last = step >= chunk.size
        out = None
        for a in range(0, chunk.size, step):
            blk = chunk if self._fresh_last else chunk.block(a, min(a + step, chunk.size))
            h = self._first_output(blk, first, shared)
            for i in range(first + 1, len(self.layers)):
                h = self._member_step(blk, i, h)
            if self._fresh_last:
                return h
            if out is None:         # the logits keep the layout the last layer wrote them in
                out = h.new_empty(chunk.size, h.shape[2], h.shape[1]).transpose(1, 2) \
                    if h.transpose(1, 2).is_contiguous() else h.new_empty(chunk.size, *h.shape[1:])
            out[a:a + len(h)] = h
        return out

    def _member_step(self, blk, i: int, h: torch.Tensor) -> torch.Tensor:
        """Layer i (after the first weight layer) on a block's activations h [S, B, ...]."""
        name, m = self.layers[i]
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return self._member_layer(blk, i, m, h, *self._weights(blk, name, m))
        if isinstance(m, nn.ReLU):
            return h.relu_()                                # h is this block's own buffer
        k, b = h.shape[:2]
        h = m(h.reshape(k * b, *h.shape[2:]))
        return h.view(k, b, *h.shape[1:])

    # -- the first (shared-input) layer ----------------------------------------------------------
    def _shared_terms(self, chunk, i: int, name: str, m: nn.Module, x: torch.Tensor) -> tuple:
        """What every member's first-layer output is built from, computed once per chunk (the base once
        per population): ("delta", base [B, ...], noise term per distinct key [Kd, B, ...]) or
        ("lowrank", base [B, out], x B [Kd, B, r], A [Kd, out, r], bias noise [Kd, out] or None)."""
        w0, w_off, w_shape, b0, b_at = self._weights(chunk, name, m)
        if isinstance(m, nn.Conv2d):
            args = dict(stride=m.stride, padding=m.padding, dilation=m.dilation)
            base = self._shared_base(chunk, x, lambda: F.conv2d(x, w0, b0, **args))
            delta = self._conv_shared(chunk, x, w_off, w_shape, args)
            spatial = (1, 1)
        else:
            base = self._shared_base(chunk, x, lambda: F.linear(x, w0, b0))
            kind, *parts = chunk.param_noise(w_off, w_shape)
            if kind == "lowrank":
                a, b = parts                                   # [Kd, out, r], [Kd, in, r]
                kd, inn, r = b.shape
                xb = (x @ b.permute(1, 0, 2).reshape(inn, kd * r)).view(len(x), kd, r).transpose(0, 1)
                bias_noise = chunk.stacked(*b_at) if b0 is not None else None
                return "lowrank", (base, xb, a, bias_noise)
            delta = self._linear_shared(i, x, w_shape, parts[0])
            spatial = ()
        if b0 is not None:
            delta += chunk.stacked(*b_at).view(len(delta), 1, -1, *spatial)     # [Kd, out] bias noise
        return "delta", (base, delta)

    def _shared_base(self, chunk, x: torch.Tensor, compute) -> torch.Tensor:
        """The first layer's x theta^T + b (never written to): the same for every chunk of a population on
        one batch, so computed once per (population, batch) instead of once per chunk (at popsize 65,536
        in chunks of 128, 512 times a generation)."""
        return self._base.get((chunk.pop, x), compute)

    def _first_output(self, blk, i: int, shared: tuple) -> torch.Tensor:
        """The first layer's output [S, B, ...] for a block of members from the chunk's shared terms."""
        kind, parts = shared
        if kind == "lowrank":
            return self._lowrank_first(blk, i, *parts)
        base, delta = parts
        out = self.buffer((i, "out"), (blk.size, *base.shape), base)
        if out is None:         # a one-layer model: its output is the forward's result
            out = base.new_empty(blk.size, *base.shape)
        if blk.paired:          # antithetic pairs in order: broadcast each key's term over its pair
            k0, k1 = blk.key_range
            mult = blk.mult.view(-1, 2, *([1] * (delta.dim() - 1)))
            pairs = out.view(k1 - k0, 2, *base.shape)
            torch.addcmul(base, delta[k0:k1].unsqueeze(1), mult, out=pairs)
            return out
        return torch.addcmul(base, delta[blk.rows], blk.mult.view(-1, *([1] * (delta.dim() - 1))), out=out)

    def _lowrank_first(self, blk, i: int, base, xb, a, bias_noise) -> torch.Tensor:
        """base + mult_k ((x B_k) A_k^T + e_k) for the block's members, the per-member scale folded into
        the thin factor x B_k so that one element-wise pass writes the output."""
        mult = blk.mult.view(-1, 1, 1)
        c = xb[blk.rows] * mult                                 # [S, B, r]
        at = a[blk.rows].transpose(1, 2)                        # [S, r, out]
        out = self.buffer((i, "out"), (blk.size, *base.shape), base)
        if at.shape[1] == 1:
            out = torch.addcmul(base.expand(blk.size, *base.shape), c, at, out=out)
        else:
            out = torch.bmm(c, at, out=out).add_(base)
        if bias_noise is not None:
            out.add_(bias_noise[blk.rows].unsqueeze(1) * mult)
        return out

    # -- layers after the first: per-member inputs --------------------------------------------------
    def _member_layer(self, blk, i, m, h, w0, w_off, w_shape, b0, b_at) -> torch.Tensor:
        """A layer whose input differs per member, h [S, B, ...] -> [S, B, out, ...].

        Each member's own weight w0 + sigma_k eps_k is formed (S * out * in values, far fewer than the
        S * B * out * in multiply-adds of the layer) and applied in one batched product: half the work
        of a shared product plus a noise product. A low-rank linear layer whose input is wider than the
        batch keeps its factors instead, so that the [S, out, in] weights never exist.
        """
        if (isinstance(m, nn.Linear) and blk.scalar and blk.source.kind == "lowrank"
                and w_shape[1] > h.shape[1]):
            return self._lowrank_member(blk, h, w0, b0, w_off, w_shape, b_at)
        w = self._member_params(blk, w0, w_off, w_shape)
        bias = self._member_params(blk, b0, *b_at) if b0 is not None else None
        if isinstance(m, nn.Linear):        # W_k h_k^T: [S, out, B], handed on as its [S, B, out] view
            out = self.buffer((i, "out"), (h.shape[0], w_shape[0], h.shape[1]), h)
            ht = h.transpose(1, 2)
            out = torch.bmm(w, ht, out=out) if bias is None else torch.baddbmm(bias.unsqueeze(2), w, ht, out=out)
            return out.transpose(1, 2)
        k, b = h.shape[:2]
        flat = h.transpose(0, 1).reshape(b, k * w_shape[1], *h.shape[3:])
        d = F.conv2d(flat, w.reshape(k * w_shape[0], *w_shape[1:]), None if bias is None else bias.reshape(-1),
                     stride=m.stride, padding=m.padding, dilation=m.dilation, groups=k)
        return d.view(b, k, w_shape[0], *d.shape[2:]).transpose(0, 1)

    def _member_params(self, blk, p0, off, shape) -> torch.Tensor:
        """[S, *shape]: every member's own value of one parameter, p0 + mult_k * eps_k."""
        e = blk.member_noise(off, shape)                       # a fresh tensor: safe to scale in place
        return e.mul_(blk.mult.view(-1, *([1] * len(shape)))).add_(p0)

    def _lowrank_member(self, blk, h, w0, b0, off, shape, b_at) -> torch.Tensor:
        base = F.linear(h, w0, b0)
        a, b = (p[blk.rows] for p in blk.param_noise(off, shape)[1:])
        delta = torch.bmm(torch.bmm(h, b), a.transpose(1, 2))
        if b0 is not None:
            delta += blk.stacked(*b_at)[blk.rows].unsqueeze(1)
        return base.addcmul_(delta, blk.mult.view(-1, 1, 1))

    # -- linear -----------------------------------------------------------------------------------
    def _linear_shared(self, i, x, shape, views):
        """x [B, in] -> noise term per distinct key [Kd, B, out]."""
        # One product per key, read straight from its view of the table: stacking the views into one
        # operand first costs a copy and measured ~25% slower on 1 and on 2 threads (same bits).
        delta = self.buffer((i, "delta"), (len(views), len(x), shape[0]), x)
        for k, v in enumerate(views):
            torch.mm(x, v.T, out=delta[k])
        return delta

    # -- conv: the kernel's noise is materialised per distinct key (first layers are small) ---------
    def _conv_shared(self, chunk, x, off, shape, args):
        e = chunk.stacked(off, shape)                         # [Kd, out, in, kh, kw]
        kd = len(e)
        d = F.conv2d(x, e.reshape(kd * shape[0], *shape[1:]), **args)
        return d.view(len(x), kd, shape[0], *d.shape[2:]).transpose(0, 1)

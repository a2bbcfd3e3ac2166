"""The structured population forward: members described by a MemberChunk, a model that is a chain of
layers (nn.Sequential, or a module whose children applied in order are its forward).

Every member of a chunk sees the same input batch, so the first weight layer is shared:
x (theta + sigma eps)^T = x theta^T + sigma x eps^T. x theta^T is computed once per chunk, x eps^T once
per distinct key (an antithetic pair shares it with opposite signs), from views of the noise table
(full rank) or as (x B) A^T (low rank). Later layers see per-member inputs h_k:
h_k theta^T + sigma_k h_k eps_k^T, one large product for the shared part plus a batched one for the
noise (for low rank, two thin batched products). Parameter-free layers run on the [K*B, ...] batch.

Supported layers: Linear, Conv2d (groups 1) and parameter-free modules; anything else (batch norm,
residual blocks) makes `ChainForward.build` return None and the caller uses the vmap forward.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


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
    def __init__(self, model: nn.Module, layout, layers: list):
        self.model, self.layout, self.layers = model, layout, layers
        self.where = {n: (off, shape) for n, shape, off in zip(layout.names, layout.shapes, layout.offsets)}
        self.checked = False

    @classmethod
    def build(cls, model: nn.Module, layout) -> Optional["ChainForward"]:
        layers = _leaves(model)
        for name, m in layers:
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

    def _param(self, chunk, name: str, attr: str):
        off, shape = self.where[f"{name}.{attr}" if name else attr]
        return chunk.center_param(off, shape), off, shape

    @torch.no_grad()
    def logits(self, chunk, x: torch.Tensor) -> torch.Tensor:
        h, shared = x, True
        for name, m in self.layers:
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                h = self._layer(chunk, name, m, h, shared)
                shared = False
            elif shared:
                h = m(h)
            elif isinstance(m, nn.ReLU):
                h = h.relu_()                               # h is this chunk's own buffer
            else:
                k, b = h.shape[:2]
                h = m(h.reshape(k * b, *h.shape[2:]))
                h = h.view(k, b, *h.shape[1:])
        if shared:                                  # no weight layer at all: every member is the same
            h = h.unsqueeze(0).expand(chunk.size, *h.shape)
        return h

    def _layer(self, chunk, name: str, m: nn.Module, h: torch.Tensor, shared: bool) -> torch.Tensor:
        w0, w_off, w_shape = self._param(chunk, name, "weight")
        b0, *b_at = self._param(chunk, name, "bias") if m.bias is not None else (None,)
        if not shared:
            return self._member_layer(chunk, m, h, w0, b0, w_off, w_shape, b_at)
        if isinstance(m, nn.Conv2d):
            args = dict(stride=m.stride, padding=m.padding, dilation=m.dilation)
            delta, base = self._conv_shared(chunk, h, w0, b0, w_off, w_shape, args)
            spatial = (1, 1)
        else:
            delta, base = self._linear_shared(chunk, h, w0, b0, w_off, w_shape)
            spatial = ()
        if b0 is not None:
            delta += chunk.stacked(*b_at).view(len(delta), 1, -1, *spatial)     # [Kd, out] bias noise
        if chunk.paired:        # antithetic pairs in order: broadcast each key's term over its pair
            mult = chunk.mult.view(-1, 2, *([1] * (delta.dim() - 1)))
            out = torch.addcmul(base, delta.unsqueeze(1), mult)
            return out.view(chunk.size, *out.shape[2:])
        return torch.addcmul(base, delta[chunk.rows], chunk.mult.view(-1, *([1] * (delta.dim() - 1))))

    def _member_layer(self, chunk, m, h, w0, b0, w_off, w_shape, b_at) -> torch.Tensor:
        """A layer whose input differs per member, h [K, B, ...] -> [K, B, out, ...].

        Each member's own weight w0 + sigma_k eps_k is formed (K * out * in values, far fewer than the
        K * B * out * in multiply-adds of the layer) and applied in one batched product: half the work
        of a shared product plus a noise product. A low-rank linear layer whose input is wider than the
        batch keeps its factors instead, so that the [K, out, in] weights never exist.
        """
        if (isinstance(m, nn.Linear) and chunk.scalar and chunk.source.kind == "lowrank"
                and w_shape[1] > h.shape[1]):
            return self._lowrank_member(chunk, h, w0, b0, w_off, w_shape, b_at)
        w = self._member_params(chunk, w0, w_off, w_shape)
        bias = self._member_params(chunk, b0, *b_at) if b0 is not None else None
        if isinstance(m, nn.Linear):
            wt = w.transpose(1, 2)
            return torch.bmm(h, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, wt)
        k, b = h.shape[:2]
        flat = h.transpose(0, 1).reshape(b, k * w_shape[1], *h.shape[3:])
        d = F.conv2d(flat, w.reshape(k * w_shape[0], *w_shape[1:]), None if bias is None else bias.reshape(-1),
                     stride=m.stride, padding=m.padding, dilation=m.dilation, groups=k)
        return d.view(b, k, w_shape[0], *d.shape[2:]).transpose(0, 1)

    def _member_params(self, chunk, p0, off, shape) -> torch.Tensor:
        """[K, *shape]: every member's own value of one parameter, p0 + mult_k * eps_k."""
        e = chunk.stacked(off, shape)[chunk.rows]            # indexing copies: safe to scale in place
        return e.mul_(chunk.mult.view(-1, *([1] * len(shape)))).add_(p0)

    def _lowrank_member(self, chunk, h, w0, b0, off, shape, b_at) -> torch.Tensor:
        base = F.linear(h, w0, b0)
        a, b = (p[chunk.rows] for p in chunk.param_noise(off, shape)[1:])
        delta = torch.bmm(torch.bmm(h, b), a.transpose(1, 2))
        if b0 is not None:
            delta += chunk.stacked(*b_at)[chunk.rows].unsqueeze(1)
        return base.addcmul_(delta, chunk.mult.view(-1, 1, 1))

    # -- linear -----------------------------------------------------------------------------------
    def _linear_shared(self, chunk, x, w0, b0, off, shape):
        """x [B, in] -> (noise term per distinct key [Kd, B, out], base x w0^T + b0 [B, out])."""
        base = F.linear(x, w0, b0)
        kind, *parts = chunk.param_noise(off, shape)
        if kind == "lowrank":
            a, b = parts                                       # [Kd, out, r], [Kd, in, r]
            kd, inn, r = b.shape
            xb = (x @ b.permute(1, 0, 2).reshape(inn, kd * r)).view(len(x), kd, r).transpose(0, 1)
            return torch.bmm(xb, a.transpose(1, 2)), base
        # One product per key, read straight from its view of the table: stacking the views into one
        # operand first costs a copy and measured ~25% slower on 1 and on 2 threads (same bits).
        views = parts[0]
        delta = x.new_empty(len(views), len(x), shape[0])
        for k, v in enumerate(views):
            torch.mm(x, v.T, out=delta[k])
        return delta, base

    # -- conv: the kernel's noise is materialised per distinct key (first layers are small) ---------
    def _conv_shared(self, chunk, x, w0, b0, off, shape, args):
        base = F.conv2d(x, w0, b0, **args)
        e = chunk.stacked(off, shape)                         # [Kd, out, in, kh, kw]
        kd = len(e)
        d = F.conv2d(x, e.reshape(kd * shape[0], *shape[1:]), **args)
        return d.view(len(x), kd, shape[0], *d.shape[2:]).transpose(0, 1), base

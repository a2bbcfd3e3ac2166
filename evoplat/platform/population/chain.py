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
        """Member outputs [K, B, out, ...] = base + sigma_k * (noise term + bias noise)."""
        w0, w_off, w_shape = self._param(chunk, name, "weight")
        b0 = self._param(chunk, name, "bias")[0] if m.bias is not None else None
        if isinstance(m, nn.Conv2d):
            args = dict(stride=m.stride, padding=m.padding, dilation=m.dilation)
            fn, spatial = (self._conv_shared if shared else self._conv_member), (1, 1)
            delta, base = fn(chunk, h, w0, b0, w_off, w_shape, args)
        else:
            fn, spatial = (self._linear_shared if shared else self._linear_member), ()
            delta, base = fn(chunk, h, w0, b0, w_off, w_shape)
        if b0 is not None:
            _, b_off, b_shape = self._param(chunk, name, "bias")
            eb = chunk.stacked(b_off, b_shape)                               # [Kd, out]
            delta += (eb if shared else eb[chunk.rows]).view(len(delta), 1, -1, *spatial)
        if not shared:
            return base.addcmul_(delta, chunk.mult.view(-1, *([1] * (delta.dim() - 1))))
        if chunk.paired:        # antithetic pairs in order: broadcast each key's term over its pair
            mult = chunk.mult.view(-1, 2, *([1] * (delta.dim() - 1)))
            out = torch.addcmul(base, delta.unsqueeze(1), mult)
            return out.view(chunk.size, *out.shape[2:])
        return torch.addcmul(base, delta[chunk.rows], chunk.mult.view(-1, *([1] * (delta.dim() - 1))))

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
        # One product for all keys: many thin [B, in] x [in, out] products run far below the GEMM peak.
        e = torch.stack(parts[0])                              # [Kd, out, in]
        kd = len(e)
        return (x @ e.view(kd * shape[0], shape[1]).T).view(len(x), kd, shape[0]).transpose(0, 1), base

    def _linear_member(self, chunk, h, w0, b0, off, shape):
        """h [K, B, in] -> (noise term [K, B, out], base [K, B, out])."""
        base = F.linear(h, w0, b0)
        kind, *parts = chunk.param_noise(off, shape)
        if kind == "lowrank":
            a, b = (p[chunk.rows] for p in parts)
            return torch.bmm(torch.bmm(h, b), a.transpose(1, 2)), base
        e = torch.stack(parts[0])[chunk.rows]
        return torch.bmm(h, e.transpose(1, 2)), base

    # -- conv: the kernel's noise is materialised per distinct key (first layers are small) ---------
    def _conv_shared(self, chunk, x, w0, b0, off, shape, args):
        base = F.conv2d(x, w0, b0, **args)
        e = chunk.stacked(off, shape)                         # [Kd, out, in, kh, kw]
        kd = len(e)
        d = F.conv2d(x, e.reshape(kd * shape[0], *shape[1:]), **args)
        return d.view(len(x), kd, shape[0], *d.shape[2:]).transpose(0, 1), base

    def _conv_member(self, chunk, h, w0, b0, off, shape, args):
        k, b = h.shape[:2]
        flat = h.transpose(0, 1).reshape(b, k * shape[1], *h.shape[3:])
        base = F.conv2d(h.reshape(k * b, *h.shape[2:]), w0, b0, **args)
        base = base.view(k, b, *base.shape[1:])
        e = chunk.stacked(off, shape)[chunk.rows]
        d = F.conv2d(flat, e.reshape(k * shape[0], *shape[1:]), groups=k, **args)
        return d.view(b, k, shape[0], *d.shape[2:]).transpose(0, 1), base

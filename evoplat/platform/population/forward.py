"""Flat parameter views and the batched population forward pass (the hot path).

K parameter vectors are evaluated on one batch in one call: `torch.func.functional_call` under `vmap`
over stacked parameters, so the K members' layers run as batched matmuls/convolutions.
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

from evoplat.platform.population.chain import ChainForward


class ParamLayout:
    """Where each named parameter lives in a flat float32 vector of length P."""

    def __init__(self, module: nn.Module):
        self.names, self.shapes, self.offsets = [], [], []
        offset = 0
        for name, p in module.named_parameters():
            self.names.append(name)
            self.shapes.append(tuple(p.shape))
            self.offsets.append(offset)
            offset += p.numel()
        self.size = offset

    def flatten(self, module: nn.Module) -> torch.Tensor:
        params = dict(module.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names]).float()

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views into `flat` ([P] or [K, P]) shaped like the parameters (with a leading K if batched)."""
        lead = flat.shape[:-1]
        out = {}
        for name, shape, off in zip(self.names, self.shapes, self.offsets):
            n = int(torch.Size(shape).numel())
            out[name] = flat[..., off:off + n].reshape(*lead, *shape)
        return out

    def load_into(self, module: nn.Module, flat: torch.Tensor) -> None:
        with torch.no_grad():
            params = dict(module.named_parameters())
            for name, view in self.unflatten(flat).items():
                params[name].copy_(view)

    def slices(self, names_prefix: tuple[str, ...]) -> list[tuple[int, int]]:
        """[start, stop) ranges of the parameters whose names start with one of `names_prefix`."""
        out = []
        for name, shape, off in zip(self.names, self.shapes, self.offsets):
            if name.startswith(names_prefix):
                out.append((off, off + int(torch.Size(shape).numel())))
        return out


class PopulationForward:
    """Evaluates stacked parameter vectors with one batched call per chunk.

    bn_mode 'batch': batch norm normalises with the batch's statistics and tracks none (each member sees
    exactly what a plain module in train mode computes); 'eval': the replica's running statistics.
    """

    def __init__(self, model: nn.Module, chunk_size: int = 32, bn_mode: Literal["batch", "eval"] = "batch"):
        self.model = copy.deepcopy(model)
        self.layout = ParamLayout(self.model)
        if bn_mode == "batch":
            replace_all_batch_norm_modules_(self.model)
            self.model.train()
        else:
            self.model.eval()
        self.chunk_size = chunk_size
        buffers = {k: v for k, v in self.model.named_buffers()}

        def one(params, x):
            return functional_call(self.model, (params, buffers), (x,))

        self._batched = vmap(one, in_dims=(0, None))       # one shared input batch
        self._per_member = vmap(one, in_dims=(0, 0))      # each member its own inputs

        self.chain = ChainForward.build(self.model, self.layout)
        self._chain_checked = False

    def structured(self, x: torch.Tensor) -> bool:
        """Whether members given as a MemberChunk take the shared-base chain forward (chain.py)."""
        if self.chain is not None and not self._chain_checked:
            self._chain_checked = True
            if not self.chain.matches(x):
                self.chain = None
        return self.chain is not None

    @torch.no_grad()
    def logits(self, flat, x: torch.Tensor) -> torch.Tensor:
        """Logits [K, B, C] of K members on one shared batch `x`.

        `flat`: stacked parameter vectors [K, P] (evaluated chunk by chunk under vmap), or a MemberChunk
        (the structured forward when the model is a supported chain, else its materialised vectors).
        """
        if not isinstance(flat, torch.Tensor):
            if self.structured(x):
                return self.chain.logits(flat, x)
            flat = flat.materialize()
        outs = [self._batched(self.layout.unflatten(flat[a:a + self.chunk_size]), x)
                for a in range(0, flat.shape[0], self.chunk_size)]
        return torch.cat(outs)

    @torch.no_grad()
    def member_logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits [K, B, C] of K members, member k on its own inputs x[k] (x: [K, B, ...])."""
        if not isinstance(flat, torch.Tensor):
            flat = flat.materialize()
        outs = [self._per_member(self.layout.unflatten(flat[a:a + self.chunk_size]), x[a:a + self.chunk_size])
                for a in range(0, flat.shape[0], self.chunk_size)]
        return torch.cat(outs)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of a plain module in its current mode."""
    correct, loss = 0, 0.0
    for a in range(0, len(x), batch_size):
        out = model(x[a:a + batch_size])
        correct += (out.argmax(-1) == y[a:a + batch_size]).sum().item()
        loss += F.cross_entropy(out, y[a:a + batch_size], reduction="sum").item()
    return correct / max(1, len(x)), loss / max(1, len(x))


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> None:
    """Set batch-norm running statistics to the (cumulative) statistics of `x`.

    ES changes weights without updating running statistics; before evaluating in eval mode, they are
    re-estimated from training data. A model without batch norm is left untouched.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    for a in range(0, len(x), batch_size):
        model(x[a:a + batch_size])
    for m, (mom, _) in zip(bns, saved):
        m.momentum = mom
    model.train(was_training)

"""What RSO visits and with what: the tensor order, each tensor's sigma, the perturbations and batches.

Everything here is a pure function of (run seed, cycle, tensor or layer group), so a worker that
evaluates a shard of a tensor draws exactly the perturbations and batches the sequential sweep would.
Specification: docs/rso.md (the rules of the authors' `train.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from evoplat.methods.rso.nets import RSONet

BN_SIGMA = 0.167   # the authors' fixed sigma for BN gamma and beta


@dataclass(frozen=True)
class TensorSpec:
    """One parameter tensor in the visiting order."""
    name: str          # parameter name in the network's state dict
    kind: str          # fc | conv | bn_beta | bn_gamma | proj | proj_beta | proj_gamma
    group: int         # layer group: block index, or num_blocks for the FC layer
    sigma: float       # sigma_d before annealing
    numel: int
    offset: int        # trials of the group before this tensor (positions in the group's batch cycle)

    def channel(self, j: int, shape: torch.Size) -> int:
        """Output channel (or FC output unit) that flat index j of this tensor belongs to."""
        per = int(math.prod(shape[1:])) if len(shape) > 1 else 1
        return j // per


def visiting_order(net: RSONet, reverse: bool = True, sample_scale: float = 1.0,
                   bn_sigma: float = BN_SIGMA) -> list[TensorSpec]:
    """FC, then per block from the top: conv, BN beta, BN gamma, (projection conv, its beta, gamma).

    sigma_d is the fixed He std of the layer at initialisation: sqrt(2/(C_in*9)) for a conv and for its
    1x1 projection (the authors use the main conv's), sqrt(2/C_last) for the FC, a constant for BN.
    `reverse=False` visits the blocks bottom-up (FC still first), an ablation of `reverse_opt`.
    """
    params = dict(net.named_parameters())
    specs: list[TensorSpec] = []

    def add(name, kind, group, sigma, offset):
        specs.append(TensorSpec(name, kind, group, sigma * (1.0 if kind.endswith(("beta", "gamma")) else
                                                           sample_scale), params[name].numel(), offset))
        return offset + params[name].numel()

    L = net.num_blocks
    add("fc.weight", "fc", L, math.sqrt(2.0 / net.widths[-1]), 0)
    blocks = range(L - 1, -1, -1) if reverse else range(L)
    for k in blocks:
        conv_sigma = math.sqrt(2.0 / (net.convs[k].in_channels * 9))
        off = add(f"convs.{k}.weight", "conv", k, conv_sigma, 0)
        off = add(f"bns.{k}.bias", "bn_beta", k, bn_sigma, off)
        off = add(f"bns.{k}.weight", "bn_gamma", k, bn_sigma, off)
        if net.has_proj(k):
            off = add(f"projs.{k}.weight", "proj", k, conv_sigma, off)
            off = add(f"proj_bns.{k}.bias", "proj_beta", k, bn_sigma, off)
            add(f"proj_bns.{k}.weight", "proj_gamma", k, bn_sigma, off)
    return specs


def anneal_scale(cycle: int, cycles: int, floor: float) -> float:
    """sigma_e / sigma_d = alpha + (1 - alpha) (C - e) / C: 1 at e=0, alpha + (1-alpha)/C at e=C-1."""
    return floor + (1.0 - floor) * (cycles - cycle) / cycles


def _key(*parts: int) -> int:
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def perturbations(seed: int, cycle: int, tensor_index: int, numel: int, sigma: float) -> torch.Tensor:
    """Delta ~ N(0, sigma^2) for every scalar of a tensor in a cycle (float32, as added to the weight)."""
    gen = torch.Generator().manual_seed(_key(seed, 1, cycle, tensor_index))
    return (torch.randn(numel, generator=gen, dtype=torch.float64) * sigma).float()


def group_batches(seed: int, cycle: int, group: int, n: int, batch_size: int, num_batches: int | None):
    """The batches a layer group cycles through in a cycle: a fresh permutation cut into `num_batches`
    disjoint batches (default: as many as fit, 12 for MNIST at 5000). Trial t uses batch t % count."""
    batch_size = min(batch_size, n)
    count = n // batch_size if num_batches is None else min(num_batches, n // batch_size)
    gen = torch.Generator().manual_seed(_key(seed, 2, cycle, group))
    perm = torch.randperm(n, generator=gen)
    return [perm[b * batch_size:(b + 1) * batch_size] for b in range(count)]

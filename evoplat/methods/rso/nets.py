"""The networks of the RSO paper (Tripathi & Singh), as in the authors' `CNN_ND` (docs/rso.md, Specification).

Each block k is: ReLU (except on the raw image of block 0) -> 3x3 conv (no bias) -> [+ skip] ->
[2x2 average pool] -> BN. The skip source is an earlier block's BN output (pre-ReLU), through a 1x1
conv + BN projection when the channel count changes. Head: global average pool -> FC (no bias).

The forward pass is written block by block (`block`, `run_blocks`, `head`) so that RSO can start it
at any block from cached block outputs, and can run K weight candidates at once: tensors of shape
(K*B, C, H, W) hold K candidates' activations of the same batch, and batch norm then takes its
statistics per candidate (`bn_train` with `groups=K`), exactly as K separate passes would.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from evoplat.platform.registry import MODELS

BN_EPS = 1e-5

# name -> (conv widths, blocks followed by 2x2 average pooling, {block: skip source block})
ARCHS = {
    "rso_mnist": ([16] * 6, (1, 3), {}),
    "rso_cifar10": ([16, 16, 16, 32, 32, 32, 32, 32, 32], (2, 4), {2: 0, 4: 2, 6: 4, 8: 6}),
}


def bn_train(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Batch norm with batch statistics; `groups` candidates stacked on the batch axis normalise apart."""
    if groups == 1:
        return F.batch_norm(x, None, None, gamma, beta, training=True, eps=BN_EPS)
    # Each candidate's rows are a contiguous slice: normalising them one by one is what K separate
    # passes do, without the transposes a (B, K*C, H, W) layout would cost.
    n = x.shape[0] // groups
    return torch.cat([F.batch_norm(x[i * n:(i + 1) * n], None, None, gamma, beta, training=True, eps=BN_EPS)
                      for i in range(groups)])


def pooled_kernel(w: torch.Tensor) -> torch.Tensor:
    """The kernel of avg_pool2d(conv2d(x, w, padding=1), 2) as one conv with stride 2 and padding 1:
    the 3x3 kernel convolved with the 2x2 box / 4 (a 4x4 kernel)."""
    box = torch.full((1, 1, 2, 2), 0.25, dtype=w.dtype, device=w.device)
    c_out, c_in = w.shape[:2]
    return F.conv_transpose2d(w.reshape(c_out * c_in, 1, 3, 3), box).view(c_out, c_in, 4, 4)


def conv_skip_pool(a: torch.Tensor, w: torch.Tensor, pool: bool, fold_pool: bool = False,
                   skip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """conv3x3(a) [+ skip] [-> 2x2 average pool], the pool optionally folded into the conv."""
    if pool and fold_pool:
        z = F.conv2d(a, pooled_kernel(w), stride=2, padding=1)
        return z if skip is None else z + F.avg_pool2d(skip, 2)
    z = F.conv2d(a, w, padding=1)
    if skip is not None:
        z = z + skip
    return F.avg_pool2d(z, 2) if pool else z


def bn_eval(x: torch.Tensor, stats: tuple, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    mean, var = stats
    return F.batch_norm(x, mean, var, gamma, beta, training=False, eps=BN_EPS)


class RSONet(nn.Module):
    def __init__(self, in_channels: int, widths: list[int], pool_after: tuple, skips: dict, num_classes: int):
        super().__init__()
        self.widths, self.pool_after, self.skips = list(widths), tuple(pool_after), dict(skips)
        self.in_channels = in_channels
        chans = [in_channels] + self.widths
        self.convs = nn.ModuleList(nn.Conv2d(chans[k], chans[k + 1], 3, padding=1, bias=False)
                                   for k in range(len(widths)))
        self.bns = nn.ModuleList(nn.BatchNorm2d(w) for w in self.widths)
        # 1x1 projections where a skip changes the channel count; keyed by the receiving block.
        self.projs = nn.ModuleDict()
        self.proj_bns = nn.ModuleDict()
        for k, s in self.skips.items():
            if self.widths[s] != self.widths[k]:
                self.projs[str(k)] = nn.Conv2d(self.widths[s], self.widths[k], 1, bias=False)
                self.proj_bns[str(k)] = nn.BatchNorm2d(self.widths[k])
        self.fc = nn.Linear(self.widths[-1], num_classes, bias=False)
        self.reset_parameters()

    @property
    def num_blocks(self) -> int:
        return len(self.widths)

    def reset_parameters(self) -> None:
        """He-normal N(0, 2/fan_in) for every conv/FC weight; BN gamma=1, beta=0 (authors' init)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                with torch.no_grad():
                    m.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight), nn.init.zeros_(m.bias)

    def has_proj(self, k: int) -> bool:
        return str(k) in self.projs

    # -- block-wise forward ---------------------------------------------------------------------
    def skip_term(self, k: int, src: torch.Tensor, groups: int = 1, stats: Optional[dict] = None):
        if not self.has_proj(k):
            return src
        bn = self.proj_bns[str(k)]
        q = F.conv2d(src, self.projs[str(k)].weight)
        if stats is not None and ("proj", k) in stats:
            return bn_eval(q, stats[("proj", k)], bn.weight, bn.bias)
        if stats is not None:
            stats[("proj", k)] = _batch_stats(q)
        return bn_train(q, bn.weight, bn.bias, groups)

    def block(self, k: int, inp: torch.Tensor, skip_src: Optional[torch.Tensor] = None, groups: int = 1,
              stats: Optional[dict] = None, fold_pool: bool = False) -> torch.Tensor:
        """Block k's BN output from its input (the previous block's BN output, or the image).

        `stats=None`: batch statistics. A dict: eval with the statistics it holds, or, where it holds
        none for a BN yet, batch statistics that are then recorded into it (calibration pass).
        `fold_pool`: conv + 2x2 average pool as one stride-2 conv (same result up to rounding, 16
        instead of 36 multiply-adds per output and no full-resolution tensor; RSO's fast path).
        """
        return self.block_bn(k, self.block_pre(k, inp, skip_src, groups, stats, fold_pool), groups, stats)

    def block_pre(self, k: int, inp: torch.Tensor, skip_src: Optional[torch.Tensor] = None, groups: int = 1,
                  stats: Optional[dict] = None, fold_pool: bool = False) -> torch.Tensor:
        """Block k up to its BN: ReLU -> conv -> [+ skip] -> [pool] (RSO caches this to update it)."""
        a = inp if k == 0 else F.relu(inp)
        return conv_skip_pool(a, self.convs[k].weight, k in self.pool_after, fold_pool,
                              self.skip_term(k, skip_src, groups, stats) if k in self.skips else None)

    def block_bn(self, k: int, z: torch.Tensor, groups: int = 1, stats: Optional[dict] = None) -> torch.Tensor:
        bn = self.bns[k]
        if stats is not None and ("bn", k) in stats:
            return bn_eval(z, stats[("bn", k)], bn.weight, bn.bias)
        if stats is not None:
            stats[("bn", k)] = _batch_stats(z)
        return bn_train(z, bn.weight, bn.bias, groups)

    def run_blocks(self, start: int, outs: dict, groups: int = 1, stats: Optional[dict] = None,
                   fold_pool: bool = False) -> torch.Tensor:
        """Run blocks start..L-1. `outs[j]` holds block j's output for every j < start still needed
        (start-1 and skip sources); a tensor of batch B is broadcast to K candidates when needed."""
        outs = dict(outs)
        h = outs[start - 1]
        for k in range(start, self.num_blocks):
            src = outs.get(self.skips[k]) if k in self.skips else None
            if src is not None and src.shape[0] != h.shape[0]:
                src = src.repeat(h.shape[0] // src.shape[0], 1, 1, 1)
            h = self.block(k, h, src, groups, stats, fold_pool)
            outs[k] = h
        return h

    def block_outputs(self, x: torch.Tensor, stop: int) -> dict:
        """{-1: x} and every block k < stop's output (batch statistics): what RSO caches below a group."""
        outs = {-1: x}
        for k in range(stop):
            outs[k] = self.block(k, outs[k - 1], outs.get(self.skips[k]) if k in self.skips else None)
        return outs

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h.mean(dim=(2, 3)), self.fc.weight)

    def needed_outputs(self, start: int) -> list[int]:
        """Block outputs that running from block `start` needs: its input and earlier skip sources."""
        need = {start - 1}   # -1 is the image
        need |= {s for k, s in self.skips.items() if k >= start and s < start}
        return sorted(need)

    def forward(self, x: torch.Tensor, stats: Optional[dict] = None) -> torch.Tensor:
        """Whole network; BN uses batch statistics (the RSO trial mode) unless `stats` are given, or the
        network is an exported one (`calibrate`, then `evoplat.load_model`) in eval mode."""
        if stats is None and self.exported and not self.training:
            stats = self.running_stats()
        return self.head(self.run_blocks(0, {-1: x}, 1, stats))

    # -- export: a plain module that classifies with the calibration statistics --------------------
    exported = False      # set on a network rebuilt by evoplat.load_model (RSOTrainer.build_network)

    @torch.no_grad()
    def calibrate(self, calib_x: torch.Tensor) -> None:
        """Store the statistics of a calibration pass over `calib_x` (what RSO evaluates with) in the BN
        modules' running buffers, so that they travel in the state dict."""
        stats: dict = {}
        self(calib_x, stats)
        for (kind, k), (mean, var) in stats.items():
            bn = self.bns[k] if kind == "bn" else self.proj_bns[str(k)]
            bn.running_mean.copy_(mean), bn.running_var.copy_(var)

    def running_stats(self) -> dict:
        stats = {("bn", k): (bn.running_mean, bn.running_var) for k, bn in enumerate(self.bns)}
        stats.update({("proj", int(k)): (bn.running_mean, bn.running_var) for k, bn in self.proj_bns.items()})
        return stats


def _batch_stats(z: torch.Tensor) -> tuple:
    var, mean = torch.var_mean(z, dim=(0, 2, 3), unbiased=False)
    return mean.detach(), var.detach()


def build_rso_net(name: str, input_shape: tuple, num_classes: int) -> RSONet:
    if name not in ARCHS:
        raise ValueError(f"unknown RSO network '{name}' (known: {sorted(ARCHS)})")
    widths, pools, skips = ARCHS[name]
    return RSONet(input_shape[0], widths, pools, skips, num_classes)


@MODELS.register("rso_mnist")
def rso_mnist(input_shape, num_outputs):
    """The paper's MNIST network (12,016 parameters for 1x28x28 inputs and 10 classes)."""
    return build_rso_net("rso_mnist", input_shape, num_outputs)


@MODELS.register("rso_cifar10")
def rso_cifar10(input_shape, num_outputs):
    """The paper's CIFAR-10 network, with 1x1 projections on its skips."""
    return build_rso_net("rso_cifar10", input_shape, num_outputs)

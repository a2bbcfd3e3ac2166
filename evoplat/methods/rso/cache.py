"""Cached activations of one layer group and the three-candidate evaluation that starts from them.

While RSO sweeps the tensors of block k (conv, BN, projection), nothing below block k changes, so for
each batch of the group's cycle we keep what block k reads (its ReLU'd input, its skip source, the
outputs later skips need), block k's current output and, on the fast path, block k+1's pre-BN tensor.
A trial on a scalar of output channel o then:
  1. recomputes only channel o of block k, for the K candidates at once (the candidates are the K
     output channels of one small conv; each gets its own BN statistics as a channel does);
  2. since BN, ReLU and pooling act channel by channel, only input channel o of block k+1's conv
     changes: its pre-BN tensor is the cached one plus a one-input-channel conv of the change (with
     the 2x2 average pool folded into a stride-2 4x4 kernel), 1/C of the conv's work;
  3. runs block k+1's BN and blocks k+2.. once on the K*B stack (BN statistics per candidate), each
     conv followed by a pool done as one stride-2 conv (16 instead of 36 multiply-adds per output).
Other channels of the cached output go stale when their weights change; they are recomputed for a
batch just before that batch is used again, and block k+1's pre-BN tensor with them (it is updated by
deltas in between and recomputed from scratch every RESYNC_EVERY updates so rounding cannot drift).
Everything equals a fresh forward pass of the current weights up to float rounding; near-ties are
re-decided by whole-network passes (rso.py), so decisions are exactly those of the plain method.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoplat.methods.rso.nets import BN_EPS, RSONet, conv_skip_pool
from evoplat.methods.rso.plan import TensorSpec

RESYNC_EVERY = 16   # delta updates of a batch's cached pre-BN tensor before it is recomputed


def ce_sums(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Summed softmax cross-entropy per candidate, in float64 like the authors' code."""
    losses = F.cross_entropy(logits.double(), y.repeat(k), reduction="none")
    return losses.view(k, -1).sum(dim=1)


class GroupCache:
    """Activations of the batches of one layer group (block index, or num_blocks for the FC).
    `fast=True` (the fast path) folds pools into convs and, where block k+1 exists, keeps its pre-BN
    tensor and updates it by deltas; `fast=False` keeps only what the authors' cached path needs."""

    def __init__(self, net: RSONet, group: int, x_batches: list[torch.Tensor], fast: bool = False):
        self.net, self.group, self.fast = net, group, fast
        L = net.num_blocks
        self.keep = net.needed_outputs(group) if group < L else [L - 1]
        # Block k's raw input is needed only if a skip reads it; otherwise its ReLU is all we keep.
        self.raw_input_needed = (group - 1) in {s for kk, s in net.skips.items() if kk >= group}
        self.delta = fast and group + 1 < L and net.skips.get(group + 1) != group
        # Blocks above k+1 that read block k's output through a skip need the K-candidate stack.
        self.stack_needed = group in {s for kk, s in net.skips.items() if kk > group + int(self.delta)}
        self.saved: list[dict] = []       # per batch: {block j: output} for j in keep
        self.act: list[torch.Tensor] = []      # per batch: what block k's conv reads
        self.current: list[torch.Tensor] = []   # per batch: block `group`'s output (or FC features)
        self.pre_next: list[torch.Tensor] = []  # per batch: block k+1's pre-BN tensor (delta path)
        self.pre_updates: list[int] = []
        self.stale: list[set] = []
        with torch.no_grad():
            for x in x_batches:
                self._add_batch(x)

    def _add_batch(self, x: torch.Tensor) -> None:
        net, g = self.net, self.group
        outs = net.block_outputs(x, min(g + 1, net.num_blocks))
        saved = {j: outs[j] for j in self.keep if j < g or g == net.num_blocks}
        if g == net.num_blocks:
            self.current.append(outs[g - 1].mean(dim=(2, 3)))
        else:
            act = outs[g - 1] if g == 0 else F.relu(outs[g - 1])
            if g > 0 and not self.raw_input_needed:
                saved[g - 1] = act     # net.block re-applies ReLU to it: idempotent
            self.act.append(act)
            self.current.append(outs[g])
        self.saved.append(saved)
        self.stale.append(set())
        if self.delta:
            self.pre_next.append(self._pre_next(len(self.current) - 1))
            self.pre_updates.append(0)

    def _pre_next(self, b: int) -> torch.Tensor:
        net, k = self.net, self.group + 1
        src = self.saved[b].get(net.skips[k]) if k in net.skips else None
        return net.block_pre(k, self.current[b], src, fold_pool=True)

    # -- block-k channel recomputation ----------------------------------------------------------
    def channels_out(self, b: int, chans: list[int], conv_w: torch.Tensor, gamma: torch.Tensor,
                     beta: torch.Tensor, proj=None) -> torch.Tensor:
        """Block `group`'s output for len(chans) output channels with the given per-channel parameters
        (conv_w [n, C_in, 3, 3], gamma/beta [n], proj = (w [n, C_s, 1, 1], gamma [n], beta [n]))."""
        net, k, saved = self.net, self.group, self.saved[b]
        skip = None
        if k in net.skips:
            src = saved[net.skips[k]]
            if proj is not None:
                q = F.conv2d(src, proj[0])
                skip = F.batch_norm(q, None, None, proj[1], proj[2], training=True, eps=BN_EPS)
            else:
                skip = src[:, chans]
        z = conv_skip_pool(self.act[b], conv_w, k in net.pool_after, self.fast, skip)
        return F.batch_norm(z, None, None, gamma, beta, training=True, eps=BN_EPS)

    def channel_params(self, chans: list[int]):
        net, k = self.net, self.group
        conv_w = net.convs[k].weight[chans]
        gamma, beta = net.bns[k].weight[chans], net.bns[k].bias[chans]
        proj = None
        if net.has_proj(k):
            pbn = net.proj_bns[str(k)]
            proj = (net.projs[str(k)].weight[chans], pbn.weight[chans], pbn.bias[chans])
        return conv_w, gamma, beta, proj

    def refresh(self, b: int, except_channel: int = -1) -> None:
        """Recompute the channels of batch b whose weights changed since they were computed (and
        block k+1's pre-BN tensor with them, or when its delta updates are due for a resync)."""
        chans = sorted(c for c in self.stale[b] if c != except_channel)
        if chans and self.group < self.net.num_blocks:
            self.current[b][:, chans] = self.channels_out(b, chans, *self.channel_params(chans))
        self.stale[b] -= set(chans)
        if self.delta and (chans or self.pre_updates[b] >= RESYNC_EVERY):
            self.pre_next[b] = self._pre_next(b)
            self.pre_updates[b] = 0

    def mark_changed(self, channel: int, except_batch: int = -1) -> None:
        for b, s in enumerate(self.stale):
            if b != except_batch:
                s.add(channel)

    def next_pre_delta(self, o: int, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """Change of block k+1's pre-BN tensor when channel o of block k's output goes from `old`
        (B, H, W) to each of `new` (K, B, H, W): a conv of the one changed input channel."""
        net, k1 = self.net, self.group + 1
        K, B = new.shape[:2]
        d = (F.relu(new) - F.relu(old)).reshape(K * B, 1, *new.shape[2:])
        dz = conv_skip_pool(d, net.convs[k1].weight[:, o:o + 1], k1 in net.pool_after, fold_pool=True)
        return dz.view(K, B, *dz.shape[1:])

    # -- trials ---------------------------------------------------------------------------------
    def candidate_losses(self, b: int, spec: TensorSpec, j: int, values: torch.Tensor, y: torch.Tensor):
        """Summed CE of the K candidate values of scalar j of `spec` on batch b, in one batched pass.
        Returns (losses [K], the candidates' recomputed channel, for `accept`)."""
        net, K = self.net, len(values)
        param = net.get_parameter(spec.name)
        o = spec.channel(j, param.shape)
        if spec.kind == "fc":
            feats = self.current[b]
            logits = F.linear(feats, net.fc.weight).unsqueeze(0).repeat(K, 1, 1)
            w = net.fc.weight[o].unsqueeze(0).repeat(K, 1)
            w.view(K, -1)[:, j - o * w.shape[1]] = values
            logits[:, :, o] = (feats @ w.T).T
            return ce_sums(logits.view(K * len(feats), -1), y, K), None
        self.refresh(b, except_channel=o)
        conv_w, gamma, beta, proj = self.channel_params([o] * K)
        conv_w, gamma, beta = conv_w.clone(), gamma.clone(), beta.clone()
        proj = tuple(t.clone() for t in proj) if proj is not None else None
        within = j - o * (param[0].numel() if param.dim() > 1 else 1)
        target = {"conv": conv_w, "bn_gamma": gamma, "bn_beta": beta}.get(spec.kind)
        if target is None:
            target = {"proj": proj[0], "proj_gamma": proj[1], "proj_beta": proj[2]}[spec.kind] if proj else None
        target.view(K, -1)[:, within] = values
        chan = self.channels_out(b, [o] * K, conv_w, gamma, beta, proj)     # (B, K, H, W)
        cur, k = self.current[b], self.group
        outs = dict(self.saved[b])
        if self.stack_needed or not self.delta:
            stack = cur.unsqueeze(0).repeat(K, 1, 1, 1, 1)
            stack[:, :, o] = chan.transpose(0, 1)
            outs[k] = stack.view(K * cur.shape[0], *cur.shape[1:])
        if not self.delta:
            h = net.run_blocks(k + 1, outs, groups=K, fold_pool=self.fast)
            return ce_sums(net.head(h), y, K), (chan, None)
        dz = self.next_pre_delta(o, chan.transpose(0, 1), cur[:, o])
        z = self.pre_next[b].unsqueeze(0) + dz
        outs[k + 1] = net.block_bn(k + 1, z.view(-1, *z.shape[2:]), groups=K)
        h = net.run_blocks(k + 2, outs, groups=K, fold_pool=True)
        return ce_sums(net.head(h), y, K), (chan, z)

    def accept(self, b: int, spec: TensorSpec, j: int, winner: int, trial) -> None:
        """Record the trial's outcome: batch b's channel is the winner's, other batches' is stale."""
        if spec.kind == "fc":
            return
        o = spec.channel(j, self.net.get_parameter(spec.name).shape)
        if trial is not None:
            chan, z = trial
            self.current[b][:, o] = chan[:, winner]
            self.stale[b].discard(o)
            if z is not None:
                self.pre_next[b] = z[winner].clone()     # not a view: z holds all K
                self.pre_updates[b] += 1
        else:
            self.stale[b].add(o)
        self.mark_changed(o, except_batch=b if trial is not None else -1)

    def single_losses(self, b: int, spec: TensorSpec, j: int, values: torch.Tensor, y: torch.Tensor):
        """The authors' way, for comparison: from the cached inputs, one candidate per forward pass
        through the whole block k and everything above it."""
        net, param = self.net, self.net.get_parameter(spec.name)
        flat = param.data.view(-1)
        old = flat[j].clone()
        out = []
        for v in values:
            flat[j] = v
            if spec.kind == "fc":
                logits = F.linear(self.current[b], net.fc.weight)
            else:
                saved = self.saved[b]
                k = self.group
                src = saved.get(net.skips[k]) if k in net.skips else None
                outs = dict(saved)
                outs[k] = net.block(k, saved[k - 1], src)
                logits = net.head(net.run_blocks(k + 1, outs))
            out.append(ce_sums(logits, y, 1)[0])
        flat[j] = old
        return torch.stack(out), None

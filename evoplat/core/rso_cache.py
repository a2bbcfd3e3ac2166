"""Cached activations of one layer group and the three-candidate evaluation that starts from them.

While RSO sweeps the tensors of block k (conv, BN, projection), nothing below block k changes, so for
each batch of the group's cycle we keep what block k reads (its input, its skip source, the outputs
later skips need) and block k's current output. A trial on a scalar of output channel o then:
  1. recomputes only channel o of block k, for the K candidates at once (the candidates are the K
     output channels of one small conv; each gets its own BN statistics as a channel does);
  2. copies the cached output K times with channel o replaced, and runs blocks k+1.. once on the
     K*B stack (BN statistics per candidate), then the head.
Other channels of the cached output go stale when their weights change; they are recomputed for a
batch just before that batch is used again (each channel once per batch), so they always equal a
fresh forward pass of the current weights up to float rounding (the decision guard covers rounding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .models.rso_nets import BN_EPS, RSONet
from .rso_plan import TensorSpec


def ce_sums(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Summed softmax cross-entropy per candidate, in float64 like the authors' code."""
    losses = F.cross_entropy(logits.double(), y.repeat(k), reduction="none")
    return losses.view(k, -1).sum(dim=1)


class GroupCache:
    """Activations of the batches of one layer group (block index, or num_blocks for the FC)."""

    def __init__(self, net: RSONet, group: int, x_batches: list[torch.Tensor], chunk: int = 2000):
        self.net, self.group = net, group
        self.keep = net.needed_outputs(group) if group < net.num_blocks else [net.num_blocks - 1]
        self.saved: list[dict] = []       # per batch: {block j: output} for j in keep
        self.current: list[torch.Tensor] = []   # per batch: block `group`'s output (or FC features)
        self.stale: list[set] = []
        with torch.no_grad():
            for x in x_batches:
                self._add_batch(x)

    def _add_batch(self, x: torch.Tensor) -> None:
        net, g = self.net, self.group
        outs = {-1: x}
        for k in range(min(g + 1, net.num_blocks)):
            src = outs.get(net.skips[k]) if k in net.skips else None
            outs[k] = net.block(k, outs[k - 1], src)
        self.saved.append({j: outs[j] for j in self.keep if j < g or g == net.num_blocks})
        if g == net.num_blocks:
            self.current.append(outs[g - 1].mean(dim=(2, 3)))
        else:
            self.current.append(outs[g])
        self.stale.append(set())

    # -- block-k channel recomputation ----------------------------------------------------------
    def channels_out(self, b: int, chans: list[int], conv_w: torch.Tensor, gamma: torch.Tensor,
                     beta: torch.Tensor, proj=None) -> torch.Tensor:
        """Block `group`'s output for len(chans) output channels with the given per-channel parameters
        (conv_w [n, C_in, 3, 3], gamma/beta [n], proj = (w [n, C_s, 1, 1], gamma [n], beta [n]))."""
        net, k, saved = self.net, self.group, self.saved[b]
        inp = saved[k - 1]
        a = inp if k == 0 else F.relu(inp)
        z = F.conv2d(a, conv_w, padding=1)
        if k in net.skips:
            src = saved[net.skips[k]]
            if proj is not None:
                q = F.conv2d(src, proj[0])
                z = z + F.batch_norm(q, None, None, proj[1], proj[2], training=True, eps=BN_EPS)
            else:
                z = z + src[:, chans]
        if k in net.pool_after:
            z = F.avg_pool2d(z, 2)
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
        """Recompute the channels of batch b whose weights changed since they were computed."""
        chans = sorted(c for c in self.stale[b] if c != except_channel)
        if chans and self.group < self.net.num_blocks:
            self.current[b][:, chans] = self.channels_out(b, chans, *self.channel_params(chans))
        self.stale[b] -= set(chans)

    def mark_changed(self, channel: int, except_batch: int = -1) -> None:
        for b, s in enumerate(self.stale):
            if b != except_batch:
                s.add(channel)

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
        cur = self.current[b]
        stack = cur.unsqueeze(0).repeat(K, 1, 1, 1, 1)
        stack[:, :, o] = chan.transpose(0, 1)
        outs = dict(self.saved[b])
        outs[self.group] = stack.view(K * cur.shape[0], *cur.shape[1:])
        h = net.run_blocks(self.group + 1, outs, groups=K)
        return ce_sums(net.head(h), y, K), chan

    def accept(self, b: int, spec: TensorSpec, j: int, winner: int, chan) -> None:
        """Record the trial's outcome: batch b's channel is the winner's, other batches' is stale."""
        if spec.kind == "fc":
            return
        o = spec.channel(j, self.net.get_parameter(spec.name).shape)
        if chan is not None:
            self.current[b][:, o] = chan[:, winner]
            self.stale[b].discard(o)
        else:
            self.stale[b].add(o)
        self.mark_changed(o, except_batch=b if chan is not None else -1)

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

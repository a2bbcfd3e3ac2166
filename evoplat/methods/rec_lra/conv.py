"""Convolutional and residual rec-LRA: a CIFAR ResNet (ResNet-20 class) without batch norm whose error
pathway mirrors its residual blocks.

Layers: stem conv -> residual blocks (conv1, conv2, optional 1x1 projection shortcut) -> global
average pool -> linear classifier. Every block output and the stem get their target from the output
error e^L through an error skip (m = 2, the block size); the inner conv1 of a block gets it from the
block's own output error (adjacent). So no error ever travels more than two layers: the recursion
depth is the block size, which is what lets the rule scale to deep nets.

Conv E operators (the paper's is not known; docs/rec_lra.md, Specification):
* adjacent (block output -> conv1): E has the shape of conv2's kernel and acts as a transposed
  convolution with conv2's geometry, d = conv_transpose2d(e_out, E). This is the exact place W^T would
  act in backprop, with an independent learned kernel instead of W, so the displacement keeps spatial
  structure, costs one conv, and the Kolen-Pollack E rule (dE = gamma dW^{l+1}) applies verbatim.
* error skip (e^L in R^K -> a C x H x W layer): e^L has no spatial structure, so E is a dense
  [C*H*W, K] matrix (what "E maps the output error to layer l" means for a flattened layer). It gives
  each position its own displacement; the port's channel-only E broadcast over H x W cannot. Cost is
  small: 16*32*32*10 = 164k entries for a full-width first stage.
Weight updates are the conv analogue of e z^T: the correlation of the layer's error units with its
input (`torch.nn.grad.conv2d_weight`, a direct kernel, no autograd graph).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_weight

from evoplat.methods.rec_lra.rule import ACTIVATIONS, RuleSettings, e_update_factor, error_units, init_matrix, set_update


class RecLRABlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, branch_scale: float):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.proj = nn.Conv2d(cin, cout, 1, stride, 0, bias=False) if (stride != 1 or cin != cout) else None
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            conv.bias.data.zero_()
        # No batch norm: scale the residual branch (Fixup-style, L^-1/2) so activations do not blow up.
        self.conv2.weight.data.mul_(branch_scale)
        if self.proj is not None:
            nn.init.kaiming_normal_(self.proj.weight, nonlinearity="linear")

    def shortcut(self, z):
        return z if self.proj is None else self.proj(z)


class RecLRAResNet(nn.Module):
    def __init__(self, input_shape: tuple, num_classes: int, width: float = 1.0, blocks_per_stage: int = 3,
                 activation: str = "relu", e_init: str = "gaussian", e_init_std: float = 1.0):
        super().__init__()
        cin, H, W = input_shape
        self.act = ACTIVATIONS[activation]
        chans = [max(1, int(round(c * width))) for c in (16, 32, 64)]
        self.stem = nn.Conv2d(cin, chans[0], 3, 1, 1)
        nn.init.kaiming_normal_(self.stem.weight, nonlinearity="relu")
        self.stem.bias.data.zero_()
        blocks, shapes, c = [], [], chans[0]
        n_blocks = 3 * blocks_per_stage
        h, w = H, W
        for i, cout in enumerate(chans):
            for b in range(blocks_per_stage):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(RecLRABlock(c, cout, stride, n_blocks ** -0.5))
                h, w = math.ceil(h / stride), math.ceil(w / stride)
                shapes.append((cout, h, w))
                c = cout
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(c, num_classes)
        # Error-feedback operators: dense skip E for the stem and each block output, conv E per block.
        self.out_shapes = [(chans[0], H, W), *shapes]
        self.skip_E = nn.ParameterList()
        for shp in self.out_shapes:
            e = torch.empty(math.prod(shp), num_classes)
            init_matrix(e, e_init, e_init_std)
            self.skip_E.append(nn.Parameter(e, requires_grad=False))
        self.adj_E = nn.ParameterList()
        for blk in self.blocks:
            e = torch.empty_like(blk.conv2.weight)
            init_matrix(e, e_init, e_init_std)
            self.adj_E.append(nn.Parameter(e, requires_grad=False))

    def forward_params(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith(("skip_E", "adj_E"))]

    def feedback_params(self) -> list[nn.Parameter]:
        return [*self.skip_E, *self.adj_E]

    def run_model(self, x: torch.Tensor) -> dict:
        """Every quantity the sweep needs: stem (h, z), per block (z_in, h1, z_mid, h_out, z_out), logits."""
        h = self.stem(x)
        z = self.act(h)
        rec = {"x": x, "stem": (h, z), "blocks": []}
        for blk in self.blocks:
            h1 = blk.conv1(z)
            zm = self.act(h1)
            ho = blk.conv2(zm) + blk.shortcut(z)
            zo = self.act(ho)
            rec["blocks"].append((z, h1, zm, ho, zo))
            z = zo
        rec["pooled"] = z.mean((2, 3))
        rec["logits"] = self.classifier(rec["pooled"])
        return rec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_model(x)["logits"]

    def _skip_target_error(self, k: int, h, z, eL, rule):
        """Error units of an error-skip endpoint k (0 = stem, k = block k-1's output) and its dE."""
        E = self.skip_E[k]
        d = (eL @ E.t()).view_as(h)
        err = error_units(z, self.act(h - rule.beta * d), rule, skip_endpoint=True)
        dE = e_update_factor(rule, z, d).flatten(1).t() @ eL / eL.shape[0]
        return err, dE

    @torch.no_grad()
    def compute_updates(self, x: torch.Tensor, y: torch.Tensor, rule: RuleSettings) -> dict:
        B, r = x.shape[0], rule.ball_radius
        rec = self.run_model(x)
        probs = torch.softmax(rec["logits"], 1)
        eL = error_units(probs, F.one_hot(y, probs.shape[1]).to(probs.dtype), rule, skip_endpoint=True)
        set_update(self.classifier.weight, eL.t() @ rec["pooled"] / B, r)
        set_update(self.classifier.bias, eL.mean(0), r)
        discrepancy = 0.0
        h, z = rec["stem"]
        err, dE = self._skip_target_error(0, h, z, eL, rule)
        set_update(self.stem.weight, conv2d_weight(x, self.stem.weight.shape, err, 1, 1) / B, r)
        set_update(self.stem.bias, err.sum((0, 2, 3)) / B, r)
        set_update(self.skip_E[0], dE, r)
        discrepancy += float(err.pow(2).sum())
        for k, (blk, (z_in, h1, zm, ho, zo)) in enumerate(zip(self.blocks, rec["blocks"])):
            e_out, dE = self._skip_target_error(k + 1, ho, zo, eL, rule)
            set_update(self.skip_E[k + 1], dE, r)
            # adjacent: the block's output error drives conv1's target through the conv E operator
            E = self.adj_E[k]
            d = F.conv_transpose2d(e_out, E, padding=1)
            e_mid = error_units(zm, self.act(h1 - rule.beta * d), rule, skip_endpoint=False)
            set_update(E, conv2d_weight(e_update_factor(rule, zm, d), E.shape, e_out, 1, 1) / B, r)
            set_update(blk.conv2.weight, conv2d_weight(zm, blk.conv2.weight.shape, e_out, 1, 1) / B, r)
            set_update(blk.conv2.bias, e_out.sum((0, 2, 3)) / B, r)
            set_update(blk.conv1.weight, conv2d_weight(z_in, blk.conv1.weight.shape, e_mid, blk.stride, 1) / B, r)
            set_update(blk.conv1.bias, e_mid.sum((0, 2, 3)) / B, r)
            if blk.proj is not None:
                set_update(blk.proj.weight, conv2d_weight(z_in, blk.proj.weight.shape, e_out, blk.stride, 0) / B, r)
            discrepancy += float(e_out.pow(2).sum() + e_mid.pow(2).sum())
        loss = F.cross_entropy(rec["logits"], y)
        return {"loss": float(loss), "correct": int((rec["logits"].argmax(1) == y).sum()),
                "discrepancy": discrepancy / B}

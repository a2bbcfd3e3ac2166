"""Recursive local representation alignment (rec-LRA; Ororbia, Mali, Kifer, Giles) for MLPs.

Specification: docs/rec_lra.md. One step, all under `torch.no_grad()`:
1. forward pass, keeping pre-activations h and activities z (z^0 = x, z^L = softmax);
2. top-down target sweep: e^L = z^L - y; for l = L-1..1 the source s is e^L ("error skip", when
   error_skip > 0 and l % error_skip == 0) or e^{l+1} (adjacent); d = E^l s, target = phi(h - beta d),
   e^l = z^l - target (or the L1/L2 mixture);
3. dW^l = e^l (z^{l-1})^T / B (no activation derivative), dE^l by the chosen rule, each update tensor
   re-projected into a ball of radius c, then handed to a torch optimizer as `.grad`.

Batch-major shapes: z^l is [B, d_l], W^l is [d_l, d_{l-1}] (nn.Linear), E^l is [d_l, d_source].
The conv/residual networks of `conv.py` use the same helpers; learner.py trains either.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "lrelu": lambda h: F.leaky_relu(h, 0.1)}


@dataclass
class RuleSettings:
    """The learning-rule constants (see RecLRAConfig for their meaning and defaults)."""
    beta: float = 0.1
    gamma: float = 1.0
    e_rule: str = "kolen_pollack"        # or "eq6"
    error_units: str = "l2"              # or "l1l2"
    alpha_skip: float = 0.19
    alpha_adjacent: float = 0.24
    ball_radius: float = 1.0             # 0 disables the re-projection
    input_noise: float = 0.0


def error_units(z: torch.Tensor, target: torch.Tensor, rule: RuleSettings, skip_endpoint: bool) -> torch.Tensor:
    """e = z - target (L2), or the convex L2/L1 mixture a (z - t) + (1 - a) sign(z - t)."""
    diff = z - target
    if rule.error_units == "l2":
        return diff
    a = rule.alpha_skip if skip_endpoint else rule.alpha_adjacent
    return a * diff + (1.0 - a) * torch.sign(diff)


def e_update_factor(rule: RuleSettings, z_layer: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The layer-side factor of dE = factor (x) source-error.

    kolen_pollack (LRA-E official): dE^l = gamma z^l (s)^T / B, which for an adjacent source is exactly
    gamma (dW^{l+1})^T, so E tracks the transposed forward update. For an error-skip source it is the
    transposed update a direct l -> L connection would get (the natural generalisation).
    eq6 (rec-LRA port): dE^l = -gamma d^l (s)^T / B.
    """
    if rule.e_rule == "kolen_pollack":
        return rule.gamma * z_layer
    if rule.e_rule == "eq6":
        return -rule.gamma * d
    raise ValueError(f"unknown e_rule '{rule.e_rule}'")


def reproject(delta: torch.Tensor, radius: float) -> torch.Tensor:
    """Gaussian-ball re-projection: delta <- radius * delta / ||delta|| when ||delta|| >= radius."""
    if radius <= 0:
        return delta
    norm = delta.norm()
    return delta * (radius / norm) if norm >= radius else delta


def set_update(param: torch.Tensor, delta: torch.Tensor, radius: float) -> None:
    """Hand a rec-LRA update to the optimizer as if it were a gradient (the optimizer subtracts it)."""
    param.grad = reproject(delta, radius).to(param.dtype).contiguous()


def init_matrix(t: torch.Tensor, scheme: str, std: float) -> None:
    """gaussian: N(0, std^2) (the paper's unit Gaussian is std=1); xavier, orthogonal, kaiming: torch's."""
    if scheme == "gaussian":
        nn.init.normal_(t, 0.0, std)
    elif scheme == "xavier":
        nn.init.xavier_normal_(t)
    elif scheme == "orthogonal":
        nn.init.orthogonal_(t)
    elif scheme == "kaiming":
        nn.init.kaiming_normal_(t, nonlinearity="relu")
    else:
        raise ValueError(f"unknown init '{scheme}'")


class RecLRAMLP(nn.Module):
    """An MLP with error-feedback matrices. `forward` is the ordinary network (used for evaluation and by
    the backprop baseline); `compute_updates` is the rec-LRA rule."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int, activation: str = "tanh",
                 error_skip: int = 2, forward_skip: int = 0, init: str = "gaussian", w_init_std: float = 0.05,
                 e_init: str = "gaussian", e_init_std: float = 1.0, bias: bool = True):
        super().__init__()
        self.sizes = [in_features, *hidden, num_classes]
        self.act_name, self.act = activation, ACTIVATIONS[activation]
        self.error_skip, self.forward_skip = error_skip, forward_skip
        self.L = len(self.sizes) - 1
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        for lin in self.layers:
            init_matrix(lin.weight.data, init, w_init_std)
            if lin.bias is not None:
                lin.bias.data.zero_()
        # E^l for hidden layers l = 1..L-1 (index l-1); E is learned by the rule, never by autograd.
        self.feedback = nn.ParameterList()
        for l in range(1, self.L):
            e = torch.empty(self.sizes[l], self.sizes[self.source(l)])
            init_matrix(e, e_init, e_init_std)
            self.feedback.append(nn.Parameter(e, requires_grad=False))

    def source(self, l: int) -> int:
        """Layer whose error units drive layer l's target: L through an error skip, else l + 1."""
        return self.L if self.error_skip > 0 and l % self.error_skip == 0 else l + 1

    def forward_params(self) -> list[nn.Parameter]:
        return list(self.layers.parameters())

    def feedback_params(self) -> list[nn.Parameter]:
        return list(self.feedback)

    def _residual(self, l: int, zs: list) -> Optional[torch.Tensor]:
        n = self.forward_skip
        if n > 0 and l < self.L and l >= n and l % n == 0 and zs[l - n].shape[1] == self.sizes[l]:
            return zs[l - n]
        return None

    def run_model(self, x: torch.Tensor):
        """RUNMODEL: pre-activations hs[l] and activities zs[l] (zs[0] = x, zs[L] = logits)."""
        zs, hs = [x.flatten(1)], [None]
        for l in range(1, self.L + 1):
            h = self.layers[l - 1](zs[-1])
            skip = self._residual(l, zs)
            if skip is not None:
                h = h + skip
            hs.append(h)
            zs.append(self.act(h) if l < self.L else h)
        return hs, zs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_model(x)[1][-1]

    @torch.no_grad()
    def compute_updates(self, x: torch.Tensor, y: torch.Tensor, rule: RuleSettings) -> dict:
        """One rec-LRA sweep on a batch; sets `.grad` of every W, b and E. Returns step statistics."""
        B = x.shape[0]
        hs, zs = self.run_model(x)
        probs = torch.softmax(zs[-1], dim=1)
        onehot = F.one_hot(y, self.sizes[-1]).to(probs.dtype)
        errs: dict[int, torch.Tensor] = {self.L: error_units(probs, onehot, rule, skip_endpoint=True)}
        e_grads = {}
        for l in range(self.L - 1, 0, -1):              # the recursive top-down sweep
            src_layer = self.source(l)
            src = errs[src_layer]
            E = self.feedback[l - 1]
            d = src @ E.t()                              # d^l = E^l s, batch-major
            target = self.act(hs[l] - rule.beta * d)
            errs[l] = error_units(zs[l], target, rule, skip_endpoint=src_layer == self.L and l != self.L - 1)
            e_grads[l] = e_update_factor(rule, zs[l], d).t() @ src / B
        for l in range(1, self.L + 1):                   # all layers independently (parallelisable)
            lin = self.layers[l - 1]
            set_update(lin.weight, errs[l].t() @ zs[l - 1] / B, rule.ball_radius)
            if lin.bias is not None:
                set_update(lin.bias, errs[l].mean(0), rule.ball_radius)
        for l, g in e_grads.items():
            set_update(self.feedback[l - 1], g, rule.ball_radius)
        loss = F.cross_entropy(zs[-1], y)
        discrepancy = sum(float(errs[l].pow(2).sum()) for l in range(1, self.L)) / B
        return {"loss": float(loss), "correct": int((zs[-1].argmax(1) == y).sum()), "discrepancy": discrepancy}


@torch.no_grad()
def rec_lra_step(net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 rule: RuleSettings, noise_gen: Optional[torch.Generator] = None) -> dict:
    """One rec-LRA update of `net` (RecLRAMLP or RecLRAResNet): input noise, sweep, optimizer step."""
    if rule.input_noise > 0:
        noise = torch.randn(x.shape, generator=noise_gen, dtype=x.dtype).to(x.device)
        x = x + rule.input_noise * noise
    optimizer.zero_grad(set_to_none=True)
    stats = net.compute_updates(x, y, rule)
    optimizer.step()
    return stats

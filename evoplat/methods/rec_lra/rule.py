"""Recursive local representation alignment (rec-LRA; Ororbia, Mali, Kifer, Giles) for MLPs.

Specification: docs/rec_lra.md. One step, all under `torch.no_grad()`:
1. forward pass, keeping pre-activations h and activities z (z^0 = x, z^L = softmax);
2. top-down target sweep: e^L = z^L - y; for l = L-1..1 the source s is e^L ("error skip", when
   error_skip > 0 and l % error_skip == 0) or e^{l+1} (adjacent); d = E^l s, target = phi(h - beta d),
   e^l = z^l - target (or the L1/L2 mixture);
3. dW^l = e^l (z^{l-1})^T / B (no activation derivative), dE^l by the chosen rule, each update tensor
   re-projected into a ball of radius c, then handed to a torch optimizer as `.grad`.

Batch-major shapes: z^l is [B, d_l], W^l is [d_l, d_{l-1}] (nn.Linear), E^l is [d_l, d_source].
The same learner object hosts the conv/residual networks of `conv.py`; only the network differs.
"""
from __future__ import annotations

import math
import time
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


# -- learner: one network + optimizer, trained epoch by epoch (rec-LRA or the backprop baseline) -------

def rule_from_config(rc) -> RuleSettings:
    return RuleSettings(beta=rc.beta, gamma=rc.gamma, e_rule=rc.e_rule, error_units=rc.error_units,
                        alpha_skip=rc.alpha_skip, alpha_adjacent=rc.alpha_adjacent,
                        ball_radius=rc.ball_radius, input_noise=rc.input_noise)


def build_rec_lra_net(cfg, input_shape: tuple, num_classes: int) -> nn.Module:
    """The rec-LRA network of `cfg.model` (mlp | resnet20), initialised from `cfg.model.init_seed`."""
    rc, mc = cfg.rec_lra, cfg.model
    act = rc.activation or mc.activation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mc.init_seed)
        if mc.name == "mlp":
            return RecLRAMLP(int(torch.tensor(input_shape).prod()), list(mc.hidden), num_classes, act,
                             rc.error_skip, rc.forward_skip, rc.init, rc.w_init_std, rc.e_init, rc.e_init_std)
        if mc.name == "resnet20":
            from evoplat.methods.rec_lra.conv import RecLRAResNet
            return RecLRAResNet(tuple(input_shape), num_classes, mc.width, rc.resnet_blocks, act,
                                rc.e_init, rc.e_init_std)
    raise ValueError(f"rec_lra supports model.name mlp or resnet20, not '{mc.name}'")


class RecLRALearner:
    """Everything one run (or one population member) trains: network, optimizer, epoch counter.

    Epoch e's minibatch order and augmentation come from `platform.backprop.epoch_generator(seed, e)` in
    both modes, so rec-LRA and its backprop baseline see identical batches; input noise has its own
    (seed, epoch)-keyed generator. The whole state is (net, optimizer, epoch, best): resume is exact.
    """

    def __init__(self, cfg, data):
        from evoplat.platform.backprop import make_torch_optimizer
        self.cfg, self.rc, self.data = cfg, cfg.rec_lra, data
        self.rule = rule_from_config(self.rc)
        self.net = build_rec_lra_net(cfg, data.input_shape, data.num_classes).to(data.x_train.device)
        rc = self.rc
        groups = [{"params": self.net.forward_params(), "lr": rc.lr, "weight_decay": rc.weight_decay}]
        if rc.mode == "rec_lra":   # the baseline never touches E
            groups.append({"params": self.net.feedback_params(), "lr": rc.lr_feedback or rc.lr,
                           "weight_decay": rc.feedback_weight_decay})
        self.optimizer = make_torch_optimizer(rc.optimizer, groups, rc.lr, rc.momentum, rc.weight_decay)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.epoch, self.best_test_acc = 0, 0.0

    def _set_lr(self, epoch: int) -> None:
        scale = 1.0
        if self.rc.lr_schedule == "cosine":
            scale = 0.5 * (1.0 + math.cos(math.pi * epoch / self.rc.epochs))
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * scale

    def train_epoch(self) -> dict:
        """Train epoch `self.epoch` and return its training metrics (and seconds of pure training)."""
        from evoplat.platform.backprop import cifar_augment, epoch_generator, train_epoch
        rc, seed, e = self.rc, self.cfg.seed, self.epoch
        self._set_lr(e)
        x, y = self.data.x_train, self.data.y_train
        t0, c0 = time.perf_counter(), time.process_time()
        self.net.train()
        if rc.mode == "backprop":
            out = train_epoch(self.net, self.optimizer, x, y, rc.batch_size, seed, e, rc.augment)
        else:
            gen = epoch_generator(seed, e)
            noise_gen = torch.Generator().manual_seed((seed * 1_000_003 + 104_729 * (e + 1) + 17) % (2**63))
            perm = torch.randperm(len(x), generator=gen).to(x.device)
            loss, correct, disc, seen = 0.0, 0, 0.0, 0
            for a in range(0, len(x), rc.batch_size):
                idx = perm[a:a + rc.batch_size]
                xb, yb = x[idx], y[idx]
                if rc.augment:
                    xb = cifar_augment(xb, gen)
                s = rec_lra_step(self.net, self.optimizer, xb, yb, self.rule, noise_gen)
                loss, correct = loss + s["loss"] * len(idx), correct + s["correct"]
                disc, seen = disc + s["discrepancy"] * len(idx), seen + len(idx)
            out = {"train_loss": loss / seen, "train_acc": correct / seen, "discrepancy": disc / seen}
        # wall time, and CPU time of this process (robust to other jobs sharing the machine)
        out["epoch_time_s"], out["epoch_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        self.epoch += 1
        return out

    def evaluate(self) -> dict:
        from evoplat.platform.population.forward import accuracy
        self.net.eval()
        bs = self.cfg.run.eval_batch_size
        out = {}
        if len(self.data.x_val):
            out["val_acc"], out["val_loss"] = accuracy(self.net, self.data.x_val, self.data.y_val, bs)
        out["test_acc"], out["test_loss"] = accuracy(self.net, self.data.x_test, self.data.y_test, bs)
        self.best_test_acc = max(self.best_test_acc, out["test_acc"])
        out["best_test_acc"] = self.best_test_acc
        return out

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "best_test_acc": self.best_test_acc}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.best_test_acc = int(state["epoch"]), float(state["best_test_acc"])


class RecLRAMemberHost:
    """What a pool worker hosts for a rec-LRA population: the data (loaded once per data config), and
    one epoch of any member, whose full state travels with the work item. A member's epoch depends
    only on (its config, its state, the epoch), never on the worker, so a lost item re-runs exactly."""

    def __init__(self, data_root: Optional[str] = None):
        self.data_root, self._data = data_root, {}

    def run_epoch(self, cfg, state: Optional[dict]) -> tuple[dict, dict]:
        from evoplat.platform.data import load_dataset
        key = cfg.data.model_dump_json()
        if key not in self._data:
            self._data[key] = load_dataset(cfg.data, self.data_root)
        learner = RecLRALearner(cfg, self._data[key])
        if state is not None:
            learner.load_state_dict(state)
        row = learner.train_epoch()
        row.update(learner.evaluate())
        return learner.state_dict(), row

"""Training the ENN by reinforcement learning (pure torch; the trainer spreads episodes over Ray workers).

An episode trains a fresh target MLP with the guided loss and returns its validation accuracy as the
reward. Two update rules (docs/grad_instructor.md):
- pgpe: policy gradient with parameter-based exploration (Sehnke et al. 2010): the policy is a Gaussian
  over ENN weights, N(phi, sigma^2 I); episodes run with phi +/- sigma*eps (antithetic pairs sharing the
  target's init and data order), and REINFORCE's estimate of grad_phi E[R] is
  sum_i u_i eps_i / (n sigma), followed by Adam ascent with eta_phi.
- value: actor-critic. The ENN is the critic V(image of theta_t) ~ E[R | theta_t], regressed on the
  Monte-Carlo return of each episode at a few weight states along it; the guided backprop, climbing the
  critic, is the actor (a deterministic policy gradient through the critic, as in DDPG).
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from evoplat.platform.data import load_dataset
from evoplat.methods.grad_instructor.enn import ENN, Instructor, TargetTraining, build_enn
from evoplat.platform.population.evaluator import pick_device
from evoplat.platform.population.shaping import centered_ranks


def enn_vector(enn: ENN) -> torch.Tensor:
    return parameters_to_vector(enn.parameters()).detach().clone()


def enn_from_vector(channels, flat: torch.Tensor) -> ENN:
    enn = ENN(list(channels))
    vector_to_parameters(flat.detach().clone(), enn.parameters())
    return enn


def episode_seed(run_seed: int, update: int, pair: int) -> int:
    """The target's init/data-order seed of an episode: shared by both members of an antithetic pair."""
    return (run_seed * 1_000_003 + update * 7919 + pair * 104_729 + 17) % (2**31)


def pgpe_noise(run_seed: int, update: int, pair: int, dim: int) -> torch.Tensor:
    """eps of pair `pair` at update `update`: made from the seeds wherever needed, never sent."""
    gen = torch.Generator().manual_seed(episode_seed(run_seed, update, pair) + 2**31)
    return torch.randn(dim, generator=gen)


def episode_items(gcfg, update: int) -> list[tuple]:
    """Work items (update, pair, sign) of one RL update; sign 0 = the unperturbed ENN."""
    n = gcfg.episodes_per_update
    if gcfg.rl_rule == "pgpe":
        items = [(update, i // 2, 1.0 if i % 2 == 0 else -1.0) for i in range(n)]
    else:
        items = [(update, i, 0.0) for i in range(n)]
    if gcfg.eval_center:
        items.append((update, n, 0.0))   # its own target seed, so it is an independent measurement
    return items


class FlatAdam:
    """Adam ascent on a flat vector, its state plain tensors (checkpointable with weights_only)."""

    def __init__(self, dim: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, state: Optional[dict] = None):
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        state = state or {"m": torch.zeros(dim), "v": torch.zeros(dim), "t": 0}
        self.m, self.v, self.t = state["m"].clone(), state["v"].clone(), int(state["t"])

    def ascend(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat = self.m / (1 - self.b1 ** self.t)
        v_hat = self.v / (1 - self.b2 ** self.t)
        return x + self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def state(self) -> dict:
        return {"m": self.m.clone(), "v": self.v.clone(), "t": self.t}


def pgpe_gradient(gcfg, run_seed: int, update: int, rewards: list[float], dim: int) -> torch.Tensor:
    """REINFORCE estimate of grad_phi E[R] from the antithetic episodes of one update (item order)."""
    r = np.asarray(rewards, dtype=np.float64)
    r_plus, r_minus = r[0::2], r[1::2]
    n_pairs = len(r_plus)
    if gcfg.pgpe_shaping == "pair_diff":
        diff = r_plus - r_minus
        scale = np.sqrt(np.mean(diff ** 2)) + 1e-12    # normalised: the step does not shrink with |R| gaps
        coeff = diff / scale
    else:
        u = centered_ranks(r)
        coeff = u[0::2] - u[1::2]
    grad = torch.zeros(dim)
    for i in range(n_pairs):
        grad += float(coeff[i]) * pgpe_noise(run_seed, update, i, dim)
    return grad / (2 * n_pairs * gcfg.pgpe_sigma) if gcfg.pgpe_shaping == "centered_ranks" else \
        grad / (n_pairs * gcfg.pgpe_sigma)


def value_gradient(channels, phi: torch.Tensor, images: torch.Tensor, returns: torch.Tensor) -> tuple:
    """Gradient of -MSE(V(images), returns) in phi (an ascent direction) and the loss before the step."""
    enn = enn_from_vector(channels, phi)
    loss = torch.nn.functional.mse_loss(enn(images), returns)
    grads = torch.autograd.grad(loss, list(enn.parameters()))
    return -torch.cat([g.reshape(-1) for g in grads]), float(loss.detach())


def value_update(gcfg, channels, phi: torch.Tensor, adam: FlatAdam, images, returns) -> tuple:
    """`value_steps` Adam steps of the critic on this update's (image, return) pairs."""
    first_loss = None
    for _ in range(gcfg.value_steps):
        grad, loss = value_gradient(channels, phi, images, returns)
        first_loss = loss if first_loss is None else first_loss
        phi = adam.ascend(phi, grad)
    return phi, first_loss


class EpisodeHost:
    """What a worker hosts: the dataset (on the worker's GPU when runtime.gpus_per_worker > 0), and
    `episode(phi, update, pair, sign)` on demand."""

    def __init__(self, cfg, data_root: Optional[str] = None):
        self.cfg, self.gcfg = cfg, cfg.grad_instructor
        self.data = load_dataset(cfg.data, data_root, pick_device(cfg.runtime.gpus_per_worker))
        n = self.gcfg.train_subset or len(self.data.x_train)
        self.x_train, self.y_train = self.data.x_train[:n], self.data.y_train[:n]
        self.probe = self.data.x_train[:self.gcfg.probe_size]

    def instructor(self, enn: ENN) -> Instructor:
        g = self.gcfg
        return Instructor(enn, g.enn_input, g.resize_factor, g.resize_antialias, self.probe)

    def episode(self, phi: torch.Tensor, update: int, pair: int, sign: float) -> dict:
        t0 = time.perf_counter()
        g = self.gcfg
        flat = phi
        if sign != 0.0:
            flat = phi + sign * g.pgpe_sigma * pgpe_noise(self.cfg.seed, update, pair, phi.numel())
        inst = self.instructor(enn_from_vector(g.enn_channels, flat))
        run = TargetTraining(g, self.cfg.model, self.data, episode_seed(self.cfg.seed, update, pair), inst,
                             self.x_train, self.y_train)
        snaps, marks = [], self._snapshot_marks()
        if 0 in marks:
            snaps.append(inst.image(run.model).detach())
        stats = {}
        for e in range(g.epochs):
            stats = run.run_epoch()
            if e + 1 in marks:
                snaps.append(inst.image(run.model).detach())
        ev = run.evaluate(("val", "test"), None)
        if g.reward_subset:
            ev.update({"val_acc": run.evaluate(("val",), g.reward_subset)["val_acc"]})
        out = {"reward": ev["val_acc"], "val_acc": ev["val_acc"], "test_acc": ev["test_acc"],
               "train_acc": stats["train_acc"], "train_loss": stats["train_loss"],
               "enn_grad_norm": stats.get("enn_grad_norm", 0.0), "seconds": time.perf_counter() - t0}
        if g.rl_rule == "value":
            out["images"] = torch.cat(snaps).cpu()     # the critic's update runs on the driver's CPU
        return out

    def _snapshot_marks(self) -> set:
        """Epoch ends (0 = the initial weights) at which the critic sees the weight state."""
        k = self.gcfg.value_snapshots
        return {int(round(i * self.gcfg.epochs / max(1, k - 1))) for i in range(k)} if k > 1 else \
            {self.gcfg.epochs}


def initial_enn(gcfg) -> ENN:
    return build_enn(gcfg.enn_channels, gcfg.enn_seed)

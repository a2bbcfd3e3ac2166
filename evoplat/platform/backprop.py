"""Plain backprop building blocks shared by every trainer that uses gradients (hybrid, baselines,
consequentialism, Grad-Instructor): optimizers by name, standard CIFAR augmentation, one epoch.

The data order of epoch e is a pure function of (seed, e), so two trainers with the same seed see the
same minibatches in the same order: their differences are paired.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


def make_torch_optimizer(name: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                         nesterov: bool = False) -> torch.optim.Optimizer:
    """sgd | momentum | nag | rmsprop | adam | adamw."""
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "nag":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer '{name}'")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + 7919 * (epoch + 1)) % (2**63))


def cifar_augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, per example, from `gen` (on CPU)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(x.device)
    cols = torch.where(flip.view(n, 1).to(x.device), cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded[idx_n, :, rows.view(n, h, 1), cols.view(n, 1, w)]  # [n, h, w, C]
    return out.permute(0, 3, 1, 2).contiguous()


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, seed: int, epoch: int, augment: bool = False,
                extra_loss: Optional[Callable[[nn.Module], torch.Tensor]] = None,
                scheduler=None, max_steps: Optional[int] = None) -> dict:
    """One pass over (x, y) in the (seed, epoch) order; returns mean train loss and accuracy."""
    model.train()
    gen = epoch_generator(seed, epoch)
    perm = torch.randperm(len(x), generator=gen).to(x.device)
    total, correct, seen = 0.0, 0, 0
    for step, a in enumerate(range(0, len(x), batch_size)):
        if max_steps is not None and step >= max_steps:
            break
        idx = perm[a:a + batch_size]
        xb, yb = x[idx], y[idx]
        if augment:
            xb = cifar_augment(xb, gen)
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        full = loss + extra_loss(model) if extra_loss is not None else loss
        optimizer.zero_grad(set_to_none=True)
        full.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(idx)
        correct += (out.argmax(-1) == yb).sum().item()
        seen += len(idx)
    return {"train_loss": total / max(1, seen), "train_acc": correct / max(1, seen)}


@torch.no_grad()
def evaluate_splits(model: nn.Module, data, batch_size: int, prefix: str = "") -> dict:
    """Validation (if any) and test accuracy/loss of `model` in eval mode (its mode is restored after)."""
    from evoplat.platform.population.forward import accuracy
    was_training = model.training
    model.eval()
    out = {}
    if len(data.x_val):
        out[f"{prefix}val_acc"], out[f"{prefix}val_loss"] = accuracy(model, data.x_val, data.y_val, batch_size)
    out[f"{prefix}test_acc"], out[f"{prefix}test_loss"] = accuracy(model, data.x_test, data.y_test, batch_size)
    model.train(was_training)
    return out

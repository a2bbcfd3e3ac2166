"""The consequentialism trainer (`algorithm: consequential`): backprop epochs with a base optimizer,
optionally wrapped by `core.consequential.ConsequentialOptimizer` (`consequential.enabled`).

Follows the trainer contract exactly, so the generic Ray Tune wrapper can drive it: one metrics row per
epoch (train_loss, val_acc, test_acc, best_test_acc), a full-state checkpoint (weights, optimizer
moments, scheduler, RNG, epoch) on schedule and at the end, and exact resume from `ctx.resume_state`.
The data order of epoch e depends only on (seed, e), so a resumed run sees the same minibatches.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from ..core.backprop import make_torch_optimizer, train_epoch
from ..core.consequential import ConsequentialOptimizer
from ..core.data import load_dataset
from ..core.models import build_model, count_parameters
from ..core.population import accuracy
from .context import RunContext


def build_optimizer(model: nn.Module, ccfg) -> torch.optim.Optimizer:
    """The base optimizer named by `ccfg` (a ConsequentialConfig), wrapped unless `ccfg.enabled` is false."""
    base = make_torch_optimizer(ccfg.optimizer, model.parameters(), ccfg.lr, momentum=ccfg.momentum,
                                weight_decay=ccfg.weight_decay)
    if not ccfg.enabled:
        return base
    return ConsequentialOptimizer(model, base, strength=ccfg.strength, mode=ccfg.mode, damping=ccfg.damping,
                                  rescale=ccfg.rescale)


def base_of(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return optimizer.base if isinstance(optimizer, ConsequentialOptimizer) else optimizer


def make_scheduler(optimizer, ccfg, steps_per_epoch: int):
    if ccfg.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(base_of(optimizer), T_max=ccfg.epochs * steps_per_epoch)


@torch.no_grad()
def evaluate(model: nn.Module, data, batch_size: int) -> dict:
    model.eval()
    out = {}
    if len(data.x_val):
        out["val_acc"], out["val_loss"] = accuracy(model, data.x_val, data.y_val, batch_size)
    out["test_acc"], out["test_loss"] = accuracy(model, data.x_test, data.y_test, batch_size)
    model.train()
    return out


def train(ctx: RunContext) -> dict:
    cfg, ccfg = ctx.cfg, ctx.cfg.consequential
    data = load_dataset(cfg.data, ctx.data_root)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    optimizer = build_optimizer(model, ccfg)
    steps = -(-len(data.x_train) // ccfg.batch_size)
    if ccfg.max_steps_per_epoch:
        steps = min(steps, ccfg.max_steps_per_epoch)
    scheduler = make_scheduler(optimizer, ccfg, steps)
    epoch, best = 0, 0.0
    if ctx.resume_state:
        state = ctx.resume_state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        epoch, best = int(state["epoch"]), float(state["best_test_acc"])

    last: dict = {}
    while epoch < ccfg.epochs:
        t0 = time.perf_counter()
        fit = train_epoch(model, optimizer, data.x_train, data.y_train, ccfg.batch_size, cfg.seed, epoch,
                          augment=ccfg.augment, scheduler=scheduler, max_steps=ccfg.max_steps_per_epoch)
        train_s = time.perf_counter() - t0
        epoch += 1
        row = {"phase": "epoch", "step": epoch, "epoch": epoch, **fit, **evaluate(model, data, cfg.run.eval_batch_size),
               "lr": base_of(optimizer).param_groups[0]["lr"], "epoch_train_s": train_s,
               "step_ms": 1000.0 * train_s / steps}
        best = max(best, row["test_acc"])
        row["best_test_acc"] = best
        final = epoch == ccfg.epochs
        ctx.report(dict(row, final=final))
        last = row
        if epoch % cfg.run.checkpoint_every == 0 or final:
            ctx.checkpoint(epoch, {
                "algorithm": cfg.algorithm, "epoch": epoch, "best_test_acc": best,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "torch_rng": torch.get_rng_state()})
    return {"epochs": epoch, "test_acc": last.get("test_acc"), "val_acc": last.get("val_acc"),
            "best_test_acc": best, "train_loss": last.get("train_loss"), "optimizer": ccfg.optimizer,
            "consequential": ccfg.enabled, "num_params": count_parameters(model)}

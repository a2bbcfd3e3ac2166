"""The consequentialism trainer (`algorithm: consequential`): backprop epochs with a base optimizer,
optionally wrapped by `optimizer.ConsequentialOptimizer` (`consequential.enabled`).

Follows the trainer contract exactly, so the generic Ray Tune wrapper can drive it: one metrics row per
epoch (train_loss, val_acc, test_acc, best_test_acc), a full-state checkpoint (weights, optimizer
moments, scheduler, RNG, epoch) on schedule and at the end, and exact resume from `ctx.resume_state`.
The data order of epoch e depends only on (seed, e), so a resumed run sees the same minibatches.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from evoplat.platform.backprop import make_torch_optimizer, train_epoch
from evoplat.methods.consequential.optimizer import ConsequentialOptimizer
from evoplat.platform.backprop import evaluate_splits
from evoplat.platform.models import count_parameters
from evoplat.platform.run.trainer import Trainer, register_method
from evoplat.methods.consequential.config import ConsequentialConfig


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


@register_method("consequential")
class ConsequentialTrainer(Trainer):
    config_class = ConsequentialConfig
    unit = "epoch"


    def setup(self) -> None:
        ccfg = self.cfg.consequential
        self.data, self.model = self.data_and_model(self.device)
        self.optimizer = build_optimizer(self.model, ccfg)
        steps = -(-len(self.data.x_train) // ccfg.batch_size)
        self.steps_per_epoch = min(steps, ccfg.max_steps_per_epoch) if ccfg.max_steps_per_epoch else steps
        self.scheduler = make_scheduler(self.optimizer, ccfg, self.steps_per_epoch)
        self.epoch = 0

    def step(self) -> dict:
        ccfg = self.cfg.consequential
        t0 = time.perf_counter()
        fit = train_epoch(self.model, self.optimizer, self.data.x_train, self.data.y_train, ccfg.batch_size,
                          self.cfg.seed, self.epoch, augment=ccfg.augment, scheduler=self.scheduler,
                          max_steps=ccfg.max_steps_per_epoch)
        train_s = time.perf_counter() - t0
        self.epoch += 1
        return {"epoch": self.epoch, **fit, "lr": base_of(self.optimizer).param_groups[0]["lr"],
                "epoch_train_s": train_s, "step_ms": 1000.0 * train_s / self.steps_per_epoch}

    def evaluate(self) -> dict:
        return evaluate_splits(self.model, self.data, self.cfg.run.eval_batch_size)

    def network(self):
        return self.model, self.data.input_shape, self.data.num_classes

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])

    def summary(self) -> dict:
        ccfg = self.cfg.consequential
        return {"epochs": self.epoch, "optimizer": ccfg.optimizer, "consequential": ccfg.enabled,
                "num_params": count_parameters(self.model)}

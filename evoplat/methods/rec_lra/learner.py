"""The rec-LRA learner: one network (the MLP of rule.py or the ResNet of conv.py) and its optimizer,
trained epoch by epoch by rec-LRA or, as the baseline, by backprop; and the worker-side host that trains
population members one epoch per work item."""
from __future__ import annotations

import math
import time
from typing import Optional

import torch
from torch import nn

from evoplat.methods.rec_lra.conv import RecLRAResNet
from evoplat.methods.rec_lra.rule import RecLRAMLP, RuleSettings, rec_lra_step

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
    """What a pool worker hosts for a rec-LRA population: the data (loaded once per data config, on the
    worker's GPU when runtime.gpus_per_worker > 0), and one epoch of any member, whose full state travels
    with the work item. A member's epoch depends only on (its config, its state, the epoch), never on
    the worker, so a lost item re-runs exactly."""

    def __init__(self, data_root: Optional[str] = None):
        self.data_root, self._data = data_root, {}

    def run_epoch(self, cfg, state: Optional[dict]) -> tuple[dict, dict]:
        from evoplat.platform.data import load_dataset
        from evoplat.platform.device import cpu_state
        from evoplat.platform.population.evaluator import pick_device
        key = cfg.data.model_dump_json()
        if key not in self._data:
            self._data[key] = load_dataset(cfg.data, self.data_root, pick_device(cfg.runtime.gpus_per_worker))
        learner = RecLRALearner(cfg, self._data[key])
        if state is not None:
            learner.load_state_dict(state)
        row = learner.train_epoch()
        row.update(learner.evaluate())
        # the state goes back to the driver's checkpoint, which must load without a GPU
        return cpu_state(learner.state_dict()), row

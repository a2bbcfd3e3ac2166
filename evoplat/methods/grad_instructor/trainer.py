"""The Grad-Instructor trainer (`algorithm: grad_instructor`), two modes (config.py):

- train_enn: RL of the ENN. Each update sends (phi, episode keys) to the worker pool, where every
  episode trains a fresh target MLP with the guided loss; the rewards come back in item order and the
  driver applies the PGPE or critic update. One metrics row per update; the ENN artefact (enn.pt, reusable
  through `grad_instructor.enn_checkpoint`) and a full-state checkpoint on the checkpoint schedule.
- deploy: one target trained with a frozen ENN (or none: plain backprop / L1 / He baselines), one row
  per epoch.
Episodes depend only on (seed, update, pair), so results do not depend on the number of workers and a
resumed run ends where an uninterrupted one would have.
"""
from __future__ import annotations

import functools
import time
from typing import Optional

import numpy as np
import torch

from evoplat.platform.data import load_dataset
from evoplat.methods.grad_instructor.enn import Instructor, TargetTraining, target_image
from evoplat.methods.grad_instructor.cam import ARTEFACT, load_enn_artefact, save_enn_artefact
from evoplat.methods.grad_instructor.rl import (EpisodeHost, FlatAdam, enn_from_vector, enn_vector, episode_items,
                                       initial_enn, pgpe_gradient, value_update)
from evoplat.methods.grad_instructor.config import GradInstructorConfig
from evoplat.platform.run.trainer import Trainer, register_method


# --- RL training of the ENN -------------------------------------------------------------------------------
def starting_phi(gcfg) -> torch.Tensor:
    if gcfg.enn_checkpoint:
        enn, meta = load_enn_artefact(gcfg.enn_checkpoint)
        if list(meta["enn_channels"]) != list(gcfg.enn_channels):
            raise ValueError(f"grad_instructor.enn_checkpoint has channels {meta['enn_channels']}, the config "
                             f"says {gcfg.enn_channels}")
        return enn_vector(enn)
    return enn_vector(initial_enn(gcfg))


def update_row(gcfg, update: int, results: list, seconds: float) -> dict:
    n = gcfg.episodes_per_update
    rewards = np.array([r["reward"] for r in results[:n]])
    row = {"phase": "rl_update", "step": update, "update": update, "episodes": len(results),
           "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
           "reward_max": float(rewards.max()), "reward_min": float(rewards.min()),
           "episode_test_acc_mean": float(np.mean([r["test_acc"] for r in results[:n]])),
           "enn_grad_norm_mean": float(np.mean([r["enn_grad_norm"] for r in results[:n]])),
           "episode_seconds_mean": float(np.mean([r["seconds"] for r in results])),
           "update_seconds": seconds}
    ref = results[n] if gcfg.eval_center else None
    if ref is not None:   # the unperturbed ENN's own episode
        row.update(val_acc=ref["val_acc"], test_acc=ref["test_acc"], train_acc=ref["train_acc"],
                   train_loss=ref["train_loss"], center_enn_grad_norm=ref["enn_grad_norm"])
    else:
        row.update(val_acc=float(rewards.mean()), test_acc=row["episode_test_acc_mean"],
                   train_loss=float(np.mean([r["train_loss"] for r in results[:n]])))
    return row


def rl_step(gcfg, seed: int, update: int, phi: torch.Tensor, adam: FlatAdam, results: list) -> tuple:
    """One RL update of phi from one batch of episodes; returns (phi, info for the metrics row)."""
    n = gcfg.episodes_per_update
    if gcfg.rl_rule == "pgpe":
        grad = pgpe_gradient(gcfg, seed, update, [r["reward"] for r in results[:n]], phi.numel())
        new = adam.ascend(phi, grad)
        info = {"pg_grad_norm": float(grad.norm())}
    else:
        images = torch.cat([r["images"] for r in results[:n]])
        returns = torch.cat([torch.full((len(r["images"]),), float(r["reward"])) for r in results[:n]])
        new, loss = value_update(gcfg, gcfg.enn_channels, phi, adam, images, returns)
        info = {"critic_mse": loss}
    info["phi_step"] = float((new - phi).norm())
    return new, info


def example_image(gcfg, cfg, data, phi: torch.Tensor, model=None) -> torch.Tensor:
    """A full-resolution ENN input for Grad-CAM: the given target's, else a fresh target's."""
    if model is None:
        model = TargetTraining(gcfg, cfg.model, data, cfg.seed).model
    with torch.no_grad():
        return target_image(model, gcfg.enn_input, data.x_train[:gcfg.probe_size])


def host_instructor(gcfg, data, phi: torch.Tensor) -> Instructor:
    return Instructor(enn_from_vector(gcfg.enn_channels, phi), gcfg.enn_input, gcfg.resize_factor,
                      gcfg.resize_antialias, data.x_train[:gcfg.probe_size])


# --- deploy: one target with a frozen ENN (or a baseline) --------------------------------------------------
def deploy_instructor(gcfg, data) -> Optional[Instructor]:
    """The artefact's ENN with the input pipeline it was trained with (those options come from enn.pt)."""
    if not gcfg.enn_checkpoint:
        return None
    enn, meta = load_enn_artefact(gcfg.enn_checkpoint)
    return Instructor(enn, meta["enn_input"], meta["resize_factor"], meta["resize_antialias"],
                      data.x_train[:int(meta["probe_size"])])


@register_method("grad_instructor")
class GradInstructorTrainer(Trainer):
    """train_enn: one step = one RL update of the ENN; deploy: one step = one epoch of the target."""

    config_class = GradInstructorConfig
    unit = "rl_update"

    @classmethod
    def budget(cls, cfg) -> int:
        g = cfg.grad_instructor
        return g.epochs if g.mode == "deploy" else g.rl_updates

    def setup(self) -> None:
        cfg, g = self.cfg, self.cfg.grad_instructor
        if g.mode == "deploy":
            self.unit = "epoch"          # a deploy run counts target epochs, not RL updates
        self.data = load_dataset(cfg.data, self.data_root, self.device)
        if g.mode == "deploy":
            self.target = TargetTraining(g, cfg.model, self.data, cfg.seed, deploy_instructor(g, self.data))
            return
        self.phi = starting_phi(g)
        self.adam = FlatAdam(self.phi.numel(), g.enn_lr)
        self.workers = self.pool(functools.partial(EpisodeHost, cfg, self.data_root))

    def step(self) -> dict:
        g = self.cfg.grad_instructor
        if g.mode == "deploy":
            stats = self.target.run_epoch()
            ev = self.target.evaluate(batch_size=self.cfg.run.eval_batch_size)
            return {"phase": "epoch", "epoch": self.target.epoch, **stats, **ev,
                    "train_test_gap": ev["train_acc"] - ev["test_acc"]}
        k = self.steps_done
        t0 = time.perf_counter()
        results = self.workers.run("episode", episode_items(g, k), shared=(self.phi,))
        row = update_row(g, k + 1, results, time.perf_counter() - t0)
        self.phi, info = rl_step(g, self.cfg.seed, k, self.phi, self.adam, results)
        return {**row, **info, "retries": self.workers.stats.retries, "timeouts": self.workers.stats.timeouts}

    def state_dict(self) -> dict:
        g = self.cfg.grad_instructor
        if g.mode == "deploy":
            return {"mode": g.mode, "epoch": self.target.epoch, "model": self.target.model.state_dict(),
                    "optimizer": self.target.optimizer.state_dict()}
        return {"mode": g.mode, "update": self.steps_done, "phi": self.phi.clone(), "adam": self.adam.state()}

    def load_state_dict(self, state: dict) -> None:
        g = self.cfg.grad_instructor
        if g.mode == "deploy":
            self.target.model.load_state_dict(state["model"])
            self.target.optimizer.load_state_dict(state["optimizer"])
            self.target.epoch = int(state["epoch"])
            return
        self.phi = state["phi"].clone()
        self.adam = FlatAdam(self.phi.numel(), g.enn_lr, state=state["adam"])

    @property
    def artefact(self):
        return self.run_path / ARTEFACT if self.run_path is not None else None

    def save_artifacts(self, model=None) -> None:
        g = self.cfg.grad_instructor
        if g.mode == "deploy" or self.artefact is None:
            return
        save_enn_artefact(self.artefact, enn_from_vector(g.enn_channels, self.phi), g,
                          example_image(g, self.cfg, self.data, self.phi, model),
                          {"rl_updates_done": self.steps_done})

    def finish(self):
        """train_enn with final_deploy: one target trained with the learned ENN, reported as a last row."""
        g = self.cfg.grad_instructor
        if g.mode == "deploy" or not g.final_deploy:
            return None
        run = TargetTraining(g, self.cfg.model, self.data, self.cfg.seed, host_instructor(g, self.data, self.phi))
        for _ in range(g.epochs):
            stats = run.run_epoch()
        ev = run.evaluate()
        self.save_artifacts(run.model)
        return {"phase": "final_deploy", **stats, **ev, "train_test_gap": ev["train_acc"] - ev["test_acc"],
                "deploy_test_acc": ev["test_acc"]}

    def summary(self) -> dict:
        g = self.cfg.grad_instructor
        if g.mode == "deploy":
            return {"epochs": self.target.epoch, "guided": bool(g.enn_checkpoint)}
        return {"rl_updates": self.steps_done, "enn_artefact": str(self.artefact),
                "num_enn_params": self.phi.numel()}

"""The Grad-Instructor trainer (`algorithm: grad_instructor`), two modes (config/grad_instructor.py):

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
import math
import time
from typing import Optional

import numpy as np
import torch

from ..core.data import load_dataset
from ..core.grad_instructor import Instructor, TargetTraining, target_image
from ..core.grad_instructor_cam import ARTEFACT, load_enn_artefact, save_enn_artefact
from ..core.grad_instructor_rl import (EpisodeHost, FlatAdam, enn_from_vector, enn_vector, episode_items,
                                       initial_enn, pgpe_gradient, value_update)
from ..runtime.pool import make_pool
from .context import RunContext


def train(ctx: RunContext) -> dict:
    if ctx.cfg.grad_instructor.mode == "deploy":
        return deploy(ctx)
    return train_enn(ctx)


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


def train_enn(ctx: RunContext) -> dict:
    cfg, g = ctx.cfg, ctx.cfg.grad_instructor
    phi = starting_phi(g)
    adam = FlatAdam(phi.numel(), g.enn_lr)
    start, best_val = 0, -math.inf
    if ctx.resume_state:
        st = ctx.resume_state
        phi, adam, start = st["phi"].clone(), FlatAdam(phi.numel(), g.enn_lr, state=st["adam"]), int(st["update"])
        best_val = float(st["best_val"])
    data = load_dataset(cfg.data, ctx.data_root)     # driver copy: final deploy and the example image
    artefact = ctx.run.path / ARTEFACT
    pool = make_pool(functools.partial(EpisodeHost, cfg, ctx.data_root), cfg.runtime)
    last = {}
    try:
        pool.wait_ready()
        for k in range(start, g.rl_updates):
            t0 = time.perf_counter()
            results = pool.run("episode", episode_items(g, k), shared=(phi,))
            row = update_row(g, k + 1, results, time.perf_counter() - t0)
            phi, info = rl_step(g, cfg.seed, k, phi, adam, results)
            best_val = max(best_val, row["val_acc"])
            row.update(info, best_val_acc=best_val, retries=pool.stats.retries, timeouts=pool.stats.timeouts)
            last = row
            ctx.report(row)
            if (k + 1) % cfg.run.checkpoint_every == 0 or k + 1 == g.rl_updates:
                save_enn_artefact(artefact, enn_from_vector(g.enn_channels, phi), g,
                                  example_image(g, cfg, data, phi), {"rl_updates_done": k + 1})
                ctx.checkpoint(k + 1, {"algorithm": cfg.algorithm, "mode": g.mode, "update": k + 1,
                                       "phi": phi.clone(), "adam": adam.state(), "best_val": best_val})
    finally:
        pool.shutdown()
    summary = {"rl_updates": g.rl_updates, "enn_artefact": str(artefact), "val_acc": last.get("val_acc"),
               "test_acc": last.get("test_acc"), "reward_mean": last.get("reward_mean"), "num_enn_params": phi.numel()}
    if g.final_deploy:
        run = TargetTraining(g, cfg.model, data, cfg.seed, host_instructor(g, data, phi))
        for _ in range(g.epochs):
            stats = run.run_epoch()
        ev = run.evaluate()
        row = {"phase": "final_deploy", "step": g.rl_updates + 1, **stats, **ev,
               "train_test_gap": ev["train_acc"] - ev["test_acc"]}
        ctx.report(dict(row, final=True))
        save_enn_artefact(artefact, enn_from_vector(g.enn_channels, phi), g,
                          example_image(g, cfg, data, phi, run.model), {"rl_updates_done": g.rl_updates})
        summary.update(test_acc=ev["test_acc"], val_acc=ev["val_acc"], train_acc=ev["train_acc"],
                       deploy_test_acc=ev["test_acc"])
    return summary


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


def deploy(ctx: RunContext) -> dict:
    cfg, g = ctx.cfg, ctx.cfg.grad_instructor
    data = load_dataset(cfg.data, ctx.data_root)
    run = TargetTraining(g, cfg.model, data, cfg.seed, deploy_instructor(g, data))
    best = -math.inf
    if ctx.resume_state:
        st = ctx.resume_state
        run.model.load_state_dict(st["model"])
        run.optimizer.load_state_dict(st["optimizer"])
        run.epoch, best = int(st["epoch"]), float(st["best_test_acc"])
    row = {}
    while run.epoch < g.epochs:
        stats = run.run_epoch()
        ev = run.evaluate(batch_size=cfg.run.eval_batch_size)
        best = max(best, ev["test_acc"])
        row = {"phase": "epoch", "step": run.epoch, "epoch": run.epoch, **stats, **ev, "best_test_acc": best,
               "train_test_gap": ev["train_acc"] - ev["test_acc"]}
        ctx.report(dict(row, final=run.epoch == g.epochs))
        if run.epoch % cfg.run.checkpoint_every == 0 or run.epoch == g.epochs:
            ctx.checkpoint(run.epoch, {"algorithm": cfg.algorithm, "mode": g.mode, "epoch": run.epoch,
                                       "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                                       "best_test_acc": best})
    keys = ("test_acc", "val_acc", "train_acc", "train_loss", "best_test_acc", "train_test_gap")
    return {k: row.get(k) for k in keys} | {"epochs": g.epochs, "guided": bool(g.enn_checkpoint)}

"""The hybrid trainer (`algorithm: hybrid`): backprop epochs on the driver's replica, ES phases on the
worker pool (ALGORITHMS.md §1, docs/hybrid.md).

    for epoch t = 1..T:  one backprop epoch;  if an ES phase is due at t: G generations of ES over the
                         chosen parameter subset, starting from the backprop weights.

With `hybrid.es_enabled: false` this is the backprop-only baseline: the epochs, data order,
augmentation and initial weights depend only on (seed, epoch), so baseline and hybrid runs with the
same seed pair up exactly until the first ES phase.
"""
from __future__ import annotations

import functools
import math
import time

import torch

from ..config.es import ESConfig
from ..core.backprop import make_torch_optimizer, train_epoch
from ..core.data import load_dataset
from ..core.hybrid_es import (HybridPhaseEvaluator, PhasePopulation, PhaseStrategy, SubsetLayout,
                              apply_members, coordinate_scale, es_noise_seed, make_base, select_parameters)
from ..core.models import build_model
from ..core.noise import CounterNoise
from ..core.population import accuracy
from ..core.strategies import build_strategy
from ..runtime.es_loop import ESGeneration
from ..runtime.pool import make_pool
from .context import RunContext


def lr_at(hc, epoch: int) -> float:
    """Learning rate of 0-based epoch `epoch` (a pure function of the epoch: nothing to checkpoint)."""
    if hc.lr_schedule == "cosine":
        return hc.lr * 0.5 * (1 + math.cos(math.pi * epoch / hc.epochs))
    if hc.lr_schedule == "step":
        return hc.lr * hc.lr_gamma ** sum(1 for m in hc.lr_milestones if epoch >= m)
    return hc.lr


def build_optimizer(hc, model: torch.nn.Module) -> torch.optim.Optimizer:
    opt = make_torch_optimizer(hc.optimizer, model.parameters(), hc.lr, hc.momentum, hc.weight_decay)
    if hc.bp_wrapper == "consequential":
        from ..core.consequential import ConsequentialOptimizer
        opt = ConsequentialOptimizer(model, opt, strength=hc.consequential_strength)
    return opt


def es_phase_due(hc, epoch: int) -> bool:
    """Whether an ES phase follows 1-based epoch `epoch` (every K epochs, or only after the last)."""
    if not hc.es_enabled or epoch < hc.es_start_epoch:
        return False
    return epoch == hc.epochs if hc.es_every == 0 else epoch % hc.es_every == 0


def es_strategy(hc):
    """The hybrid's ES settings expressed as an `ESConfig`, so the shared strategies are reused as is."""
    es_cfg = ESConfig(strategy=hc.es_kind, popsize=hc.es_popsize, generations=hc.es_generations,
                      sigma=hc.sigma, lr=hc.es_lr, optimizer="adam", weight_decay=0.0, antithetic=True,
                      success_rule=hc.success_rule, success_factor=hc.success_factor)
    return build_strategy(es_cfg, 0, None)


class ESPhase:
    """Runs ES phases on a pool: one phase = G generations in scaled coordinates around the base."""

    def __init__(self, cfg, pool, model: torch.nn.Module):
        self.cfg, self.hc, self.pool = cfg, cfg.hybrid, pool
        self.layout = SubsetLayout(model, select_parameters(model, self.hc.subset, self.hc.last_k))
        self.noise = CounterNoise(es_noise_seed(cfg.seed), self.layout.size)
        self.strategy = es_strategy(self.hc)

    def center_fitness(self, u: torch.Tensor, phase: int, base: dict, generation: int) -> float:
        """Fitness of one point u (no noise: a one-member population whose member 0 is its center)."""
        pop = PhasePopulation(center=u.numpy(), scale=0.0, size=1, generation=generation, antithetic=False,
                              parent_first=True, phase=phase, base=base)
        return float(self.pool.run("evaluate", [(0, 1)], shared=(pop,))[0]["fitness"][0])

    def run(self, model: torch.nn.Module, phase: int, es_state: dict) -> dict:
        """Mutate `model`'s subset in place; returns metrics. `es_state` (generation, sigma) is updated."""
        t0 = time.perf_counter()
        scale = coordinate_scale(model, self.layout, self.hc.sigma_mode == "relative")
        base = make_base(model, scale)
        zero = torch.zeros(self.layout.size)
        if self.hc.es_kind == "elitist":
            # The success rule's adaptation is kept as a factor, so a new hybrid.sigma (PBT) still applies.
            state = self.strategy.init(zero, sigma=self.hc.sigma * es_state["sigma_factor"])
        else:
            state = self.strategy.init(zero)
        state.generation = es_state["generation"]
        before = self.center_fitness(zero, phase, base, state.generation)
        loop = ESGeneration(self.pool, PhaseStrategy(self.strategy, phase, base), self.noise,
                            self.cfg.runtime.chunk_size)
        accepted, eval_s = 0, 0.0
        for _ in range(self.hc.es_generations):
            state, info, _ = loop.step(state)
            accepted += int(info.get("accepted", 0))
            eval_s += info["eval_s"]
        after = self.center_fitness(state.center, phase, base, state.generation)
        theta = apply_members(self.layout.flatten(model), scale, state.center)
        self.layout.load_into(model, theta)
        es_state.update(generation=state.generation, phases=es_state["phases"] + 1,
                        accepted=es_state["accepted"] + accepted)
        if self.hc.es_kind == "elitist":
            es_state["sigma_factor"] = float(state.sigma) / self.hc.sigma
        return {"es_fitness_before": before, "es_fitness_after": after, "es_accepted": accepted,
                "es_eval_s": eval_s, "es_s": time.perf_counter() - t0, "es_dims": self.layout.size,
                "es_sigma": self.hc.sigma * es_state["sigma_factor"]}


def evaluate(model: torch.nn.Module, data, batch_size: int, prefix: str = "") -> dict:
    """Validation and test accuracy/loss of the model in eval mode (BN running statistics)."""
    model.eval()
    out = {}
    if len(data.x_val):
        out[f"{prefix}val_acc"], out[f"{prefix}val_loss"] = accuracy(model, data.x_val, data.y_val, batch_size)
    out[f"{prefix}test_acc"], out[f"{prefix}test_loss"] = accuracy(model, data.x_test, data.y_test, batch_size)
    return out


def train(ctx: RunContext) -> dict:
    cfg, hc = ctx.cfg, ctx.cfg.hybrid
    data = load_dataset(cfg.data, ctx.data_root)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    optimizer = build_optimizer(hc, model)
    # Nothing here draws from torch's global RNG, but its state is checkpointed (for wrapped optimizers
    # or models that might): seed it so that it is a function of the run seed, not of the process.
    torch.manual_seed(cfg.seed)
    es_state = {"generation": 0, "sigma_factor": 1.0, "phases": 0, "accepted": 0}
    start, best = 0, {"best_val_acc": -1.0, "best_test_acc": -1.0}
    if ctx.resume_state:
        s = ctx.resume_state
        model.load_state_dict(s["model"])
        optimizer.load_state_dict(s["optimizer"])
        es_state.update(s["es"])
        best.update(s["best"])
        torch.set_rng_state(s["rng"])
        start = int(s["epoch"])

    uses_es = hc.es_enabled and any(es_phase_due(hc, e) for e in range(start + 1, hc.epochs + 1))
    pool = make_pool(functools.partial(HybridPhaseEvaluator, cfg, ctx.data_root), cfg.runtime) if uses_es else None
    try:
        if pool is not None:
            pool.wait_ready()
        phase_runner = ESPhase(cfg, pool, model) if pool is not None else None
        row: dict = {}
        for epoch in range(start + 1, hc.epochs + 1):
            t0 = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(hc, epoch - 1)
            stats = train_epoch(model, optimizer, data.x_train, data.y_train, hc.batch_size, cfg.seed, epoch - 1,
                                augment=hc.augment, max_steps=hc.max_steps_per_epoch)
            row = {"phase": "epoch", "step": epoch, "epoch": epoch, "lr": lr_at(hc, epoch - 1),
                   "bp_s": time.perf_counter() - t0, **stats, "es_ran": 0}
            # Accuracy costs a pass over val+test: only every run.eval_every epochs and at the end.
            measure = epoch % cfg.run.eval_every == 0 or epoch == hc.epochs
            if es_phase_due(hc, epoch):
                if measure:
                    row.update(evaluate(model, data, cfg.run.eval_batch_size, prefix="pre_es_"))
                row.update(phase_runner.run(model, es_state["phases"], es_state), es_ran=1)
            if measure:
                row.update(evaluate(model, data, cfg.run.eval_batch_size))
                if row.get("val_acc", -1.0) > best["best_val_acc"]:
                    best.update(best_val_acc=row["val_acc"], test_acc_at_best_val=row["test_acc"])
                best["best_test_acc"] = max(best["best_test_acc"], row["test_acc"])
            row.update(best, es_phases=es_state["phases"], final=epoch == hc.epochs)
            ctx.report(row)
            if epoch % cfg.run.checkpoint_every == 0 or epoch == hc.epochs:
                ctx.checkpoint(epoch, {"algorithm": "hybrid", "epoch": epoch, "model": model.state_dict(),
                                       "optimizer": optimizer.state_dict(), "es": dict(es_state),
                                       "best": dict(best), "rng": torch.get_rng_state()})
    finally:
        if pool is not None:
            pool.shutdown()
    return {"epochs": hc.epochs, "test_acc": row.get("test_acc"), "val_acc": row.get("val_acc"),
            "train_loss": row.get("train_loss"), "es_phases": es_state["phases"],
            "es_accepted": es_state["accepted"], "num_params": sum(p.numel() for p in model.parameters()),
            **best}

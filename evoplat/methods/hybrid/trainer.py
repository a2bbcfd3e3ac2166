"""The hybrid trainer (`algorithm: hybrid`): backprop epochs on the driver's replica (on `run.device`),
ES phases on the worker pool (docs/hybrid.md, Specification).

    for epoch t = 1..T:  one backprop epoch;  if an ES phase is due at t: G generations of ES over the
                         chosen parameter subset, starting from the backprop weights.

With `hybrid.es_enabled: false` this is the backprop-only baseline: the epochs, data order,
augmentation and initial weights depend only on (seed, epoch), so baseline and hybrid runs with the
same seed pair up exactly until the first ES phase. With `hybrid.phase_kind: backprop` each ES phase is
replaced by the control arm's gradient phase (control_phase.py), which pairs up the same way.
"""
from __future__ import annotations

import functools
import math
import time

import torch

from evoplat.platform.backprop import evaluate_splits, make_torch_optimizer, train_epoch
from evoplat.methods.hybrid.control_phase import BackpropPhase
from evoplat.methods.hybrid.es_phase import (HybridPhaseEvaluator, PhasePopulation, PhaseStrategy, SubsetLayout,
                              apply_members, coordinate_scale, es_noise_seed, make_base, select_parameters)
from evoplat.platform.population.noise import CounterNoise
from evoplat.platform.strategies import STRATEGIES
from evoplat.platform.population.generation import ESGeneration
from evoplat.methods.hybrid.config import HybridConfig
from evoplat.platform.run.trainer import Trainer, register_method


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
        from evoplat.methods.consequential.optimizer import ConsequentialOptimizer
        opt = ConsequentialOptimizer(model, opt, strength=hc.consequential_strength)
    return opt


def es_phase_due(hc, epoch: int) -> bool:
    """Whether an ES phase follows 1-based epoch `epoch` (every K epochs, or only after the last)."""
    if not hc.es_enabled or epoch < hc.es_start_epoch:
        return False
    return epoch == hc.epochs if hc.es_every == 0 else epoch % hc.es_every == 0


def es_strategy(hc):
    """The registered strategy `hybrid.es_kind` with the hybrid's own ES options."""
    return STRATEGIES.get(hc.es_kind)(popsize=hc.es_popsize, sigma=hc.sigma, lr=hc.es_lr, optimizer="adam",
                                      weight_decay=0.0, antithetic=True, success_rule=hc.success_rule,
                                      success_factor=hc.success_factor)


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
        # the search runs on the CPU (noise, strategy); only the result goes back to the model's device
        theta = apply_members(self.layout.flatten(model).cpu(), scale, state.center)
        self.layout.load_into(model, theta)
        es_state.update(generation=state.generation, phases=es_state["phases"] + 1,
                        accepted=es_state["accepted"] + accepted)
        if self.hc.es_kind == "elitist":
            es_state["sigma_factor"] = float(state.sigma) / self.hc.sigma
        return {"es_fitness_before": before, "es_fitness_after": after, "es_accepted": accepted,
                "es_eval_s": eval_s, "es_s": time.perf_counter() - t0, "es_dims": self.layout.size,
                "es_sigma": self.hc.sigma * es_state["sigma_factor"]}


DEFAULT_SPACE = {
    "hybrid.es_every": {"choice": [1, 2]},
    "hybrid.es_generations": {"choice": [5, 10]},
    "hybrid.es_popsize": {"choice": [8, 16]},
    "hybrid.sigma": {"loguniform": [0.003, 0.1]},
    "hybrid.subset": {"choice": ["classifier", "last_k"]},
    "hybrid.es_kind": {"choice": ["elitist", "openai_es"]},
}


@register_method("hybrid")
class HybridTrainer(Trainer):
    config_class = HybridConfig
    unit = "epoch"
    default_search_space = DEFAULT_SPACE


    def setup(self) -> None:
        cfg, hc = self.cfg, self.cfg.hybrid
        self.data, self.model = self.data_and_model(self.device)
        self.optimizer = build_optimizer(hc, self.model)
        # Nothing here draws from torch's global RNG, but its state is checkpointed (for wrapped optimizers
        # or models that might): seed it so that it is a function of the run seed, not of the process.
        torch.manual_seed(cfg.seed)
        self.es_state = {"generation": 0, "sigma_factor": 1.0, "phases": 0, "accepted": 0}
        self.phase_runner = None
        self.epoch = 0

    def _phase_runner(self):
        # The pool starts with the first ES phase: a baseline run (or one resumed after its last phase)
        # never starts workers, nor does the control arm, whose few gradient steps run on the driver.
        if self.phase_runner is None and self.cfg.hybrid.phase_kind == "backprop":
            self.phase_runner = BackpropPhase(self.cfg, self.data, self.model)
        elif self.phase_runner is None:
            pool = self.pool(functools.partial(HybridPhaseEvaluator, self.cfg, self.data_root))
            self.phase_runner = ESPhase(self.cfg, pool, self.model)
        return self.phase_runner

    def step(self) -> dict:
        cfg, hc = self.cfg, self.cfg.hybrid
        epoch = self.epoch + 1
        t0 = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(hc, epoch - 1)
        stats = train_epoch(self.model, self.optimizer, self.data.x_train, self.data.y_train, hc.batch_size,
                            cfg.seed, epoch - 1, augment=hc.augment, max_steps=hc.max_steps_per_epoch)
        self.epoch = epoch
        row = {"epoch": epoch, "lr": lr_at(hc, epoch - 1), "bp_s": time.perf_counter() - t0, **stats, "es_ran": 0}
        if es_phase_due(hc, epoch):
            if self.evaluating:
                row.update(evaluate_splits(self.model, self.data, cfg.run.eval_batch_size, prefix="pre_es_"))
            row.update(self._phase_runner().run(self.model, self.es_state["phases"], self.es_state), es_ran=1,
                       phase_kind=hc.phase_kind)
        row["es_phases"] = self.es_state["phases"]
        return row

    def evaluate(self) -> dict:
        return evaluate_splits(self.model, self.data, self.cfg.run.eval_batch_size)

    def network(self):
        return self.model, self.data.input_shape, self.data.num_classes

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "es": dict(self.es_state), "rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.es_state.update(state["es"])
        torch.set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])

    def summary(self) -> dict:
        return {"epochs": self.epoch, "phase_kind": self.cfg.hybrid.phase_kind, "es_phases": self.es_state["phases"],
                "es_accepted": self.es_state["accepted"], "num_params": sum(p.numel() for p in self.model.parameters())}

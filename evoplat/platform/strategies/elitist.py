"""Elitist (1+lambda)-ES: the parent is re-evaluated as member 0 on the same data as its children;
the best child replaces it only if strictly better. Optional 1/5th success rule on sigma.

`scale` may be a per-parameter vector (e.g. sigma relative to each layer's std, zero outside the mutated
subset): pass it to `init` as `sigma`.
"""
from __future__ import annotations

import numpy as np
import torch

from evoplat.platform.population.noise import CounterNoise, Population
from evoplat.platform.population.shaping import sanitize
from evoplat.platform.strategies.base import StrategyState, thread_independent


class ElitistES:
    def __init__(self, num_children: int, sigma: float, success_rule: bool = False, factor: float = 1.22):
        self.num_children, self.sigma0 = num_children, sigma
        self.success_rule, self.factor = success_rule, factor

    def init(self, theta0: torch.Tensor, sigma=None) -> StrategyState:
        s = self.sigma0 if sigma is None else sigma
        return StrategyState(center=theta0.detach().float().clone(), sigma=s, extra={"successes": 0})

    def ask(self, state: StrategyState) -> Population:
        scale = state.sigma.numpy() if isinstance(state.sigma, torch.Tensor) else state.sigma
        return Population(center=state.center.numpy(), scale=scale, size=self.num_children + 1,
                          generation=state.generation, antithetic=False, parent_first=True)

    @thread_independent
    def tell(self, state: StrategyState, fitness, noise: CounterNoise, pop: Population):
        f, _ = sanitize(fitness)
        best = int(np.argmax(f))  # first maximum: the parent (index 0) wins ties
        success = best != 0 and f[best] > f[0]
        center = state.center
        if success:
            center = noise.members(pop, best, best + 1)[0].clone()
        sigma = state.sigma
        if self.success_rule:
            sigma = sigma * (self.factor if success else self.factor ** -0.25)
        extra = dict(state.extra, successes=state.extra.get("successes", 0) + int(success))
        info = {"accepted": float(success), "parent_fitness": float(f[0]), "best_fitness": float(f[best])}
        return StrategyState(center, sigma, state.generation + 1, {}, extra), info

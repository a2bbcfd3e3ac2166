"""Separable natural evolution strategies (Schaul et al. 2011): a center and a per-parameter sigma."""
from __future__ import annotations

import math

import numpy as np
import torch

from evoplat.platform.population.noise import CounterNoise, Population
from evoplat.platform.population.shaping import nes_utilities
from evoplat.platform.strategies.base import StrategyState, thread_independent


class SNES:
    def __init__(self, popsize: int, sigma: float, lr_center: float = 1.0, lr_sigma: float | None = None,
                 antithetic: bool = True, shaping=nes_utilities):
        self.popsize, self.sigma0 = popsize, sigma
        self.lr_center, self.lr_sigma = lr_center, lr_sigma
        self.antithetic, self.shaping = antithetic, shaping

    def init(self, theta0: torch.Tensor) -> StrategyState:
        center = theta0.detach().float().clone()
        return StrategyState(center=center, sigma=torch.full_like(center, self.sigma0))

    def ask(self, state: StrategyState) -> Population:
        return Population(center=state.center.numpy(), scale=state.sigma.numpy(), size=self.popsize,
                          generation=state.generation, antithetic=self.antithetic)

    @thread_independent
    def tell(self, state: StrategyState, fitness, noise: CounterNoise, pop: Population):
        u = self.shaping(fitness)
        dim = state.center.numel()
        lr_sigma = self.lr_sigma or (3 + math.log(dim)) / (5 * math.sqrt(dim))
        z1, z2 = noise.combine_both(pop, u)
        grad_mu = torch.from_numpy(z1)
        grad_sigma = torch.from_numpy(z2) - float(np.sum(u))
        center = state.center + self.lr_center * state.sigma * grad_mu
        sigma = state.sigma * torch.exp(0.5 * lr_sigma * grad_sigma)
        info = {"sigma_mean": float(sigma.mean())}
        return StrategyState(center, sigma, state.generation + 1, {}, state.extra), info

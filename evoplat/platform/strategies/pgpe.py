"""PGPE (Sehnke et al. 2010, symmetric sampling), as EvoTorch runs it: a center and a per-parameter
sigma, both following the gradient of the expected fitness; the center through an optimizer (ClipUp by
default, Toklu et al. 2020), sigma by plain gradient steps whose relative size is capped.

With members theta +/- sigma*z_k in pairs and centered-rank utilities u:
    grad_center = sum_k (u_k+ - u_k-)/2 * sigma*z_k / K
    grad_sigma  = sum_k ((u_k+ + u_k-)/2) * ((sigma*z_k)^2 - sigma^2)/sigma / K
over the K pairs; per member, that is sigma * sum_i (u_i/2) * (+/-z_i) / K and
sigma * sum_i (u_i/2) * (z_i^2 - 1) / K: both sums from one pass over the keyed noise (`combine_both`).
"""
from __future__ import annotations

import numpy as np
import torch

from evoplat.platform.population.noise import CounterNoise, Population
from evoplat.platform.population.shaping import centered_ranks
from evoplat.platform.strategies.base import StrategyState, thread_independent
from evoplat.platform.strategies.optim import apply_gradient


class PGPE:
    def __init__(self, popsize: int, sigma: float, make_optimizer, sigma_lr: float = 0.1,
                 sigma_max_change: float = 0.2, shaping=centered_ranks):
        if popsize % 2:
            raise ValueError(f"PGPE samples in mirrored pairs: popsize must be even (got {popsize})")
        self.popsize, self.sigma0, self.make_optimizer = popsize, sigma, make_optimizer
        self.sigma_lr, self.sigma_max_change, self.shaping = sigma_lr, sigma_max_change, shaping

    def init(self, theta0: torch.Tensor) -> StrategyState:
        center = theta0.detach().float().clone()
        return StrategyState(center=center, sigma=torch.full_like(center, self.sigma0))

    def ask(self, state: StrategyState) -> Population:
        return Population(center=state.center.numpy(), scale=state.sigma.numpy(), size=self.popsize,
                          generation=state.generation, antithetic=True)

    updates_in_place = True

    @thread_independent
    def tell(self, state: StrategyState, fitness, noise: CounterNoise, pop: Population, in_place: bool = False):
        """The next state; `in_place` as for OpenAIES.tell (the center and an Adam optimizer's moments)."""
        half = self.shaping(fitness) / 2.0
        pairs = self.popsize // 2
        sigma = state.sigma
        z1, z2 = (torch.from_numpy(s) for s in noise.combine_both(pop, half))
        grad_center = z1.mul_(sigma).div_(pairs)
        z2.sub_(float(np.sum(half)))
        grad_sigma = z2.mul_(sigma).div_(pairs)
        # ascent on the fitness = descent along -grad for the optimizer, which minimises
        center, opt_state = apply_gradient(self.make_optimizer, state.center, grad_center.neg_(), state.opt_state,
                                           in_place)
        new_sigma = sigma + self.sigma_lr * grad_sigma
        if self.sigma_max_change:
            bound = sigma.abs() * self.sigma_max_change
            new_sigma = torch.clamp(new_sigma, sigma - bound, sigma + bound)
        info = {"sigma_mean": float(new_sigma.mean()), "grad_norm": float(grad_center.norm())}
        return StrategyState(center, new_sigma, state.generation + 1, opt_state, state.extra), info

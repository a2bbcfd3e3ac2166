"""OpenAI-ES (Salimans et al. 2017): antithetic sampling, centered ranks, weight decay, Adam or SGD."""
from __future__ import annotations

import torch

from evoplat.platform.population.noise import CounterNoise, Population
from evoplat.platform.population.shaping import centered_ranks
from evoplat.platform.strategies.base import StrategyState, thread_independent
from evoplat.platform.strategies.optim import apply_gradient


class OpenAIES:
    def __init__(self, popsize: int, sigma: float, make_optimizer, weight_decay: float = 0.0,
                 antithetic: bool = True, shaping=centered_ranks):
        self.popsize, self.sigma = popsize, sigma
        self.make_optimizer, self.weight_decay = make_optimizer, weight_decay
        self.antithetic, self.shaping = antithetic, shaping

    def init(self, theta0: torch.Tensor) -> StrategyState:
        return StrategyState(center=theta0.detach().float().clone(), sigma=float(self.sigma))

    def ask(self, state: StrategyState) -> Population:
        return Population(center=state.center.numpy(), scale=state.sigma, size=self.popsize,
                          generation=state.generation, antithetic=self.antithetic)

    @thread_independent
    def tell(self, state: StrategyState, fitness, noise: CounterNoise, pop: Population):
        weights = self.shaping(fitness)
        # Gradient ascent on fitness = descent on -grad; the optimizer minimises.
        # In place on the fresh sum: each 400 KB temporary of a P-ES update costs as much as its arithmetic.
        grad = torch.from_numpy(noise.combine(pop, weights)).div_(-len(weights) * state.sigma)
        if self.weight_decay:
            grad.add_(state.center, alpha=self.weight_decay)
        info = {"grad_norm": float(grad.norm())}      # now, while the fresh gradient is still in cache
        center, opt_state = apply_gradient(self.make_optimizer, state.center, grad, state.opt_state)
        return StrategyState(center, state.sigma, state.generation + 1, opt_state, state.extra), info

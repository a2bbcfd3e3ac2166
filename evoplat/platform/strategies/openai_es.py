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

    updates_in_place = True

    @thread_independent
    def tell(self, state: StrategyState, fitness, noise: CounterNoise, pop: Population, in_place: bool = False):
        """The next state; `in_place`: the caller keeps nothing of `state`, whose tensors may then become
        the new state's (no copies of the center and the optimizer's moments)."""
        weights = self.shaping(fitness)
        # Gradient ascent on fitness = descent on -grad; the optimizer minimises. The scale rides on the
        # per-member weights, not on a pass over the sum: each 400 KB pass of a P-ES update costs as much
        # as its arithmetic.
        grad = torch.from_numpy(noise.combine(pop, weights * (-1.0 / (len(weights) * state.sigma))))
        if self.weight_decay:
            grad.add_(state.center, alpha=self.weight_decay)
        # now, while the fresh gradient is still in cache; linalg's norm: the same kernel as Tensor.norm
        # without its dispatch in Python
        info = {"grad_norm": float(torch.linalg.vector_norm(grad))}
        center, opt_state = apply_gradient(self.make_optimizer, state.center, grad, state.opt_state, in_place)
        return StrategyState(center, state.sigma, state.generation + 1, opt_state, state.extra), info

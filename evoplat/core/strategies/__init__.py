"""Ask/tell strategies. Pure torch/numpy: no Ray, state a plain serializable dataclass.

`ask(state)` returns a `Population` (a center, a scale, keyed noise); `tell(state, fitness, noise)`
returns the next state and a dict of scalars for the metrics row.
"""
from .base import StrategyState
from .elitist import ElitistES
from .openai_es import OpenAIES
from .snes import SNES


def build_strategy(es_cfg, dim: int, theta0):
    """The strategy named by an `ESConfig`, with its optimizer and fitness shaping passed in."""
    from ..shaping import centered_ranks, nes_utilities
    from .optim import make_optimizer
    if es_cfg.strategy == "openai_es":
        opt = make_optimizer(es_cfg.optimizer, es_cfg.lr, es_cfg.momentum)
        return OpenAIES(es_cfg.popsize, es_cfg.sigma, opt, es_cfg.weight_decay, es_cfg.antithetic,
                        shaping=centered_ranks)
    if es_cfg.strategy == "snes":
        return SNES(es_cfg.popsize, es_cfg.sigma, es_cfg.lr, es_cfg.sigma_lr or None, es_cfg.antithetic,
                    shaping=nes_utilities)
    return ElitistES(es_cfg.popsize, es_cfg.sigma, es_cfg.success_rule, es_cfg.success_factor)


__all__ = ["StrategyState", "OpenAIES", "SNES", "ElitistES", "build_strategy"]

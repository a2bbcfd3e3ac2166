"""Ask/tell strategies. Pure torch/numpy: no Ray, state a plain serializable dataclass.

`ask(state)` returns a `Population` (a center, a scale, keyed noise); `tell(state, fitness, noise, pop)`
returns the next state and a dict of scalars for the metrics row. Each strategy registers a builder
`build(popsize, sigma, **options) -> strategy` in STRATEGIES under the name `es.strategy` selects;
options a strategy does not use are ignored, so one set of options serves every strategy.
"""
from evoplat.platform.population.shaping import centered_ranks, nes_utilities
from evoplat.platform.registry import STRATEGIES
from evoplat.platform.strategies.base import StrategyState
from evoplat.platform.strategies.elitist import ElitistES
from evoplat.platform.strategies.openai_es import OpenAIES
from evoplat.platform.strategies.optim import make_optimizer
from evoplat.platform.strategies.pgpe import PGPE
from evoplat.platform.strategies.snes import SNES


@STRATEGIES.register("openai_es")
def _openai_es(popsize, sigma, lr=0.01, optimizer="adam", momentum=0.9, weight_decay=0.0, antithetic=True,
               max_speed=0.0, **_):
    return OpenAIES(popsize, sigma, make_optimizer(optimizer, lr, momentum, max_speed), weight_decay, antithetic,
                    shaping=centered_ranks)


@STRATEGIES.register("pgpe")
def _pgpe(popsize, sigma, lr=0.01, optimizer="clipup", momentum=0.9, max_speed=0.0, sigma_lr=0.0,
          sigma_max_change=0.2, **_):
    return PGPE(popsize, sigma, make_optimizer(optimizer, lr, momentum, max_speed), sigma_lr or 0.1,
                sigma_max_change, shaping=centered_ranks)


@STRATEGIES.register("snes")
def _snes(popsize, sigma, lr=0.01, sigma_lr=0.0, antithetic=True, **_):
    return SNES(popsize, sigma, lr, sigma_lr or None, antithetic, shaping=nes_utilities)


@STRATEGIES.register("elitist")
def _elitist(popsize, sigma, success_rule=False, success_factor=1.22, **_):
    return ElitistES(popsize, sigma, success_rule, success_factor)


STRATEGY_OPTIONS = ("popsize", "sigma", "lr", "optimizer", "momentum", "weight_decay", "antithetic",
                    "sigma_lr", "success_rule", "success_factor", "max_speed", "sigma_max_change")


def build_strategy(es_cfg):
    """The strategy named by `es_cfg.strategy`, with its optimizer and fitness shaping passed in."""
    # an option left unset (None) takes the strategy's own default
    options = {k: getattr(es_cfg, k) for k in STRATEGY_OPTIONS if getattr(es_cfg, k, None) is not None}
    return STRATEGIES.get(es_cfg.strategy)(**options)


__all__ = ["StrategyState", "OpenAIES", "PGPE", "SNES", "ElitistES", "build_strategy", "STRATEGIES"]

"""The state every strategy keeps: plain tensors and numbers, loadable with torch.load(weights_only=True)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import functools

import torch

from evoplat.platform.population.threads import fixed_threads


@dataclass
class StrategyState:
    center: torch.Tensor                 # float32 [P]
    sigma: Any                           # float, or float32 [P] tensor
    generation: int = 0
    opt_state: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StrategyState":
        return cls(**d)


def thread_independent(tell):
    """Run a strategy's update on one torch thread: its result is then bitwise the same in an in-process
    run, a Ray worker or a submitted job's driver, whatever thread count that process has (reductions
    and element-wise kernels split their work, and so their rounding, by thread count)."""
    @functools.wraps(tell)
    def wrapper(*args, **kwargs):
        with fixed_threads(1):
            return tell(*args, **kwargs)
    return wrapper

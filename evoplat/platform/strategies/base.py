"""The state every strategy keeps: plain tensors and numbers, loadable with torch.load(weights_only=True)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch


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
